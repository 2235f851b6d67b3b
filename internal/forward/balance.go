package forward

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/health"
	"shd-tcp-tools/internal/hostfile"
)

// Store is where the balancer's counts live between processes and across runs: the host
// file is the one store today (*hostfile.Store). The balancer only ever reads all entries,
// adds the counts it moved, and hears of changes; the loops never touch the Store (they
// reach only the balancer's index, see pick), so a store shared by several machines can
// take its place without any change to them. Implementations are safe for simultaneous use.
type Store interface {
	// Read returns the entries in order, with warnings about what could not be used.
	Read() ([]hostfile.Entry, []error, error)
	// Add adds counts, by entry name, to the entries the store has, atomically and in
	// the presence of other writers, and returns the entries as they are after it. A name
	// the store has no entry for is not added. When ctx ends before the store could be
	// had (a lock another process holds), the error matches hostfile.ErrLocked and
	// nothing is added.
	Add(ctx context.Context, counts map[string]uint64) ([]hostfile.Entry, error)
	// Watch calls changed soon after the entries may have changed by another hand, until
	// ctx ends.
	Watch(ctx context.Context, changed func()) error
	// String names the store in messages.
	String() string
}

// hostEntry is one host the balancer may send a connection to. A connection holds on to
// the entry it was given, so that a reread cannot lose its bytes: an entry that leaves the
// store stays alive, out of the index, while connections or unwritten bytes have it.
type hostEntry struct {
	name string // the entry's HOST field, the key of its count in the store
	ep   endpoint.Endpoint

	// pending is the bytes moved through the host and not yet written to the store:
	// the loops add to it without a lock; only a write-back lowers it.
	pending atomic.Uint64

	// Under balancer.mu:
	base    uint64 // the count in the store as last read or written
	written uint64 // the bytes of pending that write-backs took to the store
	open    int    // connections being set up or relayed to the host
	rank    int    // 0, or 1 for a host the health tracker set aside: see rerank
	order   int    // the place in the store's order
	key     uint64 // base+pending when the entry was last placed in the heap
	idx     int    // the place in the heap; -1 when the store no longer has the entry
}

// bytes is the host's count as the ranking sees it: the store's count plus the bytes moved
// since it was written.
func (e *hostEntry) bytes() uint64 { return hostfile.SaturatingAdd(e.base, e.pending.Load()) }

// addPending records n more bytes, saturating at 2^64-1.
func (e *hostEntry) addPending(n uint64) {
	for {
		old := e.pending.Load()
		if e.pending.CompareAndSwap(old, hostfile.SaturatingAdd(old, n)) {
			return
		}
	}
}

// balancer picks destinations from a Store by least bytes. A host's bytes are its count
// in the store as last read or written plus what this process moved through it since
// (including connections still open); ties go to the host with fewer open connections from
// this process, then to the earlier entry.
//
// The hosts are kept in a binary heap ordered by (rank, bytes, open, order), so that a pick
// costs O(log n) whatever the size of the file, and no connection holds a copy of the
// list. Bytes move on every splice, without the lock: an entry's key in the heap is its
// bytes when it was last placed, never more than its bytes now, and a pick that finds a
// key behind the bytes places that entry again before it trusts the order (see best).
// Everything else that orders the heap changes under mu, which is held for a pick, a
// release and the publication of a write-back or a reread, never while the store is
// written or read. Safe for simultaneous use.
type balancer struct {
	port  int
	store Store

	// health, when set, knows the hosts set aside: they rank after all the others.
	health *health.Tracker

	mu        sync.Mutex
	heap      []*hostEntry
	byName    map[string]*hostEntry // the store's entries, and those that left it but still have connections or bytes
	healthVer uint64                // the health.Tracker's version that the ranks are from
}

// newBalancer reads store. A store that cannot be read or has no usable entry is an error;
// malformed lines are returned as warnings.
func newBalancer(store Store, port int) (*balancer, []error, error) {
	es, warn, err := store.Read()
	if err != nil {
		return nil, nil, err
	}
	if len(es) == 0 {
		return nil, warn, fmt.Errorf("host file %s: no usable entry", store)
	}
	if port == 0 {
		for _, e := range es {
			if e.Port == 0 {
				return nil, warn, &NoPortError{File: store.String(), Line: e.Line, Host: e.Host}
			}
		}
	}
	b := &balancer{port: port, store: store, byName: make(map[string]*hostEntry)}
	b.mu.Lock()
	b.setEntries(es, nil)
	b.mu.Unlock()
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

// change says what a reread or a write-back changed in the set of hosts.
type change struct {
	added, removed []string
	noPort         []error // entries that name no port, with no -p: not used
}

// setEntries makes es (the store's entries, in order) the hosts, with written, when not
// nil, the counts that es include and that are pending no longer. The first entry of every
// name counts; a later duplicate never gets a count. A host that is no longer in es leaves
// the heap but keeps its pending bytes (should it come back) while anything refers to it.
// It returns what changed, and must be called with mu held.
func (b *balancer) setEntries(es []hostfile.Entry, written map[string]uint64) change {
	var ch change
	present := make(map[string]bool, len(es))
	b.heap = b.heap[:0]
	for _, fe := range es {
		if present[fe.Name] {
			continue
		}
		if fe.Port == 0 && b.port == 0 {
			ch.noPort = append(ch.noPort, &NoPortError{File: b.store.String(), Line: fe.Line, Host: fe.Host})
			continue
		}
		present[fe.Name] = true
		e := b.byName[fe.Name]
		if e == nil {
			port := fe.Port
			if port == 0 {
				port = b.port
			}
			e = &hostEntry{name: fe.Name, ep: endpoint.Endpoint{Host: fe.Host, Port: port}, idx: -1}
			b.byName[fe.Name] = e
		}
		if e.idx < 0 {
			ch.added = append(ch.added, e.name)
		}
		if n := written[fe.Name]; n > 0 {
			// Only a write-back lowers pending, and write-backs are one at a time, so
			// pending >= n: what was added since the counts were taken stays.
			e.pending.Add(^(n - 1))
			e.written += n
		}
		e.base = fe.Bytes
		e.order = len(b.heap)
		e.idx = len(b.heap)
		b.heap = append(b.heap, e)
	}
	for name, e := range b.byName {
		if present[name] {
			continue
		}
		if e.idx >= 0 {
			ch.removed = append(ch.removed, name)
			e.idx = -1
		}
		if e.open == 0 && e.pending.Load() == 0 {
			delete(b.byName, name)
		}
	}
	b.healthVer = b.health.Version()
	b.rankAll()
	return ch
}

// less orders the heap: rank, bytes (as last placed), open connections, store order.
func (b *balancer) less(i, j int) bool {
	x, y := b.heap[i], b.heap[j]
	switch {
	case x.rank != y.rank:
		return x.rank < y.rank
	case x.key != y.key:
		return x.key < y.key
	case x.open != y.open:
		return x.open < y.open
	}
	return x.order < y.order
}

func (b *balancer) swap(i, j int) {
	h := b.heap
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}

func (b *balancer) up(i int) bool {
	moved := false
	for i > 0 {
		p := (i - 1) / 2
		if !b.less(i, p) {
			break
		}
		b.swap(i, p)
		i, moved = p, true
	}
	return moved
}

func (b *balancer) down(i int) {
	for n := len(b.heap); ; {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && b.less(r, l) {
			m = r
		}
		if !b.less(m, i) {
			return
		}
		b.swap(i, m)
		i = m
	}
}

// fix places e again after its rank, open count or bytes changed.
func (b *balancer) fix(e *hostEntry) {
	if e.idx < 0 {
		return
	}
	e.key = e.bytes()
	if !b.up(e.idx) {
		b.down(e.idx)
	}
}

// pick returns the best host that is not in tried (the hosts a connection tried already)
// and counts a connection open on it, so that simultaneous picks spread over hosts with
// equal bytes; nil when every host was tried. release must follow. It costs O(log n), or
// O(k log k) more for k hosts tried, and allocates nothing for a first pick.
func (b *balancer) pick(tried []*hostEntry) *hostEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rerank()
	e := b.best(tried)
	if e != nil {
		e.open++
		b.fix(e)
	}
	return e
}

// Next is the balancer as a failover source (endpoint.Source): pick, counting the
// connection open on the host returned.
func (b *balancer) Next(tried []*hostEntry) (*hostEntry, bool) {
	e := b.pick(tried)
	return e, e != nil
}

// best returns the first host in the order that is not in tried. It walks the heap from
// the top, best first, keeping the frontier of nodes not yet looked at; a node whose key is
// behind its bytes is placed again and the walk starts over. The first node that is up to
// date and not tried is the best: every node not yet looked at is below a frontier node,
// whose key is no less, and its bytes are no less than its key.
func (b *balancer) best(tried []*hostEntry) *hostEntry {
	var buf [8]int
walk:
	for len(b.heap) > 0 {
		frontier := append(buf[:0], 0)
		for len(frontier) > 0 {
			m := 0
			for k := 1; k < len(frontier); k++ {
				if b.less(frontier[k], frontier[m]) {
					m = k
				}
			}
			i := frontier[m]
			frontier[m] = frontier[len(frontier)-1]
			frontier = frontier[:len(frontier)-1]
			e := b.heap[i]
			if e.key != e.bytes() {
				b.fix(e)
				continue walk
			}
			if !triedIn(tried, e) {
				return e
			}
			for _, c := range [2]int{2*i + 1, 2*i + 2} {
				if c < len(b.heap) {
					frontier = append(frontier, c)
				}
			}
		}
		return nil
	}
	return nil
}

func triedIn(tried []*hostEntry, e *hostEntry) bool {
	for _, t := range tried {
		if t == e {
			return true
		}
	}
	return false
}

// release ends a connection (or an attempt) that pick counted open on e.
func (b *balancer) release(e *hostEntry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e.open--
	if e.idx >= 0 {
		b.fix(e)
	} else if e.open == 0 && e.pending.Load() == 0 && b.byName[e.name] == e {
		delete(b.byName, e.name)
	}
}

// rerank takes up the health tracker's view of the hosts when it changed since the last
// look: a host set aside (rank 1) is picked only after every healthy one (rank 0), and still
// picked, in its turn, when every host is set aside. This is the hook of the health
// checks: the tracker's version is one atomic load per pick, and only a change (a host set
// aside or back) costs a pass over the hosts, O(n). mu is held.
func (b *balancer) rerank() {
	v := b.health.Version()
	if v == b.healthVer {
		return
	}
	b.healthVer = v
	b.rankAll()
}

// rankAll sets every host's rank from the health tracker and rebuilds the heap. mu is held.
func (b *balancer) rankAll() {
	for _, e := range b.heap {
		e.rank = 0
		if b.health.Aside(e.ep) {
			e.rank = 1
		}
		e.key = e.bytes()
	}
	for i := len(b.heap)/2 - 1; i >= 0; i-- {
		b.down(i)
	}
}

// add records n bytes moved through e. It takes no lock, so a copy never waits for a pick
// or a write-back.
func (b *balancer) add(e *hostEntry, n int64) {
	if n > 0 {
		e.addPending(uint64(n))
	}
}

// pendingCounts returns the bytes not yet written, by host: only the hosts the store has,
// when inStore, or only those that left it otherwise.
func (b *balancer) pendingCounts(inStore bool) map[string]uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	counts := make(map[string]uint64)
	for name, e := range b.byName {
		if n := e.pending.Load(); n > 0 && (e.idx >= 0) == inStore {
			counts[name] = n
		}
	}
	return counts
}

// unwritten returns the pending counts of the hosts the store has, in the store's order.
func (b *balancer) unwritten() []Count {
	b.mu.Lock()
	defer b.mu.Unlock()
	var es []*hostEntry
	for _, e := range b.byName {
		if e.idx >= 0 && e.pending.Load() > 0 {
			es = append(es, e)
		}
	}
	slices.SortFunc(es, func(x, y *hostEntry) int { return x.order - y.order })
	cs := make([]Count, len(es))
	for i, e := range es {
		cs[i] = Count{Host: e.name, Bytes: e.pending.Load()}
	}
	return cs
}

// errNoEntry is the error of a reread or a write-back after which the store has no usable
// entry; the balancer keeps the hosts it had.
var errNoEntry = errors.New("no usable entry left; keeping the previous hosts")

// errNothingToWrite is writeBack's error when no count is pending: the store was not
// touched (a round rereads it instead).
var errNothingToWrite = errors.New("no counts to write")

// writeBack adds the pending counts to the store and takes the store's counts, which
// include those of other processes sharing it, as the new base. The store is written
// without mu: picks go on meanwhile, and the result is published in one step. It waits for
// the store's lock until ctx ends, and on any error the counts stay pending; with nothing
// pending it returns errNothingToWrite. Write-backs and rereads must not run at once.
func (b *balancer) writeBack(ctx context.Context) (change, error) {
	counts := b.pendingCounts(true)
	if len(counts) == 0 {
		return change{}, errNothingToWrite
	}
	es, err := b.store.Add(ctx, counts)
	if err != nil {
		return change{}, err
	}
	return b.publish(es, counts)
}

// reread reads the store and takes its entries and counts, keeping every pending count.
// It returns the warnings the store gave.
func (b *balancer) reread() (change, []error, error) {
	es, warn, err := b.store.Read()
	if err != nil {
		return change{}, warn, err
	}
	ch, err := b.publish(es, nil)
	return ch, warn, err
}

func (b *balancer) publish(es []hostfile.Entry, written map[string]uint64) (change, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.usable(es) {
		// The counts were written, if any (the store had none of their hosts).
		return change{}, errNoEntry
	}
	ch := b.setEntries(es, written)
	if len(ch.removed) > 0 {
		b.health.Retain(b.has) // a host gone from the file is checked no more
	}
	return ch, nil
}

// usable reports whether es has an entry the balancer can use.
func (b *balancer) usable(es []hostfile.Entry) bool {
	for _, e := range es {
		if e.Port != 0 || b.port != 0 {
			return true
		}
	}
	return false
}

// HostStats is one host-file entry as the balancer sees it, for the metrics.
type HostStats struct {
	// Name is the entry's HOST field (with its port when it names one).
	Name string
	// Bytes is the count the entry is ranked by: the store's count as last read or
	// written plus the bytes this process moved since.
	Bytes uint64
	// Relayed is the bytes this process moved through the host since it started (or
	// since the entry came back to the store, after it had left it).
	Relayed uint64
	// Open is the connections being set up to or relayed through the host.
	Open int
	// Aside reports whether the health checks set the host aside.
	Aside bool
}

// stats returns every entry of the store, in the store's order.
func (b *balancer) stats() []HostStats {
	b.mu.Lock()
	hs := make([]HostStats, len(b.heap))
	for _, e := range b.heap {
		// pending is read under mu, so a write-back is either in written or in pending:
		// Relayed never goes back.
		hs[e.order] = HostStats{Name: e.name, Bytes: e.bytes(), Relayed: e.written + e.pending.Load(), Open: e.open,
			Aside: b.health.Aside(e.ep)}
	}
	b.mu.Unlock()
	return hs
}

// openCounts returns the open connections by host, for tests.
func (b *balancer) openCounts() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := make(map[string]int)
	for name, e := range b.byName {
		if e.open != 0 {
			m[name] = e.open
		}
	}
	return m
}

// pendingOf returns the bytes moved through name and not yet written, for tests.
func (b *balancer) pendingOf(name string) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.byName[name]; e != nil {
		return e.pending.Load()
	}
	return 0
}

// has reports whether ep is the address of one of the entries. mu is held.
func (b *balancer) has(ep endpoint.Endpoint) bool {
	for _, e := range b.heap {
		if e.ep == ep {
			return true
		}
	}
	return false
}
