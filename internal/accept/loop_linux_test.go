package accept_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/accept"
	"shd-tcp-tools/internal/eventloop"
	"shd-tcp-tools/internal/testkit"
)

// loopAccept is an OnLoop on a running loop of its own, over a duplicate of a listener's
// socket, and what it accepted, checked by the test.
type loopAccept struct {
	lp    *eventloop.Loop
	ln    *net.TCPListener
	lfd   int
	a     *accept.OnLoop
	back  accept.Backoff
	got   chan acceptedConn
	mu    sync.Mutex
	lines []string
	fatal chan error
}

type acceptedConn struct {
	fd   int
	peer netip.AddrPort
}

func startLoopAccept(t *testing.T, addr string) *loopAccept {
	t.Helper()
	lp, err := eventloop.New()
	if err != nil {
		t.Fatal(err)
	}
	la := &loopAccept{lp: lp, ln: testkit.Listen(t, addr), got: make(chan acceptedConn, 16), fatal: make(chan error, 1)}
	rc, err := la.ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var derr error
	if err := rc.Control(func(s uintptr) { la.lfd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		t.Fatal(err, derr)
	}
	la.a = accept.NewOnLoop(lp, la.lfd, accept.LoopConfig{
		Back:      &la.back,
		Exclusive: true,
		Accepted: func(fd int, peer netip.AddrPort) {
			if line := la.back.OK(); line != "" {
				la.log(line)
			}
			la.got <- acceptedConn{fd, peer}
		},
		Log:   la.log,
		Fatal: func(err error) { la.fatal <- err },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = lp.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		unix.Close(la.lfd)
		for {
			select {
			case c := <-la.got:
				unix.Close(c.fd)
			default:
				return
			}
		}
	})
	la.on(func() {
		if err := la.a.Start(); err != nil {
			t.Error(err)
		}
	})
	return la
}

func (la *loopAccept) log(line string) {
	la.mu.Lock()
	defer la.mu.Unlock()
	la.lines = append(la.lines, line)
}

func (la *loopAccept) logged(prefix string) bool {
	la.mu.Lock()
	defer la.mu.Unlock()
	for _, l := range la.lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// on runs f on the loop and waits for it.
func (la *loopAccept) on(f func()) {
	done := make(chan struct{})
	la.lp.Post(func() { f(); close(done) })
	<-done
}

// next waits for the next connection accepted and checks that it is c's, by its peer
// address and a round trip of bytes through it.
func (la *loopAccept) next(t *testing.T, c *net.TCPConn, seed uint64) {
	t.Helper()
	var got acceptedConn
	select {
	case got = <-la.got:
	case err := <-la.fatal:
		t.Fatalf("accepting ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("nothing accepted within 10s")
	}
	defer unix.Close(got.fd)
	if want := c.LocalAddr().(*net.TCPAddr).AddrPort(); got.peer != netip.AddrPortFrom(want.Addr().Unmap(), want.Port()) {
		t.Fatalf("accepted a connection from %v, want %v", got.peer, want)
	}
	f := os.NewFile(uintptr(got.fd), "accepted")
	nc, err := net.FileConn(f) // a duplicate
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const n = 64 << 10
	sent := make(chan testkit.Digest, 1)
	go func() {
		d, _ := testkit.Send(c, seed, n)
		sent <- d
	}()
	got2, err := testkit.Receive(io.LimitReader(nc, n))
	if want := <-sent; err != nil || got2 != want || got2.N != n {
		t.Fatalf("the accepted socket read %v (%v), the client sent %v", got2, err, want)
	}
}

// waitQueued waits until a connection waits in the listening socket's accept queue.
func (la *loopAccept) waitQueued(t *testing.T) {
	t.Helper()
	testkit.WaitUntil(t, 5*time.Second, "a connection in the accept queue", func() bool {
		fds := []unix.PollFd{{Fd: int32(la.lfd), Events: unix.POLLIN}}
		n, _ := unix.Poll(fds, 10)
		return n == 1
	})
}

// notAccepted checks that the loop, going round a few times, takes nothing.
func (la *loopAccept) notAccepted(t *testing.T, why string) {
	t.Helper()
	for range 3 {
		la.on(func() {})
	}
	select {
	case c := <-la.got:
		unix.Close(c.fd)
		t.Fatalf("a connection from %v accepted %s", c.peer, why)
	default:
	}
}

// An OnLoop accepts each connection as a raw socket with its peer's address, on IPv4 and
// IPv6; a Hold keeps the connections that come in the queue until it is released, from
// another goroutine, and a Stop for good, while accepting.
func TestOnLoopAcceptsHoldsStops(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "[::1]"} {
		t.Run(host, func(t *testing.T) {
			la := startLoopAccept(t, host+":0")
			addr := la.ln.Addr().String()
			for i := range 3 {
				la.next(t, testkit.Dial(t, addr), uint64(i))
			}

			var release func()
			la.on(func() { release = la.a.Hold() })
			held := testkit.Dial(t, addr)
			la.waitQueued(t)
			la.notAccepted(t, "while held")
			go release()
			la.next(t, held, 10)

			la.on(la.a.Stop)
			testkit.Dial(t, addr)
			la.waitQueued(t)
			la.notAccepted(t, "after Stop")
		})
	}
}

// Out of descriptors (a real EMFILE: the file limit lowered and filled), an OnLoop pauses
// its accepting, logs the back-off's line, and takes the connections that waited once
// descriptors are free again, with the line that says so.
func TestOnLoopBacksOffOnEMFILE(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "[::1]"} {
		t.Run(host, func(t *testing.T) {
			la := startLoopAccept(t, host+":0")
			addr := la.ln.Addr().String()
			la.next(t, testkit.Dial(t, addr), 1)
			var release func()
			la.on(func() { release = la.a.Hold() }) // until the descriptors are gone
			waiting := []*net.TCPConn{testkit.Dial(t, addr), testkit.Dial(t, addr)}
			la.waitQueued(t)

			var lim unix.Rlimit
			if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
				t.Fatal(err)
			}
			old := lim
			// Every descriptor below the limit taken: the next accept4 fails with EMFILE.
			top, err := unix.Dup(0)
			if err != nil {
				t.Fatal(err)
			}
			lim.Cur = uint64(top) + 8
			fill := []int{top}
			restore := func() {
				for _, fd := range fill {
					unix.Close(fd)
				}
				fill = nil
				_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
			}
			defer restore()
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
				t.Fatal(err)
			}
			for range 64 {
				fd, err := unix.Dup(0)
				if err != nil {
					if err != syscall.EMFILE {
						t.Fatal(err)
					}
					break
				}
				fill = append(fill, fd)
			}
			go release()
			testkit.WaitUntil(t, 5*time.Second, "the back-off's line", func() bool {
				return la.logged("out of descriptors or memory (accept4: too many open files): pausing accept for 5ms")
			})
			restore()
			for i, c := range waiting {
				la.next(t, c, uint64(20+i))
			}
			if !la.logged("serving again after ") {
				t.Error("no line for serving again")
			}
		})
	}
}
