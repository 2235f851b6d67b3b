package eventloop

import "time"

// Reschedule is how long a loop (or any goroutine that never waits, such as a bulk copy
// whose source runs ahead) runs before it goes through the Go scheduler
// (runtime.Gosched). A goroutine that has not been scheduled for 10 ms is preempted by the
// runtime's sysmon thread, and a loop, which never blocks in Go, would be every 10 ms: a
// signal or a stack check, and the P taken away from it when it was waiting in epoll_wait,
// after which sysmon itself wakes every 20 µs for a while. A Gosched of a goroutine locked
// to no thread needs no hand-off of its P, so loops are not locked to their threads; it
// still wakes an idle thread to look for work (4% of tcp-pf's CPU time at every 5 ms), so
// it comes as late as it can: sysmon preempts after 10 ms seen on the same schedule.
const Reschedule = 9 * time.Millisecond
