package connlog

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the summary's timer goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSuffix(l.b.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// A flood of 5,000 events gives the burst's lines and one summary per interval, with the
// exact count, the reasons and the busiest sources.
func TestSummary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &lockedBuffer{}
		l := New(out)
		s := l.Summarise(3, 10*time.Second)
		for i := range 5000 {
			src := "192.0.2.1"
			switch {
			case i%10 == 0:
				src = "192.0.2.2"
			case i%100 == 1:
				src = fmt.Sprintf("198.51.100.%d", i/100) // 50 sources, more than are tracked
			}
			reason := "silent"
			if i%4 == 0 {
				reason = "pushed out"
			}
			s.Event("link refused", reason, src, "link #%d refused %s: %s", i, src, reason)
		}
		s.Event("client refused", "allow", "203.0.113.9", "refused 203.0.113.9: not in the allow list")
		if n := s.Count("link refused"); n != 5000 {
			t.Errorf("Count: %d, want 5000", n)
		}
		lines := out.lines()
		if len(lines) != 4 || !strings.HasSuffix(lines[2], "link #2 refused 192.0.2.1: silent") {
			t.Fatalf("before the interval ends: %q", lines)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		lines = out.lines()
		if len(lines) != 5 {
			t.Fatalf("after the interval: %q", lines)
		}
		want := `summary: 4997 more "link refused" in the last 10s: silent x3748, pushed out x1249; from 192.0.2.1 x4449, 192.0.2.2 x499, 198.51.100.1 x1, other x48`
		if !strings.HasSuffix(lines[4], want) {
			t.Errorf("summary line\n%s\nwant it to end\n%s", lines[4], want)
		}
		// A new interval starts with a new burst; a kind within its burst gets no summary.
		s.Event("link refused", "silent", "192.0.2.1", "again")
		s.Flush()
		s.Flush()
		lines = out.lines()
		if len(lines) != 6 || !strings.HasSuffix(lines[5], " again") {
			t.Errorf("second interval: %q", lines[4:])
		}
		var none *Summary
		none.Event("k", "r", "s", "x")
		none.Flush()
	})
}
