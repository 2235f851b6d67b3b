package metrics

import (
	"cmp"
	"net"
	"net/http"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/sock"
)

// MaxConns caps the connections the metrics listener keeps open. A scraper needs one (a
// keep-alive connection: Prometheus keeps one per target); the cap is there so that
// strangers cannot spend the tool's descriptors and memory, which its relays need, on idle
// or slow connections to the metrics port.
const MaxConns = 64

// connCap keeps at most max connections of an http.Server open (its ConnState hook). It
// never refuses a newcomer, since a scraper must get through however many strangers hold
// connections: when a connection past the cap is accepted, another is closed, the one
// that has got least far, oldest first: one whose request has not been read whole (silent,
// or a slow loris sending its header a byte at a time), then one idle between requests. A
// connection whose request has been read is being answered and is never closed; so is the
// newcomer, and one whose first bytes are waiting in its socket (a scraper whose request
// has arrived but not been read yet). When no connection may be closed, the cap is passed
// until one ends. Safe for simultaneous use.
type connCap struct {
	max int

	mu    sync.Mutex
	seq   uint64
	conns map[net.Conn]*capped
}

// capped is one open connection.
type capped struct {
	seq   uint64 // accept order
	state http.ConnState
}

func newConnCap(max int) *connCap {
	return &connCap{max: max, conns: make(map[net.Conn]*capped)}
}

// connState is the server's ConnState hook. StateNew runs on the accepting goroutine,
// before the next accept, so at most max+1 connections are open at any moment, unless
// the cap is passed as above.
func (k *connCap) connState(c net.Conn, s http.ConnState) {
	k.mu.Lock()
	switch s {
	case http.StateNew:
		k.seq++
		k.conns[c] = &capped{seq: k.seq, state: s}
	case http.StateActive, http.StateIdle:
		if e := k.conns[c]; e != nil {
			e.state = s
		}
	default: // closed, hijacked
		delete(k.conns, c)
	}
	var victim net.Conn
	if s == http.StateNew && len(k.conns) > k.max {
		if victim = k.victim(c); victim != nil {
			delete(k.conns, victim) // its own StateClosed finds nothing
		}
	}
	k.mu.Unlock()
	if victim != nil {
		_ = victim.Close()
	}
}

// victim returns the connection to close to make room for newcomer, or nil when none may
// be; k.mu is held.
func (k *connCap) victim(newcomer net.Conn) net.Conn {
	type cand struct {
		c net.Conn
		e *capped
	}
	var cands []cand
	for c, e := range k.conns {
		if c != newcomer && (e.state == http.StateNew || e.state == http.StateIdle) {
			cands = append(cands, cand{c, e})
		}
	}
	slices.SortFunc(cands, func(x, y cand) int {
		if x.e.state != y.e.state {
			if x.e.state == http.StateNew {
				return -1
			}
			return 1
		}
		return cmp.Compare(x.e.seq, y.e.seq)
	})
	for _, v := range cands {
		// One whose request is there, only not read yet, is a scraper, not a stranger.
		if v.e.state != http.StateNew || !pending(v.c) {
			return v.c
		}
	}
	return nil
}

// pending reports whether bytes wait to be read on c, without reading them.
func pending(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	n := 0
	_ = raw.Control(func(fd uintptr) {
		n, _ = sock.Recv(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	})
	return n > 0
}
