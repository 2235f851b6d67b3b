package connlog

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"shd-tcp-tools/internal/forward/fwdtest"
)

// lines splits what was written to out into lines, once the Logger's writer, which runs
// in the test's bubble, has written what was logged.
func lines(out *fwdtest.LogBuf) []string {
	synctest.Wait()
	s := strings.TrimSuffix(out.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// A flood of 5,000 events gives the burst's lines and one summary per interval, with the
// exact count, the reasons and the busiest sources.
func TestSummary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := fwdtest.NewLogBuf()
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
		got := lines(out)
		if len(got) != 4 || !strings.HasSuffix(got[2], "link #2 refused 192.0.2.1: silent") {
			t.Fatalf("before the interval ends: %q", got)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		got = lines(out)
		if len(got) != 5 {
			t.Fatalf("after the interval: %q", got)
		}
		want := `summary: 4997 more "link refused" in the last 10s: silent x3748, pushed out x1249; from 192.0.2.1 x4449, 192.0.2.2 x499, 198.51.100.1 x1, other x48`
		if !strings.HasSuffix(got[4], want) {
			t.Errorf("summary line\n%s\nwant it to end\n%s", got[4], want)
		}
		// A new interval starts with a new burst; a kind within its burst gets no summary.
		s.Event("link refused", "silent", "192.0.2.1", "again")
		s.Flush()
		s.Flush()
		got = lines(out)
		if len(got) != 6 || !strings.HasSuffix(got[5], " again") {
			t.Errorf("second interval: %q", got[4:])
		}
		var none *Summary
		none.Event("k", "r", "s", "x")
		none.Flush()
	})
}
