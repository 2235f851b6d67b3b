// Command epollfwd is a reference point of bench/relay.sh, not a tool: the barest event-loop
// TCP forwarder in Go, to show what an event loop costs by itself, without any of a real
// relay's work, on the machine the bench runs on. Each of -n OS threads (one per CPU by
// default, like HAProxy's threads) runs an edge-triggered epoll loop over its own listening
// socket (SO_REUSEPORT) and raw non-blocking sockets: accept, connect, read into one shared
// buffer, write, close. It has none of tcp-pf's work per connection (allow list, host choice,
// failover, logging, counts, rate limits, keepalive, reset passthrough, acknowledged
// close), and no splice: a 64-byte echo gains nothing from it.
//
// When either side ends or fails, it closes both at once.
//
//	epollfwd -l 127.0.0.1:7000 -d 127.0.0.1:7001
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

func main() {
	listen := flag.String("l", "", "address to listen on (IP:PORT)")
	dest := flag.String("d", "", "address to forward to (IP:PORT)")
	loops := flag.Int("n", runtime.GOMAXPROCS(0), "event loops, each on its own thread with its own listening socket (SO_REUSEPORT)")
	flag.Parse()
	errs := make(chan error, *loops)
	for range *loops {
		go func() { errs <- run(*listen, *dest) }()
	}
	if err := <-errs; err != nil {
		fmt.Fprintln(os.Stderr, "epollfwd:", err)
		os.Exit(1)
	}
}

// side is one socket of a relayed pair.
type side struct {
	fd         int
	peer       *side
	pair       *pair
	pending    []byte // read from peer, not yet written to this socket
	connecting bool   // the outgoing connect has not completed
}

// pair is one client connection and its outgoing connection.
type pair struct {
	client, server side
	closed         bool
}

// loop is the state of the event loop; it is used by one goroutine only.
type loop struct {
	ep      int
	sides   []*side // by descriptor
	dest    unix.Sockaddr
	family  int
	scratch []byte
}

func run(listen, dest string) error {
	la, err := netip.ParseAddrPort(listen)
	if err != nil {
		return fmt.Errorf("-l: %w", err)
	}
	da, err := netip.ParseAddrPort(dest)
	if err != nil {
		return fmt.Errorf("-d: %w", err)
	}
	runtime.LockOSThread()
	lfd, err := unix.Socket(family(la), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_ = unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	_ = unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err := unix.Bind(lfd, sockaddr(la)); err != nil {
		return fmt.Errorf("bind %s: %w", la, err)
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		return err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return err
	}
	l := &loop{ep: ep, dest: sockaddr(da), family: family(da), scratch: make([]byte, 64<<10)}
	events := make([]unix.EpollEvent, 512)
	for {
		n, err := unix.EpollWait(ep, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == lfd {
				l.accept(lfd)
				continue
			}
			if s := l.side(int(ev.Fd)); s != nil {
				l.ready(s, ev.Events)
			}
		}
	}
}

func family(a netip.AddrPort) int {
	if a.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func sockaddr(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
}

func (l *loop) side(fd int) *side {
	if fd < len(l.sides) {
		return l.sides[fd]
	}
	return nil
}

// accept takes every waiting client and starts its outgoing connection.
func (l *loop) accept(lfd int) {
	for {
		cfd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN, or out of descriptors: the next readiness retries
		}
		sfd, err := unix.Socket(l.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			unix.Close(cfd)
			continue
		}
		_ = unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		_ = unix.SetsockoptInt(sfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		err = unix.Connect(sfd, l.dest)
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			unix.Close(cfd)
			unix.Close(sfd)
			continue
		}
		p := &pair{}
		p.client = side{fd: cfd, peer: &p.server, pair: p}
		p.server = side{fd: sfd, peer: &p.client, pair: p, connecting: err != nil}
		l.add(&p.client)
		l.add(&p.server)
	}
}

func (l *loop) add(s *side) {
	for s.fd >= len(l.sides) {
		l.sides = append(l.sides, nil)
	}
	l.sides[s.fd] = s
	ev := &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(s.fd)}
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, s.fd, ev); err != nil {
		l.close(s.pair)
	}
}

// ready handles the events of one socket.
func (l *loop) ready(s *side, events uint32) {
	if events&unix.EPOLLOUT != 0 {
		if s.connecting {
			if v, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || v != 0 {
				l.close(s.pair)
				return
			}
			s.connecting = false
		}
		if !l.flush(s) {
			return
		}
		l.pump(s.peer) // the peer may have bytes waiting that we stopped reading
	}
	if !s.pair.closed && events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		l.pump(s)
	}
}

// pump moves what src has to its peer until src has no more, the peer is full, or src ends.
func (l *loop) pump(src *side) {
	dst := src.peer
	if src.pair.closed || dst.connecting || len(dst.pending) > 0 {
		return // resumed by dst's EPOLLOUT
	}
	for {
		n, err := unix.Read(src.fd, l.scratch)
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			l.close(src.pair)
			return
		}
		m, err := unix.Write(dst.fd, l.scratch[:n])
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			l.close(src.pair)
			return
		}
		if m < n {
			dst.pending = append(dst.pending[:0], l.scratch[max(m, 0):n]...)
			return
		}
	}
}

// flush writes s.pending and reports whether all of it went out.
func (l *loop) flush(s *side) bool {
	for len(s.pending) > 0 {
		m, err := unix.Write(s.fd, s.pending)
		if errors.Is(err, unix.EAGAIN) {
			return false
		}
		if err != nil {
			l.close(s.pair)
			return false
		}
		s.pending = s.pending[m:]
	}
	s.pending = nil
	return !s.pair.closed
}

// close ends a pair. Bytes read but not yet written are dropped: with a 64-byte echo and
// with streams that end only after the sink confirmed every byte, none are pending.
func (l *loop) close(p *pair) {
	if p.closed {
		return
	}
	p.closed = true
	for _, s := range []*side{&p.client, &p.server} {
		l.sides[s.fd] = nil
		unix.Close(s.fd)
	}
}
