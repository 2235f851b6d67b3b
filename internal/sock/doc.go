// Package sock is the one place that makes system calls on raw TCP sockets for the event
// loops and the relays: accepting, connecting, socket options (keepalive, linger, no
// delay), the kernel's counters (SIOCOUTQ, TCP_INFO), shutdown, and recv, send and splice
// on non-blocking descriptors.
//
// Calls that cannot block (on a non-blocking descriptor, or a query of the kernel's
// state) are made with unix.RawSyscall, which skips the Go runtime's entersyscall and
// exitsyscall: about 150 ns a call against 210 to 300 ns, and the callers make ten or more
// per short connection. That is safe only because the call returns at once: the runtime
// cannot hand the thread's P to another goroutine while it runs. Never pass a blocking
// descriptor to this package.
//
// The package is built on Linux only.
package sock
