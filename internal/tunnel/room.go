package tunnel

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
)

// room holds the peers of one port that have not proved anything yet: links before their
// handshake is done, clients (without hellos) before their first byte. It never turns a
// newcomer away; when it is full, or the newcomer's source holds its share, it pushes one
// guest out (a reset) to make room, so strangers can hold at most its capacity and can
// never keep a peer that speaks from getting in:
//
//   - guests that have made less progress go first: silent ones (nothing received yet),
//     then those that sent something but have not yet proved it is the start of the
//     protocol, then those in the middle of it (see class);
//   - a silent guest whose bytes have arrived (but not yet been seen by its own goroutine)
//     is not silent: the room looks at its socket before pushing it out;
//   - within a class, the victim is the oldest guest of the source holding the most guests
//     of that class (of the newcomer's own source when that source is at its share), so a
//     flood from one address only pushes out its own connections.
//
// Sources are IPv4 addresses and IPv6 /64 prefixes (what one host usually holds). Safe for
// simultaneous use.
type room struct {
	max, perSource int

	mu      sync.Mutex
	n       int
	seq     uint64
	sources map[netip.Prefix]*sourceGuests
}

// class is how far a guest has got; the room pushes out the lower classes first.
type class int

const (
	silent  class = iota // nothing received
	spoke                // bytes received, not yet known to be the protocol
	engaged              // in the protocol's exchange (a link past its opening)
	classes
)

// sourceGuests are one source's guests, by class, oldest first.
type sourceGuests struct {
	in [classes][]*guest
}

func (s *sourceGuests) len() int {
	n := 0
	for _, l := range s.in {
		n += len(l)
	}
	return n
}

// guest is one peer in a room.
type guest struct {
	// conn is the guest's connection, which the room resets and closes to push it out; nil
	// for a guest that an event loop serves (see enterFD).
	conn *net.TCPConn
	// fd, kick and closed, for a guest an event loop serves: its socket, open while the
	// guest is in the room (the loop takes it out before it closes the socket), what pushes
	// it out (a reset at once, the close on its loop), and closed once the loop has closed
	// it.
	fd      int
	kick    func()
	closed  *signal
	source  netip.Prefix
	seq     uint64 // arrival order
	class   class
	out     bool // no longer in the room: left or pushed out
	evicted bool // pushed out to make room
}

func newRoom(max, perSource int) *room {
	return &room{max: max, perSource: min(perSource, max), sources: make(map[netip.Prefix]*sourceGuests)}
}

// sourceOf names the source that a peer address counts against.
func sourceOf(a net.Addr) netip.Prefix {
	ap, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip, _ := netip.AddrFromSlice(ap.IP)
	return prefixOf(ip)
}

// prefixOf names the source that a peer address counts against.
func prefixOf(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// enter admits c as a guest of class cl. When that takes the room past its capacity, or
// c's source past its share, another guest is pushed out first: its connection is reset and
// closed, and it is returned so the caller can count it.
func (r *room) enter(c *net.TCPConn, cl class) (g, pushed *guest) {
	return r.admit(&guest{conn: c, source: sourceOf(c.RemoteAddr()), class: cl})
}

// enterFD admits the socket fd, served by an event loop, as a guest of class cl from
// source; kick pushes it out, and closed is closed once its loop has closed fd (see
// guest). It must leave the room before fd is closed.
func (r *room) enterFD(fd int, source netip.Prefix, cl class, kick func(), closed *signal) (g, pushed *guest) {
	return r.admit(&guest{fd: fd, kick: kick, closed: closed, source: source, class: cl})
}

// gone waits until the socket of g, pushed out by enter or enterFD, is closed (at once
// for a connection the room closed itself), or until ctx ends: so the room's capacity
// bounds the descriptors held, also while the loops close the guests it pushes out.
func (g *guest) gone(ctx context.Context) {
	if g == nil || g.closed == nil {
		return
	}
	closed := make(chan struct{})
	if !g.closed.then(func() { close(closed) }) {
		return
	}
	select {
	case <-closed:
	case <-ctx.Done():
	}
}

// whenGone is gone for a caller that must not wait (an event loop): it returns false when
// g's socket is closed already (or g is nil), and otherwise true and has f run once the
// socket is closed, on the goroutine that closes it.
func (g *guest) whenGone(f func()) bool {
	if g == nil || g.closed == nil {
		return false
	}
	return g.closed.then(f)
}

// signal is raised once; what waits for it runs then. Safe for simultaneous use.
type signal struct {
	mu      sync.Mutex
	raised  bool
	waiting []func()
}

// raise raises the signal and runs, on the calling goroutine, what waited for it.
func (s *signal) raise() {
	s.mu.Lock()
	s.raised = true
	fs := s.waiting
	s.waiting = nil
	s.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// then has f run when the signal is raised and returns true, or returns false without
// running f when it has been raised already.
func (s *signal) then(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.raised {
		return false
	}
	s.waiting = append(s.waiting, f)
	return true
}

// pending reports whether bytes have arrived for g; r.mu is held, so g's socket is open.
func (g *guest) pending() bool {
	if g.conn != nil {
		return pending(g.conn)
	}
	return fdPending(g.fd)
}

// push resets g's connection and has it closed; r.mu is held.
func (g *guest) push() {
	if g.conn == nil {
		g.kick()
		return
	}
	_ = g.conn.SetLinger(0)
	g.conn.Close()
}

// admit enters g, pushing another guest out first when the room or g's source is full.
func (r *room) admit(g *guest) (_, pushed *guest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sources[g.source]
	switch {
	case s != nil && s.len() >= r.perSource:
		pushed = r.victim(s)
	case r.n >= r.max:
		pushed = r.victim(nil)
	}
	if pushed != nil {
		r.drop(pushed)
		pushed.evicted = true
		pushed.push()
	}
	if s = r.sources[g.source]; s == nil {
		s = &sourceGuests{}
		r.sources[g.source] = s
	}
	r.seq++
	g.seq = r.seq
	s.in[g.class] = append(s.in[g.class], g)
	r.n++
	return g, pushed
}

// victim picks the guest to push out, from source s or, when s is nil, from the source
// with the most guests of the lowest class present; r.mu is held.
func (r *room) victim(s *sourceGuests) *guest {
	for {
		from, c := s, silent
		if from == nil {
			from, c = r.busiest()
		} else {
			for c < classes-1 && len(from.in[c]) == 0 {
				c++
			}
		}
		if from == nil || len(from.in[c]) == 0 {
			return nil
		}
		g := from.in[c][0]
		if c != silent || !g.pending() {
			return g
		}
		// Its first bytes are there: it spoke, it just has not been seen doing so.
		r.move(from, g, spoke)
	}
}

// busiest returns the source with the most guests of the lowest class present, and that
// class; ties go to the source whose first guest of the class is the oldest. r.mu is held.
func (r *room) busiest() (*sourceGuests, class) {
	for c := range classes {
		var best *sourceGuests
		for _, s := range r.sources {
			l := s.in[c]
			if len(l) == 0 {
				continue
			}
			if b := best; b == nil || len(l) > len(b.in[c]) || len(l) == len(b.in[c]) && l[0].seq < b.in[c][0].seq {
				best = s
			}
		}
		if best != nil {
			return best, c
		}
	}
	return nil, silent
}

// move puts g, a guest of s, into class c; r.mu is held.
func (r *room) move(s *sourceGuests, g *guest, c class) {
	if c <= g.class {
		return
	}
	if i := slices.Index(s.in[g.class], g); i >= 0 {
		s.in[g.class] = slices.Delete(s.in[g.class], i, i+1)
	}
	s.in[c] = append(s.in[c], g)
	g.class = c
}

// drop takes g out of the room; r.mu is held.
func (r *room) drop(g *guest) {
	s := r.sources[g.source]
	if i := slices.Index(s.in[g.class], g); i >= 0 {
		s.in[g.class] = slices.Delete(s.in[g.class], i, i+1)
	}
	if s.len() == 0 {
		delete(r.sources, g.source)
	}
	g.out = true
	r.n--
}

// advance records that g has got as far as class c. It returns false when g was pushed
// out before (its connection is closed).
func (r *room) advance(g *guest, c class) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g.out {
		return false
	}
	r.move(r.sources[g.source], g, c)
	return true
}

// leave takes g out of the room for good: it has proved itself, or failed. It returns
// false when g had been pushed out before (its connection is closed).
func (r *room) leave(g *guest) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g.out {
		return !g.evicted
	}
	r.drop(g)
	return true
}

// pushedOut reports whether g was pushed out to make room, and its class then.
func (r *room) pushedOut(g *guest) (class, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return g.class, g.evicted
}

// len returns the number of guests.
func (r *room) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}
