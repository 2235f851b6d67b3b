package forward

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/health"
	"shd-tcp-tools/internal/hostfile"
)

// choice is one host-file entry a connection may go to.
type choice struct {
	name string // the entry's HOST field, the key of its count
	ep   endpoint.Endpoint
}

// balancer picks destinations from a host file by least bytes. A host's bytes are its count
// in the file as last read or written plus what this process moved through it since
// (including connections still open); ties go to the host with fewer open connections from
// this process, then to the earlier entry. Safe for simultaneous use.
type balancer struct {
	port   int
	ledger *hostfile.Ledger

	// mu orders picks against flushes: a Flush lowers the ledger's pending counts as it
	// writes them to the file, so entries and pending change together under mu.
	mu      sync.Mutex
	entries []hostfile.Entry // as last read or written, one per name, in file order
	open    map[string]int

	// health, when set, knows the hosts set aside: they rank after all the others.
	health *health.Tracker
}

// newBalancer reads path. A file that cannot be read or has no usable entry is an error;
// malformed lines are returned as warnings.
func newBalancer(path string, port int) (*balancer, []error, error) {
	f, warn, err := hostfile.Read(path)
	if err != nil {
		return nil, nil, err
	}
	b := &balancer{port: port, ledger: hostfile.NewLedger(path), open: make(map[string]int)}
	b.setEntries(f.Entries())
	if len(b.entries) == 0 {
		return nil, warn, fmt.Errorf("host file %s: no usable entry", path)
	}
	if port == 0 {
		for _, e := range b.entries {
			if e.Port == 0 {
				return nil, warn, &NoPortError{File: path, Line: e.Line, Host: e.Host}
			}
		}
	}
	return b, warn, nil
}

// NoPortError is New's error for a host-file entry that names no port when Config.Port is
// zero: with no -p, every entry must name its own.
type NoPortError struct {
	File string
	Line int
	Host string
}

func (e *NoPortError) Error() string {
	with := e.Host
	if strings.Contains(with, ":") {
		with = "[" + with + "]"
	}
	return fmt.Sprintf("%s:%d: %s names no port: give -p PORT, or write it as %s:PORT", e.File, e.Line, e.Host, with)
}

// setEntries keeps the first entry of every name; a later duplicate never gets a count.
func (b *balancer) setEntries(es []hostfile.Entry) {
	seen := make(map[string]bool, len(es))
	b.entries = es[:0:0]
	for _, e := range es {
		if !seen[e.Name] {
			seen[e.Name] = true
			b.entries = append(b.entries, e)
		}
	}
}

// candidates returns every host, best first, and counts a connection as open on the first
// one, so that simultaneous picks spread over hosts with equal bytes. settle must follow.
func (b *balancer) candidates() []choice {
	b.mu.Lock()
	defer b.mu.Unlock()
	type ranked struct {
		c     choice
		aside bool
		bytes uint64
		open  int
	}
	rs := make([]ranked, len(b.entries))
	for i, e := range b.entries {
		port := e.Port
		if port == 0 {
			port = b.port
		}
		ep := endpoint.Endpoint{Host: e.Host, Port: port}
		rs[i] = ranked{
			c:     choice{name: e.Name, ep: ep},
			aside: b.health.Aside(ep),
			bytes: hostfile.SaturatingAdd(e.Bytes, b.ledger.Pending(e.Name)),
			open:  b.open[e.Name],
		}
	}
	slices.SortStableFunc(rs, func(x, y ranked) int {
		switch {
		case x.aside != y.aside:
			if y.aside {
				return -1
			}
			return 1
		case x.bytes != y.bytes:
			if x.bytes < y.bytes {
				return -1
			}
			return 1
		default:
			return x.open - y.open
		}
	})
	cs := make([]choice, len(rs))
	for i, r := range rs {
		cs[i] = r.c
	}
	b.open[cs[0].name]++
	return cs
}

// settle moves the open connection that candidates counted on the first host to the one
// that was reached (idx), or drops it when none was (idx < 0).
func (b *balancer) settle(cs []choice, idx int) {
	if idx == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dec(cs[0].name)
	if idx > 0 {
		b.open[cs[idx].name]++
	}
}

// settleIfAny is settle on a balancer that may be nil (a single destination).
func (b *balancer) settleIfAny(cs []choice, idx int) {
	if b != nil {
		b.settle(cs, idx)
	}
}

// release ends an open connection to name.
func (b *balancer) release(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dec(name)
}

func (b *balancer) dec(name string) {
	if b.open[name] <= 1 {
		delete(b.open, name)
		return
	}
	b.open[name]--
}

// add records n bytes moved through name. It does not take mu, so a copy never waits for a
// write-back.
func (b *balancer) add(name string, n int64) {
	if n > 0 {
		b.ledger.Add(name, uint64(n))
	}
}

// flush writes the pending counts to the file (or, with none pending, rereads it) and takes
// the file's counts, which include those of other processes sharing it, as the new base.
func (b *balancer) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	es, err := b.ledger.Flush()
	if err != nil {
		return err
	}
	if len(es) == 0 {
		return errors.New("no usable entry left; keeping the previous hosts")
	}
	b.setEntries(es)
	b.health.Retain(b.has) // a host gone from the file is checked no more
	return nil
}

// has reports whether ep is the address of one of the entries. mu is held.
func (b *balancer) has(ep endpoint.Endpoint) bool {
	for _, e := range b.entries {
		port := e.Port
		if port == 0 {
			port = b.port
		}
		if e.Host == ep.Host && port == ep.Port {
			return true
		}
	}
	return false
}
