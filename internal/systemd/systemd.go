// Package systemd is a tool's side of running as a systemd service: it takes the listening
// sockets systemd passes (socket activation, LISTEN_FDS), maps them onto the tool's
// listening options, and tells systemd when the tool is ready and when it stops
// (sd_notify READY=1 and STOPPING=1 on $NOTIFY_SOCKET). Without systemd it does nothing:
// the tool binds its own sockets and nobody is told.
package systemd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/meter"
)

// SetupError is New's and Listen's error for what systemd passed, or its disagreement
// with the command line: a mistake in the unit or the options (the tools exit 2 for it),
// not a failure at run time.
type SetupError struct{ Err error }

func (e *SetupError) Error() string { return e.Err.Error() }
func (e *SetupError) Unwrap() error { return e.Err }

func setupf(format string, args ...any) error {
	return &SetupError{Err: fmt.Errorf(format, args...)}
}

// Socket is one listening socket a tool takes. Flag is the option that names it without
// systemd ("-s"); Name is that option's long name ("source", "clients"), which is also
// the FileDescriptorName= that picks a passed socket for it.
type Socket struct {
	Flag, Name string
}

// Service is what systemd gave this process and the channel back to it. Its methods may
// be called on a Service made outside systemd; they then bind, and notify nobody.
type Service struct {
	sockets []Socket
	passed  map[string]*net.TCPListener // by Socket.Name; nil when not socket-activated
	taken   map[string]bool

	mu       sync.Mutex
	ready    bool // READY=1 was sent
	stopping bool // STOPPING=1 was sent
	stop     func() bool
}

// New reads and unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, so that no child
// inherits them. When they are meant for this process (LISTEN_PID is its pid), it takes
// the passed sockets, one for each of sockets: a socket whose FileDescriptorName is a
// Socket's Name goes to it, the others fill the rest in order. A count that does not fit,
// a malformed variable, or a descriptor that is not a listening TCP socket is a
// *SetupError. LISTEN_FDS=0, or LISTEN_PID naming another process, means none passed,
// as sd_listen_fds(3) has it.
//
// STOPPING=1 is sent when ctx ends, once READY=1 was sent (see Ready). On an error no
// socket is left open and the Service is nil.
func New(ctx context.Context, sockets ...Socket) (*Service, error) {
	s := &Service{sockets: sockets, taken: map[string]bool{}, stop: func() bool { return false }}
	pid, fds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	files := activation.Files(true) // unsets the three variables in every case
	defer func() {
		for _, f := range files {
			f.Close() // the listeners hold their own copies
		}
	}()
	n, err := count(pid, fds)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		s.stop = context.AfterFunc(ctx, s.stopped)
		return s, nil
	}
	if n != len(sockets) {
		return nil, setupf("LISTEN_FDS=%d: systemd passed %s, %s", n, meter.Count(n, "socket"), takes(sockets))
	}
	order, err := assign(strings.Split(names, ":"), sockets)
	if err != nil {
		return nil, err
	}
	s.passed = map[string]*net.TCPListener{}
	for i, f := range files {
		ln, err := listener(f)
		if err != nil {
			s.Close()
			return nil, setupf("socket %d from systemd (%s): %w", i+3, sockets[order[i]].Flag, err)
		}
		s.passed[sockets[order[i]].Name] = ln
	}
	s.stop = context.AfterFunc(ctx, s.stopped)
	return s, nil
}

// count reads LISTEN_FDS when LISTEN_PID is this process: 0 when the variables are not
// for it.
func count(pid, fds string) (int, error) {
	if pid == "" {
		return 0, nil
	}
	p, err := strconv.Atoi(pid)
	if err != nil || p < 1 {
		return 0, setupf("LISTEN_PID=%q: not a process id", pid)
	}
	if p != os.Getpid() {
		return 0, nil // meant for another process, such as a parent shell
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > 1<<16 {
		return 0, setupf("LISTEN_FDS=%q: not a count of sockets", fds)
	}
	return n, nil
}

// assign returns, for each passed socket in order, the index of the Socket it serves:
// names[i] (its FileDescriptorName) picks the Socket of that Name; unnamed sockets, or
// sockets with other names (systemd names them after the .socket unit by default), take
// the Sockets left, in order. len(sockets) sockets were passed.
func assign(names []string, sockets []Socket) ([]int, error) {
	order := make([]int, len(sockets))
	used := make([]bool, len(sockets))
	for i := range order {
		order[i] = -1
		if i >= len(names) {
			continue
		}
		for j, sk := range sockets {
			if names[i] != sk.Name {
				continue
			}
			if used[j] {
				return nil, setupf("LISTEN_FDNAMES=%s: two sockets are named %q", strings.Join(names, ":"), sk.Name)
			}
			order[i], used[j] = j, true
		}
	}
	next := 0
	for i := range order {
		if order[i] >= 0 {
			continue
		}
		for used[next] {
			next++
		}
		order[i], used[next] = next, true
	}
	return order, nil
}

// listener checks that f is a listening TCP socket and makes a listener of it, with the
// options endpoint.Listen sets.
func listener(f *os.File) (*net.TCPListener, error) {
	fd := int(f.Fd())
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("not a socket: %w", err)
	}
	domain, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if typ != unix.SOCK_STREAM || (domain != unix.AF_INET && domain != unix.AF_INET6) {
		return nil, fmt.Errorf("not a TCP socket (ListenStream= takes [ADDR:]PORT)")
	}
	if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on != 1 {
		return nil, fmt.Errorf("a TCP socket that is not listening (Accept=no is needed)")
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("taking it: %w", err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("not a TCP listener")
	}
	if err := endpoint.Adopt(tl); err != nil {
		tl.Close()
		return nil, err
	}
	return tl, nil
}

// Activated reports whether systemd passed the sockets.
func (s *Service) Activated() bool { return s.passed != nil }

// Default returns the option value to use for the Socket named name: given when it is
// set, and the passed socket's address when given is empty and systemd passed one; so a
// socket-activated tool needs no -s. Listen checks a given value against the socket.
func (s *Service) Default(name, given string) string {
	if ln := s.passed[name]; ln != nil && given == "" {
		return ln.Addr().String()
	}
	return given
}

// Listen returns the listener of the Socket named name: the socket systemd passed, when it
// did, or a new one on ep (endpoint.Listen). A passed socket must be what ep names: its
// port, and its address when ep gives an IP address; otherwise it is a *SetupError
// (the unit and the command line disagree). Its signature fits tunnel.RelayConfig.Listen.
func (s *Service) Listen(ctx context.Context, name string, ep endpoint.Endpoint, local netip.Addr) (*net.TCPListener, error) {
	ln := s.passed[name]
	if ln == nil {
		return endpoint.Listen(ctx, ep, local)
	}
	s.mu.Lock()
	s.taken[name] = true
	s.mu.Unlock()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	ip, err := netip.ParseAddr(ep.Host)
	if addr.Port() != uint16(ep.Port) || (err == nil && ip.Unmap() != addr.Addr().Unmap()) {
		return nil, setupf("%s %s: systemd passed the socket %s for it; leave %s out or make them agree", s.flag(name), ep, addr, s.flag(name))
	}
	return ln, nil
}

func (s *Service) flag(name string) string {
	for _, sk := range s.sockets {
		if sk.Name == name {
			return sk.Flag
		}
	}
	return "--" + name
}

// Ready tells systemd that the tool is up (READY=1), when it started the tool as a
// Type=notify service ($NOTIFY_SOCKET set); call it once every socket listens. From then
// on, STOPPING=1 is sent when the stop begins (New's ctx ends) or at Close. The error
// says why systemd could not be told.
func (s *Service) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready {
		return nil
	}
	s.ready = true
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		return fmt.Errorf("telling systemd %s through NOTIFY_SOCKET=%s: %w", daemon.SdNotifyReady, os.Getenv("NOTIFY_SOCKET"), err)
	}
	return nil
}

// stopped sends STOPPING=1 once, after READY=1. A failure is not reported: the process
// is on its way out, and systemd sees it go.
func (s *Service) stopped() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready || s.stopping {
		return
	}
	s.stopping = true
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
}

// Close sends STOPPING=1 if it was not sent yet and closes the passed sockets that no
// Listen took (the ones taken belong to their servers).
func (s *Service) Close() {
	s.stop()
	s.stopped()
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, ln := range s.passed {
		if !s.taken[name] {
			ln.Close()
		}
	}
}

// takes says what the tool takes: "tcp-pf takes 1: for -s".
func takes(sockets []Socket) string {
	flags := make([]string, len(sockets))
	for i, sk := range sockets {
		flags[i] = sk.Flag
		if len(sockets) > 1 {
			flags[i] += " (" + sk.Name + ")"
		}
	}
	return fmt.Sprintf("this tool takes %d: for %s", len(sockets), strings.Join(flags, ", "))
}
