package connlog

import (
	"cmp"
	"fmt"
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
// What it holds is bounded: at most maxTracked reasons and sources per kind are named; the
// rest are counted as "other". Safe for simultaneous use. A nil *Summary writes nothing.
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
	logged, dropped int
	reasons         tally
	sources         tally
}

// tally counts events by name, naming at most maxTracked of them.
type tally struct {
	n     map[string]int
	other int
}

func (t *tally) add(name string) {
	if t.n == nil {
		t.n = make(map[string]int)
	}
	if _, ok := t.n[name]; ok || len(t.n) < maxTracked {
		t.n[name]++
		return
	}
	t.other++
}

// top returns up to k "name xN" words, largest first (ties by name), and "other xN".
func (t *tally) top(k int) string {
	names := make([]string, 0, len(t.n))
	for name := range t.n {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(t.n[b], t.n[a]), cmp.Compare(a, b))
	})
	other := t.other
	if len(names) > k {
		for _, name := range names[k:] {
			other += t.n[name]
		}
		names = names[:k]
	}
	words := make([]string, 0, len(names)+1)
	for _, name := range names {
		words = append(words, fmt.Sprintf("%s x%d", name, t.n[name]))
	}
	if other > 0 {
		words = append(words, fmt.Sprintf("other x%d", other))
	}
	return strings.Join(words, ", ")
}

// Summarise returns a Summary writing to l: burst lines of each kind per interval, then a
// summary line at the end of the interval.
func (l *Logger) Summarise(burst int, interval time.Duration) *Summary {
	return &Summary{log: l, burst: burst, interval: interval, kinds: make(map[string]*kindCount)}
}

// Event records one event of kind for reason from source, and writes line (formatted as
// Printf does) if the kind is still within its burst for this interval.
func (s *Summary) Event(kind, reason, source, format string, args ...any) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer == nil {
		s.start = time.Now()
		s.timer = time.AfterFunc(s.interval, s.Flush)
	}
	k := s.kinds[kind]
	if k == nil {
		k = &kindCount{}
		s.kinds[kind] = k
	}
	if k.logged < s.burst {
		k.logged++
		s.log.Printf(format, args...)
		return
	}
	k.dropped++
	k.reasons.add(reason)
	k.sources.add(source)
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
	took := time.Since(s.start).Round(time.Second)
	kinds := make([]string, 0, len(s.kinds))
	for kind, k := range s.kinds {
		if k.dropped > 0 {
			kinds = append(kinds, kind)
		}
	}
	slices.Sort(kinds)
	for _, kind := range kinds {
		k := s.kinds[kind]
		s.log.Printf("summary: %d more %q in the last %v: %s; from %s",
			k.dropped, kind, max(took, time.Second), k.reasons.top(maxTracked), k.sources.top(namedInSummary))
	}
	clear(s.kinds)
}
