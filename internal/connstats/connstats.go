// Package connstats counts what a tool's connections do: accepted, opened, ended (and how),
// refused and failed (and why), the bytes moved each way while they move, and how long
// connecting took. A count is one atomic add, with no lock and no allocation, so the data
// path can afford one on every splice; a metrics exporter (internal/metrics) reads the
// counts at any moment with Snapshot.
package connstats

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"shd-tcp-tools/internal/endpoint"
)

// End is how a relayed connection ended. The values follow the close line's end= field
// (relay.End*): EndOf maps one to the other.
type End int

// The ends of a relayed connection.
const (
	EndClientClosed End = iota // the client's FIN
	EndServerClosed            // the server's FIN
	EndClientReset             // a reset from the client
	EndServerReset             // a reset from the server
	EndIdle                    // cut by the idle timeout
	EndStopped                 // cut by a stop (a signal, the end of --grace)
	EndError                   // an error of ours or of the system
	NumEnds                    // how many ends there are
)

var endNames = [NumEnds]string{"client_closed", "server_closed", "client_reset", "server_reset", "idle_timeout", "stopped", "error"}

// String is the end's label value: "client_closed", "server_reset", "idle_timeout", ...
func (e End) String() string { return endNames[e] }

// EndOf maps the end of a close line (relay.EndClientClosed, ..., "error: ...") to an End.
// The strings are relay's; they are matched here so that connstats imports nothing of the
// engines.
func EndOf(end string) End {
	switch end {
	case "client closed":
		return EndClientClosed
	case "server closed":
		return EndServerClosed
	case "reset by client":
		return EndClientReset
	case "reset by server":
		return EndServerReset
	case "cut: idle timeout":
		return EndIdle
	case "cut: stopped":
		return EndStopped
	}
	return EndError
}

// Refusal is why a client was turned away before anything was relayed.
type Refusal int

// The reasons for a refusal.
const (
	RefusedAllow  Refusal = iota // not in the allow list (-a)
	RefusedHeader                // a missing, malformed or late PROXY header (tcp-pf --accept-proxy)
	RefusedSilent                // no first byte in time, or pushed out while silent (listentwo without hellos)
	NumRefusals                  // how many reasons there are
)

var refusalNames = [NumRefusals]string{"allow_list", "proxy_header", "silent"}

// String is the refusal's label value: "allow_list", "proxy_header", "silent".
func (r Refusal) String() string { return refusalNames[r] }

// Failure is why a connection to a destination (one attempt, or the client's connection as
// a whole) did not succeed.
type Failure int

// The reasons for a failure.
const (
	FailRefused     Failure = iota // the destination refused (ECONNREFUSED)
	FailTimeout                    // the connect or a handshake timed out
	FailUnreachable                // no route to the host or network
	FailResolve                    // the name did not resolve
	FailResources                  // out of descriptors or memory
	FailReset                      // reset during the set-up
	FailNoHost                     // no destination left to try
	FailNoLink                     // no idle tunnel link in time (listentwo)
	FailCut                        // cut by the tool during the set-up (a stop)
	FailOther                      // anything else
	NumFailures                    // how many reasons there are
)

var failureNames = [NumFailures]string{"refused", "timeout", "unreachable", "resolve", "resources", "reset", "no_host", "no_link", "cut", "other"}

// String is the failure's label value: "refused", "timeout", ...
func (f Failure) String() string { return failureNames[f] }

// ErrNoHost is the error of a connection that had no destination to try.
var ErrNoHost = endpoint.ErrNoHost

// FailureOf classifies the error of a failed connection attempt. ErrNoHost is FailNoHost;
// an error whose text starts with "cut:" (relay.EndStopped, ...) is FailCut.
func FailureOf(err error) Failure {
	var dns *net.DNSError
	var ne net.Error
	switch {
	case err == nil:
		return FailOther
	case errors.Is(err, ErrNoHost):
		return FailNoHost
	case strings.HasPrefix(err.Error(), "cut:"):
		return FailCut
	case errors.Is(err, syscall.ECONNREFUSED):
		return FailRefused
	case errors.As(err, &dns):
		if dns.IsTimeout {
			return FailTimeout
		}
		return FailResolve
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return FailTimeout
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.ENETDOWN), errors.Is(err, syscall.EHOSTDOWN):
		return FailUnreachable
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE),
		errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.ENOMEM):
		return FailResources
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return FailReset
	case strings.Contains(err.Error(), "timed out"): // a handshake's own deadline message
		return FailTimeout
	}
	return FailOther
}

// ConnectBuckets are the upper bounds, in seconds, of the connect-time histogram: from a
// tenth of a millisecond (loopback) to 10 s (the default connect timeout).
var ConnectBuckets = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Counters are the counts of one group of connections: a tool's, or one event loop's (the
// loops' are added up by Snapshot.Add). The zero value is ready; every method is safe for
// simultaneous use and costs one or two atomic adds.
type Counters struct {
	accepted, opened atomic.Uint64
	ended            [NumEnds]atomic.Uint64
	refused          [NumRefusals]atomic.Uint64
	failed           [NumFailures]atomic.Uint64
	attemptFailed    [NumFailures]atomic.Uint64
	up, down         atomic.Uint64
	connect          [len(ConnectBuckets) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	connectNanos     atomic.Uint64
	// Counters of different loops sit in different cache lines, so that one loop's adds do
	// not slow another's.
	_ [64]byte
}

// Accepted counts a client accepted.
func (c *Counters) Accepted() { c.accepted.Add(1) }

// Opened counts a connection opened (its destination connected, its link taken) after
// connecting took d; a negative d is not observed in the histogram.
func (c *Counters) Opened(d time.Duration) {
	c.opened.Add(1)
	if d < 0 {
		return
	}
	s := d.Seconds()
	i := 0
	for i < len(ConnectBuckets) && s > ConnectBuckets[i] {
		i++
	}
	c.connect[i].Add(1)
	c.connectNanos.Add(uint64(d))
}

// Ended counts an opened connection that ended, and how.
func (c *Counters) Ended(e End) { c.ended[e].Add(1) }

// Refused counts a client turned away, and why.
func (c *Counters) Refused(r Refusal) { c.refused[r].Add(1) }

// Failed counts a client whose connection could not be set up, and why.
func (c *Counters) Failed(f Failure) { c.failed[f].Add(1) }

// AttemptFailed counts one connection attempt to a destination that failed, and why; a
// client whose first destination fails and second succeeds has one.
func (c *Counters) AttemptFailed(f Failure) { c.attemptFailed[f].Add(1) }

// Up counts n bytes delivered from the client to the server.
func (c *Counters) Up(n int) { c.up.Add(uint64(n)) }

// Down counts n bytes delivered from the server to the client.
func (c *Counters) Down(n int) { c.down.Add(uint64(n)) }

// Moved counts n bytes delivered one way (up: client to server), in the shape of a relay's
// Progress.
func (c *Counters) Moved(up bool, n int64) {
	if up {
		c.up.Add(uint64(n))
	} else {
		c.down.Add(uint64(n))
	}
}

// Snapshot is the counts at one moment, added up over one or more Counters.
type Snapshot struct {
	Accepted, Opened uint64
	Ended            [NumEnds]uint64
	Refused          [NumRefusals]uint64
	Failed           [NumFailures]uint64
	AttemptFailed    [NumFailures]uint64
	Up, Down         uint64
	// Connect holds the connect-time observations per bucket of ConnectBuckets (not
	// cumulative; the last is above the last bound), and ConnectSum their sum.
	Connect    [len(ConnectBuckets) + 1]uint64
	ConnectSum time.Duration
}

// Add adds c's counts to s. The ends are read before the opens, so that for every group
// of connections Opened is never less than the sum of Ended: Open is never negative.
func (s *Snapshot) Add(c *Counters) {
	for i := range c.ended {
		s.Ended[i] += c.ended[i].Load()
	}
	s.Opened += c.opened.Load()
	s.Accepted += c.accepted.Load()
	for i := range c.refused {
		s.Refused[i] += c.refused[i].Load()
	}
	for i := range c.failed {
		s.Failed[i] += c.failed[i].Load()
		s.AttemptFailed[i] += c.attemptFailed[i].Load()
	}
	s.Up += c.up.Load()
	s.Down += c.down.Load()
	for i := range c.connect {
		s.Connect[i] += c.connect[i].Load()
	}
	s.ConnectSum += time.Duration(c.connectNanos.Load())
}

// Snapshot returns c's counts now.
func (c *Counters) Snapshot() Snapshot {
	var s Snapshot
	s.Add(c)
	return s
}

// Open is the number of connections opened and not ended yet.
func (s *Snapshot) Open() uint64 {
	var ended uint64
	for _, n := range s.Ended {
		ended += n
	}
	return s.Opened - ended
}
