package health

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"shd-tcp-tools/internal/endpoint"
)

var (
	epA = endpoint.Endpoint{Host: "192.0.2.1", Port: 80}
	epB = endpoint.Endpoint{Host: "2001:db8::2", Port: 80}
)

// script is a host that fails its first fails checks, each taking took.
type script struct {
	mu    sync.Mutex
	fails int
	took  time.Duration
	at    []time.Duration // when each check started, since start
	start time.Time
}

func (s *script) checks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at)
}

func (s *script) check(ctx context.Context, ep endpoint.Endpoint) error {
	s.mu.Lock()
	s.at = append(s.at, time.Since(s.start))
	fail := len(s.at) <= s.fails
	s.mu.Unlock()
	select {
	case <-time.After(s.took):
	case <-ctx.Done():
		return ctx.Err()
	}
	if fail {
		return errors.New("connection refused")
	}
	return nil
}

// logs collects log lines.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logs) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fails int           // checks that fail before one succeeds
		took  time.Duration // each check's own time
		at    []time.Duration
	}{
		{"first check succeeds", 0, 0, []time.Duration{1}},
		{"doubling", 3, 0, []time.Duration{1, 3, 7, 15}},
		{"capped at 30s", 7, 0, []time.Duration{1, 3, 7, 15, 31, 61, 91, 121}},
		{"waits count after each check", 2, 2 * time.Second, []time.Duration{1, 5, 11}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &script{fails: tc.fails, took: tc.took, start: time.Now()}
				var l logs
				tr := New(s.check, l.logf)
				defer tr.Close()
				if tr.Aside(epA) {
					t.Fatal("aside before any failure")
				}
				l.logf("%s", tr.Failed(epA, errors.New("connection refused")))
				if line := tr.Failed(epA, errors.New("connection refused")); line != "" { // once is enough
					t.Errorf("a second failure logged %q", line)
				}
				if !tr.Aside(epA) || tr.Aside(epB) {
					t.Fatalf("after a failure of A: aside A %v, B %v; want true, false", tr.Aside(epA), tr.Aside(epB))
				}
				last := tc.at[len(tc.at)-1] * time.Second
				time.Sleep(last + tc.took - time.Nanosecond)
				if !tr.Aside(epA) {
					t.Errorf("A returned before its last check ended")
				}
				time.Sleep(time.Nanosecond)
				synctest.Wait()
				if tr.Aside(epA) {
					t.Errorf("A still aside after a check succeeded")
				}
				want := make([]time.Duration, len(tc.at))
				for i, a := range tc.at {
					want[i] = a * time.Second
				}
				s.mu.Lock()
				got := slices.Clone(s.at)
				s.mu.Unlock()
				if !slices.Equal(got, want) {
					t.Errorf("checks at %v, want %v", got, want)
				}
				if a, b := l.count("host 192.0.2.1:80 set aside (connection refused)"), l.count("host 192.0.2.1:80 back in service"); a != 1 || b != 1 {
					t.Errorf("%d set-aside and %d back lines, want 1 each: %q", a, b, l.lines)
				}
				time.Sleep(time.Minute)
				if n := s.checks(); n != len(tc.at) {
					t.Errorf("%d checks after A returned, want none", n-len(tc.at))
				}
			})
		})
	}
}

// A client's successful connection brings a host back at once, and a failed one sets it
// aside again with the back-off from its start.
func TestOKReturnsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{fails: 100, start: time.Now()}
		var l logs
		tr := New(s.check, l.logf)
		defer tr.Close()
		l.logf("%s", tr.Failed(epB, errors.New("connection timed out")))
		time.Sleep(10 * time.Second) // checks at 1, 3, 7
		l.logf("%s", tr.OK(epB))
		if tr.Aside(epB) {
			t.Fatal("aside after a connection to it succeeded")
		}
		if l.count("host [2001:db8::2]:80 back in service after 10s: a connection to it succeeded (3 checks had failed)") != 1 {
			t.Errorf("log: %q", l.lines)
		}
		l.logf("%s", tr.Failed(epB, errors.New("connection timed out")))
		time.Sleep(1500 * time.Millisecond)
		if n := s.checks(); n != 4 {
			t.Errorf("%d checks, want the 3 before and one 1s after the new failure", n)
		}
		if line := tr.OK(epA); line != "" { // not aside: nothing happens
			t.Errorf("OK of a host not aside: %q", line)
		}
		if l.count("set aside (") != 2 || l.count("back in service") != 1 {
			t.Errorf("log: %q", l.lines)
		}
	})
}

// Forget and Retain drop hosts silently, and Close ends the checks, even one that is running.
func TestForgetAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{fails: 100, took: time.Hour, start: time.Now()}
		var l logs
		tr := New(s.check, l.logf)
		tr.Failed(epA, errors.New("refused"))
		tr.Failed(epB, errors.New("refused"))
		tr.Forget(epA)
		if tr.Aside(epA) || !tr.Aside(epB) {
			t.Errorf("after Forget(A): aside A %v, B %v", tr.Aside(epA), tr.Aside(epB))
		}
		tr.Failed(epA, errors.New("refused"))
		tr.Retain(func(ep endpoint.Endpoint) bool { return ep == epB })
		if tr.Aside(epA) || !tr.Aside(epB) {
			t.Errorf("after keeping only B: aside A %v, B %v", tr.Aside(epA), tr.Aside(epB))
		}
		time.Sleep(2 * time.Second) // B's check is running, for an hour
		start := time.Now()
		tr.Close()
		if d := time.Since(start); d != 0 {
			t.Errorf("Close waited %v for a running check", d)
		}
		tr.Failed(epA, errors.New("refused"))
		if tr.Aside(epA) {
			t.Error("set aside after Close")
		}
		if n := s.checks(); n != 1 {
			t.Errorf("%d checks, want only B's", n)
		}
		if l.count("back in service") != 0 {
			t.Errorf("log: %q", l.lines)
		}
	})
}

// A nil Tracker sets nothing aside.
func TestNil(t *testing.T) {
	var tr *Tracker
	tr.Failed(epA, errors.New("refused"))
	tr.OK(epA)
	tr.Forget(epA)
	tr.Close()
	if tr.Aside(epA) {
		t.Error("a nil Tracker set a host aside")
	}
}
