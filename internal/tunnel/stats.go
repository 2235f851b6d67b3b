package tunnel

import (
	"errors"
	"strings"
	"sync/atomic"

	"shd-tcp-tools/internal/connstats"
)

// The counts listentwo and connecttwo keep for their metrics (internal/metrics): the
// connections they relay, in connstats, and the links. Each is one atomic add where the
// event happens; Stats reads them at any moment.

// Why listentwo refused a link's handshake: the label values of
// listentwo_handshakes_refused_total. The set is fixed, so that no peer can make a new one.
var refusalReasons = [...]string{"pushed_out", "silent", "not_a_link", "timeout", "tls", "hello_mismatch", "auth", "pool_full", "protocol"}

// refusalReason classifies the error a link was refused with: an index in refusalReasons.
func refusalReason(err error) int {
	var pe errPushedOut
	msg := err.Error()
	switch {
	case errors.As(err, &pe):
		return 0
	case errors.Is(err, errSilent), errors.Is(err, errClosedEarly):
		return 1
	case errors.Is(err, errNotOpening), strings.HasPrefix(msg, "not a link"):
		return 2
	case errors.Is(err, ErrPoolFull):
		return 7
	case strings.HasPrefix(msg, "hello mismatch"):
		return 5
	case strings.HasPrefix(msg, "auth"): // "authentication failed", "auth mismatch"
		return 6
	case strings.Contains(msg, "tls:"), strings.Contains(msg, "TLS"):
		return 4
	case connstats.FailureOf(err) == connstats.FailTimeout:
		return 3
	}
	return 8
}

// relayStats are listentwo's counts beyond its clients' connections.
type relayStats struct {
	conns     connstats.Counters
	pairings  atomic.Uint64 // clients given a link
	linksUp   atomic.Uint64 // links that passed the handshake and joined the pool
	handshake [len(refusalReasons)]atomic.Uint64
}

// RelayStats is what listentwo has done so far, and its pool now.
type RelayStats struct {
	// Conns counts the clients: accepted, refused, paired (opened; the connect time is
	// the wait for a link), relayed and ended, the bytes each way.
	Conns connstats.Snapshot
	// IdleLinks and WaitingClients are the pool now: links waiting for a client, and
	// clients waiting for a link.
	IdleLinks, WaitingClients int
	// Pairings counts the clients that were given a link (a hello that then fails to go
	// out is a pairing but not an open).
	Pairings uint64
	// LinksUp counts the links that passed the handshake.
	LinksUp uint64
	// HandshakesRefused counts the links refused, by reason: pushed_out, silent,
	// not_a_link, timeout, tls, hello_mismatch, auth, pool_full, protocol.
	HandshakesRefused map[string]uint64
}

// Stats returns the relay's counts now. Safe to call at any time, from any goroutine.
func (r *Relay) Stats() RelayStats {
	s := RelayStats{
		Conns:             r.stats.conns.Snapshot(),
		IdleLinks:         r.IdleLinks(),
		WaitingClients:    r.WaitingClients(),
		Pairings:          r.stats.pairings.Load(),
		LinksUp:           r.stats.linksUp.Load(),
		HandshakesRefused: make(map[string]uint64, len(refusalReasons)),
	}
	for i, name := range refusalReasons {
		s.HandshakesRefused[name] = r.stats.handshake[i].Load()
	}
	return s
}

// agentStats are connecttwo's counts beyond the connections it relays.
type agentStats struct {
	conns            connstats.Counters
	connecting, busy atomic.Int64 // links being connected (and handshaken); taken links being served
	linksUp          atomic.Uint64
	reconnects       atomic.Uint64
	linkFailed       [connstats.NumFailures]atomic.Uint64
}

// AgentStats is what connecttwo has done so far, and its links now.
type AgentStats struct {
	// Conns counts the connections through taken links to the service: accepted (a link
	// taken), opened (the service connected; the connect time is that connect's), failed,
	// ended, the bytes each way.
	Conns connstats.Snapshot
	// Connecting, Idle and Busy are the links now: being connected to the relay and
	// handshaken, waiting to be taken, and taken (being served).
	Connecting, Idle, Busy int
	// LinksUp counts the links that passed the handshake; Reconnects the link attempts
	// made after a failure or a link lost; LinkFailures the attempts that failed, by
	// connstats.Failure.
	LinksUp, Reconnects uint64
	LinkFailures        [connstats.NumFailures]uint64
}

// Stats returns the agent's counts now. Safe to call at any time, from any goroutine.
func (a *Agent) Stats() AgentStats {
	s := AgentStats{
		Conns:      a.stats.conns.Snapshot(),
		Connecting: int(a.stats.connecting.Load()),
		Idle:       a.IdleLinks(),
		Busy:       int(a.stats.busy.Load()),
		LinksUp:    a.stats.linksUp.Load(),
		Reconnects: a.stats.reconnects.Load(),
	}
	for i := range s.LinkFailures {
		s.LinkFailures[i] = a.stats.linkFailed[i].Load()
	}
	return s
}
