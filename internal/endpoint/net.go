package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"
)

// DefaultDialTimeout bounds one connection attempt when a Dialer sets none.
const DefaultDialTimeout = 10 * time.Second

// Dialer opens outgoing TCP connections from an optional local address.
// The zero value dials from any local address with DefaultDialTimeout.
type Dialer struct {
	// Local, when valid, is the local address every connection is bound to
	// (INADDR_DEFAULT, -b), with its zone for a link-local IPv6 address.
	Local netip.Addr
	// Timeout bounds each connection attempt; zero means DefaultDialTimeout.
	Timeout time.Duration
	// KeepAlive is the TCP keepalive period; zero means the net package's default (15 s),
	// negative disables keepalive.
	KeepAlive time.Duration
}

func (d *Dialer) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return DefaultDialTimeout
}

// Dial connects to ep and returns the raw *net.TCPConn, kept unwrapped so that copies can
// use splice and sendfile.
func (d *Dialer) Dial(ctx context.Context, ep Endpoint) (*net.TCPConn, error) {
	nd := net.Dialer{Timeout: d.timeout(), KeepAlive: d.KeepAlive}
	network := "tcp"
	if d.Local.IsValid() {
		// A local address pins the family: a v4 source cannot reach a v6 destination.
		if err := CheckFamily("the local address", d.Local, ep.Host); err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", ep, err)
		}
		nd.LocalAddr = &net.TCPAddr{IP: d.Local.AsSlice(), Zone: d.Local.Zone()}
		network = "tcp6"
		if d.Local.Is4() {
			network = "tcp4"
		}
	}
	c, err := nd.DialContext(ctx, network, ep.String())
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && d.Local.IsValid() && ae.Err == "no suitable address found" {
			// A name with addresses of the other family only.
			return nil, fmt.Errorf("connecting to %s: no %s address, which the local address %s needs", ep, family(d.Local), d.Local)
		}
		return nil, fmt.Errorf("connecting to %s: %w", ep, unwrapOp(err))
	}
	return c.(*net.TCPConn), nil
}

// Failure records one candidate that could not be reached during DialFirst.
type Failure struct {
	Endpoint Endpoint
	Err      error
}

// DialFirst tries each candidate in order and returns the first connection made, its index
// in candidates, and the failures before it. When every candidate fails, the error names
// the last failure and how many were tried. A cancelled ctx stops at once.
func (d *Dialer) DialFirst(ctx context.Context, candidates []Endpoint) (*net.TCPConn, int, []Failure, error) {
	var plan Plan[Endpoint]
	var failures []Failure
	for {
		ep, ok := plan.Next(List[Endpoint](candidates))
		if !ok {
			return nil, -1, failures, plan.Err()
		}
		c, err := d.Dial(ctx, ep)
		if err == nil {
			return c, len(plan.Tried()) - 1, failures, nil
		}
		plan.Failed(err)
		failures = append(failures, Failure{Endpoint: ep, Err: err})
		if ctx.Err() != nil {
			return nil, -1, failures, ctx.Err()
		}
	}
}

// Listen opens a TCP listener on ep. An empty ep.Host listens on local when it is valid
// (INADDR_DEFAULT, -b; its zone kept) and on every address otherwise. The error names the
// address.
func Listen(ctx context.Context, ep Endpoint, local netip.Addr) (*net.TCPListener, error) {
	host := ep.Host
	if host == "" && local.IsValid() {
		host = local.String()
	}
	addr := net.JoinHostPort(host, strconv.Itoa(ep.Port))
	// Keepalive and TCP_NODELAY are set once on the listening socket, whose settings Linux
	// copies to every accepted one, instead of five setsockopt calls per connection.
	lc := net.ListenConfig{KeepAlive: -1, Control: listenerOptions}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, unwrapOp(err))
	}
	return ln.(*net.TCPListener), nil
}

// Adopt gives a socket that is already listening (one systemd passed) the options that
// Listen sets on its own: keepalive and TCP_NODELAY for the sockets it accepts.
func Adopt(ln *net.TCPListener) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("setting options on %s: %w", ln.Addr(), err)
	}
	if err := listenerOptions("", "", rc); err != nil {
		return fmt.Errorf("setting options on %s: %w", ln.Addr(), err)
	}
	return nil
}

// ListenKeepAlive is the TCP keepalive of accepted connections: the first probe after 15 s
// of silence, then one every 15 s, and the connection is dropped after 9 unanswered.
const ListenKeepAlive = 15 * time.Second

// listenerOptions sets keepalive and TCP_NODELAY (no Nagle delay on relayed writes) on a
// listening socket, for the sockets it accepts.
func listenerOptions(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		secs := int(ListenKeepAlive / time.Second)
		for _, o := range []struct{ level, name, value int }{
			{syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
			{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, secs},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, secs},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
		} {
			if serr = syscall.SetsockoptInt(int(fd), o.level, o.name, o.value); serr != nil {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt", serr)
}

// unwrapOp drops net.OpError's repetition of addresses we already name, keeping the cause
// ("connection refused", "i/o timeout").
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		if op.Timeout() {
			return errTimeout{op.Err}
		}
		var sc *os.SyscallError
		if errors.As(op.Err, &sc) {
			return sc.Err
		}
		return op.Err
	}
	return err
}

type errTimeout struct{ err error }

func (e errTimeout) Error() string   { return "connection timed out" }
func (e errTimeout) Unwrap() error   { return e.err }
func (e errTimeout) Timeout() bool   { return true }
func (e errTimeout) Temporary() bool { return true }
