package relay

import "shd-tcp-tools/internal/sock"

// lowWater keeps a socket's receive low-water mark (SO_RCVLOWAT) above what is queued
// while a bulk copy streams from it, and down (1, the default) whenever the copy is about
// to wait for it.
//
// A copy that reads a socket more slowly than its peer sends never waits on it, but the
// runtime's poller still hears of every segment that arrives (the descriptor is in its
// epoll set, edge-triggered): each one woke a thread parked in epoll_wait that then found
// nothing to run and parked again, a context switch per segment in the reading process
// and a wake-up paid by the sending one. With the mark a stretch above what the socket
// holds after each read, the kernel tells the poller nothing until that much more has
// come (or the buffer is nearly full, or the stream ended). A read that does not wait
// still returns whatever is there, so the mark never holds the copy up; and the mark is
// down before the copy waits, and when the copy ends (an idle link is watched for
// readability, and its next session may begin with a few bytes), so a wait never misses
// a byte.
type lowWater struct{ mark int }

// streamMark is the read that shows a source running ahead: half a step.
const streamMark = bulkSize / 2

// markAhead is how far above the bytes queued after a read the mark is set.
const markAhead = 4 * bulkSize

// streaming sets the mark on fd after a read that found half a step or more: the source
// runs ahead of the copy. A mark still half a stretch or more above what is queued is
// left as it is: setting it is one more system call per read.
func (l *lowWater) streaming(fd int) {
	if l == nil {
		return
	}
	q := sock.Queued(fd)
	if q < 0 || l.mark >= q+markAhead/2 {
		return
	}
	if sock.SetRcvLowat(fd, q+markAhead) == nil {
		l.mark = q + markAhead
	}
}

// up reports whether the mark is up: the source has been running ahead of the copy.
func (l *lowWater) up() bool { return l != nil && l.mark > 1 }

// waiting lowers the mark on fd before the copy waits for it, or when the copy ends.
func (l *lowWater) waiting(fd int) {
	if l != nil && l.mark > 1 {
		_ = sock.SetRcvLowat(fd, 1)
		l.mark = 0
	}
}
