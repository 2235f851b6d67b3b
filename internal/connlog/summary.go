package connlog

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Summary keeps a flood of similar events from flooding the log: of each kind of event
// it writes the first Burst lines of every Interval one by one, then only counts, and when
// the interval ends writes one line with how many more there were, why (the reasons with
// their counts) and from where (the busiest sources):
//
//	2026-11-26T05:39:20.000Z summary: 4980 more "link refused" in the last 10s: sent nothing within 2s x4000, pushed out by newer connections x980; from 127.0.0.1 x4900, 192.0.2.7 x80
//
// A source is an address block: an IPv4 /32 or an IPv6 /128 is named by its address, a
// wider block as ADDR/BITS. What a Summary holds is bounded: at most maxTracked reasons and
// sources per kind are named; the rest are counted as "other". Every event is either
// written as its own line or counted in a summary line, so the lines of a kind and the
// counts of its summaries add up to its events. The lines and the summary of a kind are
// written at the kind's level: a quiet Logger's Summary neither writes nor counts Info
// events. An event with no source (the zero Prefix: one whose kind names where it comes
// from, as connecttwo's links to its one relay) is counted without one, and a summary
// with no source names none ("from" is left out). Safe for simultaneous use. A nil *Summary writes nothing.
type Summary struct {
	log      *Logger
	burst    int
	interval time.Duration

	mu    sync.Mutex
	kinds map[string]*kindCount
	timer *time.Timer // runs while an interval is open
	start time.Time
}

// maxTracked bounds the reasons and the sources a Summary names per kind and interval.
const maxTracked = 32

// namedInSummary is how many sources a summary line names, busiest first.
const namedInSummary = 3

type kindCount struct {
	level           Level
	logged, dropped int
	reasons         tally[string]
	sources         tally[netip.Prefix]
}

// tally counts events by key, naming at most maxTracked keys.
type tally[K comparable] struct {
	n     map[K]int
	other int
}

func (t *tally[K]) add(key K) {
	if t.n == nil {
		t.n = make(map[K]int)
	}
	if _, ok := t.n[key]; ok || len(t.n) < maxTracked {
		t.n[key]++
		return
	}
	t.other++
}

// counted is a name and its count in a summary.
type counted struct {
	name string
	n    int
}

// top returns up to k keys by name with their counts, largest first (ties by name), and
// the count of the others.
func (t *tally[K]) top(k int, name func(K) string) (named []counted, other int) {
	named = make([]counted, 0, len(t.n))
	for key, n := range t.n {
		named = append(named, counted{name(key), n})
	}
	slices.SortFunc(named, func(a, b counted) int {
		return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.name, b.name))
	})
	other = t.other
	if len(named) > k {
		for _, c := range named[k:] {
			other += c.n
		}
		named = named[:k]
	}
	return named, other
}

// words returns "name xN" words, and "other xN" last, joined by commas.
func words(named []counted, other int) string {
	w := make([]string, 0, len(named)+1)
	for _, c := range named {
		w = append(w, fmt.Sprintf("%s x%d", c.name, c.n))
	}
	if other > 0 {
		w = append(w, fmt.Sprintf("other x%d", other))
	}
	return strings.Join(w, ", ")
}

// jsonCounts appends "k":{"name":N,...} and, when other is not 0, "k_other":N.
func jsonCounts(b []byte, k string, named []counted, other int) []byte {
	b = append(jsonKey(b, k), '{')
	for i, c := range named {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendJSONString(b, c.name), ':')
		b = fmt.Append(b, c.n)
	}
	b = append(b, '}')
	if other > 0 {
		b = jsonUint(b, k+"_other", uint64(other))
	}
	return b
}

// SourceName names an address block as a summary does: an IPv4 /32 or IPv6 /128 by its
// address, a wider one as ADDR/BITS.
func SourceName(p netip.Prefix) string {
	if p.IsValid() && p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// Block returns the block a's events are counted under: its /24 for IPv4, its /64 for
// IPv6, as a flood from one network shows in one count.
func Block(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 24
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// Summarise returns a Summary writing to l: burst lines of each kind per interval, then a
// summary line at the end of the interval.
func (l *Logger) Summarise(burst int, interval time.Duration) *Summary {
	return &Summary{log: l, burst: burst, interval: interval, kinds: make(map[string]*kindCount)}
}

// Allow records one event of kind, at level v, for reason from source, and reports whether
// the caller is to write the event's own line: true while the kind is within its burst
// for this interval, false once it is only counted (and for an Info event when the Logger
// is quiet). It allocates nothing for a kind, reason and source it has seen this interval.
func (s *Summary) Allow(kind string, v Level, reason string, source netip.Prefix) bool {
	if s == nil || !s.log.Enabled(v) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allowLocked(kind, v, reason, source)
}

func (s *Summary) allowLocked(kind string, v Level, reason string, source netip.Prefix) bool {
	if s.timer == nil {
		s.start = time.Now()
		s.timer = time.AfterFunc(s.interval, s.Flush)
	}
	k := s.kinds[kind]
	if k == nil {
		k = &kindCount{}
		s.kinds[kind] = k
	}
	k.level = v
	if k.logged < s.burst {
		k.logged++
		return true
	}
	k.dropped++
	k.reasons.add(reason)
	if source.IsValid() {
		k.sources.add(source)
	}
	return false
}

// Event records one event as Allow does, and writes line (formatted as Printf does, at
// level v) if the kind is still within its burst; the line is written before any summary
// that follows it.
func (s *Summary) Event(kind string, v Level, reason string, source netip.Prefix, format string, args ...any) {
	if s == nil || !s.log.Enabled(v) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.allowLocked(kind, v, reason, source) {
		s.log.Logf(v, format, args...)
	}
}

// Count returns how many events of kind the current interval has had, logged or not.
func (s *Summary) Count(kind string) int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.kinds[kind]; k != nil {
		return k.logged + k.dropped
	}
	return 0
}

// Flush ends the interval now: it writes a summary line for every kind that had events
// beyond its burst, and starts counting afresh. Call it when the program stops, so the
// last interval's counts are not lost.
func (s *Summary) Flush() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer == nil {
		return
	}
	s.timer.Stop()
	s.timer = nil
	took := max(time.Since(s.start).Round(time.Second), time.Second)
	kinds := make([]string, 0, len(s.kinds))
	for kind, k := range s.kinds {
		if k.dropped > 0 {
			kinds = append(kinds, kind)
		}
	}
	slices.Sort(kinds)
	for _, kind := range kinds {
		k := s.kinds[kind]
		reasons, otherReasons := k.reasons.top(maxTracked, func(r string) string { return r })
		sources, otherSources := k.sources.top(namedInSummary, SourceName)
		s.log.summary(k.level, kind, k.dropped, took, reasons, otherReasons, sources, otherSources)
	}
	clear(s.kinds)
}

// summary writes a Summary's line for kind.
func (l *Logger) summary(v Level, kind string, n int, took time.Duration, reasons []counted, otherReasons int, sources []counted, otherSources int) {
	if !l.Enabled(v) {
		return
	}
	l.begin(v, "summary")
	if l.opt.Format == JSON {
		l.pending = jsonStr(l.pending, "kind", kind)
		l.pending = jsonUint(l.pending, "count", uint64(n))
		l.pending = jsonFloat(l.pending, "seconds", took.Seconds(), -1)
		l.pending = jsonCounts(l.pending, "reasons", reasons, otherReasons)
		l.pending = jsonCounts(l.pending, "sources", sources, otherSources)
	} else {
		l.pending = fmt.Appendf(l.pending, "summary: %d more %q in the last %v: %s",
			n, kind, took, words(reasons, otherReasons))
		if len(sources) > 0 || otherSources > 0 {
			l.pending = fmt.Appendf(l.pending, "; from %s", words(sources, otherSources))
		}
	}
	l.end()
}
