package sock

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var loopbacks = []string{"127.0.0.1", "::1"}

// listen returns a listening socket's descriptor (non-blocking, owned by ln) and address.
func listen(t testing.TB, host string) (int, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lfd int
	if err := raw.Control(func(fd uintptr) { lfd = int(fd) }); err != nil {
		t.Fatal(err)
	}
	return lfd, ln.Addr().(*net.TCPAddr).AddrPort()
}

// wait polls fd for events until one of them comes, for at most 10 s.
func wait(t testing.TB, fd int, events int16) int16 {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		n, err := unix.Poll(pfd, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
		if n > 0 {
			return pfd[0].Revents
		}
	}
	t.Fatalf("fd %d: no event %#x in 10 s", fd, events)
	return 0
}

// pair returns a connected pair of non-blocking sockets made with Socket, Connect and
// Accept: the client's and the accepted one.
func pair(t testing.TB, host string) (int, int) {
	t.Helper()
	lfd, addr := listen(t, host)
	c, err := Socket(addr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(c) })
	if err := Connect(c, addr); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		t.Fatalf("connect to %v: %v", addr, err)
	}
	wait(t, c, unix.POLLOUT)
	if err := Error(c); err != nil {
		t.Fatalf("connect to %v: %v", addr, err)
	}
	wait(t, lfd, unix.POLLIN)
	s, peer, err := Accept(lfd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	local, err := LocalAddr(c)
	if err != nil {
		t.Fatal(err)
	}
	if peer != local {
		t.Fatalf("Accept named the client %v, its socket is bound to %v", peer, local)
	}
	if fl, _ := unix.FcntlInt(uintptr(s), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Fatal("the accepted socket blocks")
	}
	return c, s
}

func TestAcceptConnectSendRecv(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			c, s := pair(t, host)
			msg := []byte("hello through raw sockets")
			if n, err := Send(c, msg); err != nil || n != len(msg) {
				t.Fatalf("Send: %d, %v", n, err)
			}
			wait(t, s, unix.POLLIN)
			buf := make([]byte, 64)
			n, err := Recv(s, buf, unix.MSG_PEEK)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("Recv with MSG_PEEK: %q, %v", buf[:n], err)
			}
			n, err = Recv(s, buf, 0)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("Recv after the peek: %q, %v", buf[:n], err)
			}
			if _, err := Recv(s, buf, 0); !errors.Is(err, unix.EAGAIN) {
				t.Fatalf("Recv with nothing there: %v, want EAGAIN", err)
			}
			if err := ShutdownWrite(c); err != nil {
				t.Fatal(err)
			}
			wait(t, s, unix.POLLIN)
			if n, err := Recv(s, buf, 0); n != 0 || err != nil {
				t.Fatalf("Recv after the FIN: %d, %v, want the end of the stream", n, err)
			}
		})
	}
}

func TestConnectRefused(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			ip := netip.MustParseAddr(host)
			// A socket bound to a port and not listening: a connect to that port is refused.
			fd, err := Socket(ip)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if err := Bind(fd, netip.AddrPortFrom(ip, 0)); err != nil {
				t.Fatal(err)
			}
			bound, err := LocalAddr(fd)
			if err != nil || bound.Addr() != ip || bound.Port() == 0 {
				t.Fatalf("bound to %v (%v), want %v and a port", bound, err, ip)
			}
			other, err := Socket(ip)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(other)
			if err := Connect(other, bound); err != nil && !errors.Is(err, unix.EINPROGRESS) {
				if !errors.Is(err, unix.ECONNREFUSED) {
					t.Fatalf("connect: %v", err)
				}
				return
			}
			wait(t, other, unix.POLLOUT)
			if err := Error(other); !errors.Is(err, unix.ECONNREFUSED) {
				t.Fatalf("SO_ERROR: %v, want connection refused", err)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	c, s := pair(t, "127.0.0.1")
	if err := SetNoDelay(c); err != nil {
		t.Fatal(err)
	}
	if v, _ := getInt(c, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != 1 {
		t.Fatalf("TCP_NODELAY %d", v)
	}
	if err := SetKeepAlive(s, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct{ level, name, want int }{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
	} {
		if v, err := getInt(s, o.level, o.name); err != nil || v != o.want {
			t.Fatalf("option %d/%d: %d, %v, want %d", o.level, o.name, v, err, o.want)
		}
	}
}

// A close after Linger0 resets the peer, and PeerReset sees it.
func TestLinger0AndPeerReset(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			lfd, addr := listen(t, host)
			c, err := Socket(addr.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(c)
			if err := Connect(c, addr); err != nil && !errors.Is(err, unix.EINPROGRESS) {
				t.Fatal(err)
			}
			wait(t, lfd, unix.POLLIN)
			s, _, err := Accept(lfd)
			if err != nil {
				t.Fatal(err)
			}
			if PeerReset(c) {
				t.Fatal("PeerReset before any reset")
			}
			Linger0(s)
			unix.Close(s)
			wait(t, c, unix.POLLIN)
			if !PeerReset(c) {
				info, _ := Info(c)
				t.Fatalf("PeerReset false after the peer's reset (state %d)", info.State)
			}
			if _, err := Recv(c, make([]byte, 8), 0); !errors.Is(err, unix.ECONNRESET) {
				t.Fatalf("Recv after the reset: %v", err)
			}
		})
	}
}

// Unacked counts what the peer has not acknowledged: bytes a peer with a full receive
// buffer cannot take; 0 once it read them all.
func TestUnackedAndInFlight(t *testing.T) {
	c, s := pair(t, "::1")
	if n := Unacked(c); n != 0 {
		t.Fatalf("Unacked %d on a fresh connection", n)
	}
	chunk := make([]byte, 64<<10)
	sent := 0
	for {
		n, err := Send(c, chunk)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent += n
	}
	if n := Unacked(c); n <= 0 || n > sent {
		t.Fatalf("Unacked %d with %d bytes sent and the peer not reading", n, sent)
	}
	if n := InFlight(c); n < 0 || n > Unacked(c) {
		t.Fatalf("InFlight %d, Unacked %d", n, Unacked(c))
	}
	got := 0
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for (got < sent || Unacked(c) > 0) && time.Now().Before(deadline) {
		n, err := Recv(s, buf, 0)
		if errors.Is(err, unix.EAGAIN) {
			wait(t, s, unix.POLLIN)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got += n
		if got == sent && Unacked(c) > 0 {
			wait(t, c, unix.POLLOUT) // the acknowledgement frees send space
		}
	}
	if got != sent || Unacked(c) != 0 {
		t.Fatalf("read %d of %d; Unacked %d at the end", got, sent, Unacked(c))
	}
}

// Discard drops what the peer sent, without a buffer, and counts it.
func TestDiscard(t *testing.T) {
	c, s := pair(t, "127.0.0.1")
	const total = 3 << 20
	data := make([]byte, total)
	sent, dropped := 0, 0
	deadline := time.Now().Add(10 * time.Second)
	for dropped < total && time.Now().Before(deadline) {
		if sent < total {
			n, err := Send(c, data[sent:])
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				t.Fatal(err)
			}
			sent += n
		}
		if k := Discard(s); k == 0 {
			wait(t, s, unix.POLLIN)
		} else {
			dropped += k
		}
	}
	if dropped != total {
		t.Fatalf("Discard dropped %d of %d bytes", dropped, total)
	}
	if k := Discard(s); k != 0 {
		t.Fatalf("Discard found %d more bytes", k)
	}
}

// Splice moves a stream socket to pipe to socket, every byte in order.
func TestSplice(t *testing.T) {
	for _, host := range loopbacks {
		t.Run(host, func(t *testing.T) {
			src, in := pair(t, host)  // the test writes src; Splice reads in
			out, dst := pair(t, host) // Splice writes out; the test reads dst
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(p[0])
			defer unix.Close(p[1])
			data := make([]byte, 8<<20+13)
			for i := range data {
				data[i] = byte(rand.Uint32())
			}
			var got bytes.Buffer
			sent, inPipe := 0, 0
			srcDone, eof := false, false
			buf := make([]byte, 256<<10)
			deadline := time.Now().Add(20 * time.Second)
			for got.Len() < len(data) || !eof {
				if time.Now().After(deadline) {
					t.Fatalf("moved %d of %d bytes in 20 s", got.Len(), len(data))
				}
				progress := false
				if sent < len(data) {
					if n, err := Send(src, data[sent:]); err == nil {
						sent += n
						progress = true
					} else if !errors.Is(err, unix.EAGAIN) {
						t.Fatal(err)
					}
				} else if !srcDone {
					_ = ShutdownWrite(src)
					srcDone = true
				}
				if inPipe == 0 && !eof {
					n, err := Splice(in, p[1], 1<<20)
					switch {
					case err == nil && n == 0:
						eof = true
						_ = ShutdownWrite(out)
					case err == nil:
						inPipe += n
						progress = true
					case !errors.Is(err, unix.EAGAIN):
						t.Fatal(err)
					}
				}
				if inPipe > 0 {
					n, err := Splice(p[0], out, inPipe)
					if err == nil {
						inPipe -= n
						progress = progress || n > 0
					} else if !errors.Is(err, unix.EAGAIN) {
						t.Fatal(err)
					}
				}
				if n, err := Recv(dst, buf, 0); err == nil {
					got.Write(buf[:n])
					progress = progress || n > 0
				} else if !errors.Is(err, unix.EAGAIN) {
					t.Fatal(err)
				}
				if !progress {
					pfd := []unix.PollFd{{Fd: int32(dst), Events: unix.POLLIN}, {Fd: int32(in), Events: unix.POLLIN}}
					_, _ = unix.Poll(pfd, 10)
				}
			}
			if got.Len() != len(data) || sha256.Sum256(got.Bytes()) != sha256.Sum256(data) {
				t.Fatalf("got %d bytes of %d, or they differ", got.Len(), len(data))
			}
		})
	}
}

// A raw call against the runtime's entry and exit, on a query that never blocks.
func BenchmarkUnacked(b *testing.B) {
	c, _ := pair(b, "127.0.0.1")
	b.Run("raw", func(b *testing.B) {
		for b.Loop() {
			Unacked(c)
		}
	})
	b.Run("unix", func(b *testing.B) {
		for b.Loop() {
			_, _ = unix.IoctlGetInt(c, unix.SIOCOUTQ)
		}
	})
	b.Run("raw-peer-reset", func(b *testing.B) {
		for b.Loop() {
			PeerReset(c)
		}
	})
	b.Run("unix-peer-reset", func(b *testing.B) {
		for b.Loop() {
			_, _ = unix.GetsockoptTCPInfo(c, unix.IPPROTO_TCP, unix.TCP_INFO)
		}
	})
}
