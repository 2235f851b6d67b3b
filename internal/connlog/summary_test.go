package connlog

import (
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// lines splits what was written to out into lines, once the Logger's writer, which runs
// in the test's bubble, has written what was logged.
func lines(out *testkit.LogBuf) []string {
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
		out := testkit.NewLogBuf()
		l := New(out)
		s := l.Summarise(3, 10*time.Second)
		for i := range 5000 {
			src := netip.MustParsePrefix("192.0.2.1/32")
			switch {
			case i%10 == 0:
				src = netip.MustParsePrefix("192.0.2.2/32")
			case i%100 == 1:
				src = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i / 100)}), 32) // 50 sources, more than are tracked
			}
			reason := "silent"
			if i%4 == 0 {
				reason = "pushed out"
			}
			s.Event("link refused", Warning, reason, src, "link #%d refused %s: %s", i, SourceName(src), reason)
		}
		s.Event("client refused", Info, "allow", netip.MustParsePrefix("203.0.113.9/32"), "refused 203.0.113.9: not in the allow list")
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
		s.Event("link refused", Warning, "silent", netip.MustParsePrefix("192.0.2.1/32"), "again")
		s.Flush()
		s.Flush()
		got = lines(out)
		if len(got) != 6 || !strings.HasSuffix(got[5], " again") {
			t.Errorf("second interval: %q", got[4:])
		}
		var none *Summary
		none.Event("k", Info, "r", netip.Prefix{}, "x")
		none.Flush()
	})
}

// In JSON, a summary is one object whose counts add up to the events it does not show,
// with odd reasons quoted as any other text.
func TestSummaryJSON(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := testkit.NewLogBuf()
		l := NewWith(out, Options{Format: JSON})
		s := l.Summarise(2, 10*time.Second)
		const total = 1000
		for i := range total {
			src := Block(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
			if i%3 == 0 {
				src = Block(netip.MustParseAddr("2001:db8:1:2::7"))
			}
			reason := oddNames[i%len(oddNames)]
			s.Event("failed -> 127.0.0.1:1", Error, reason, src, "failed #%d: %s", i, reason)
		}
		s.Flush()
		synctest.Wait()
		objs := decodeLines(t, out.String())
		if len(objs) != 3 {
			t.Fatalf("%d objects, want 2 lines and a summary: %v", len(objs), objs)
		}
		sum := objs[2]
		if sum["event"] != "summary" || sum["level"] != "error" || sum["kind"] != "failed -> 127.0.0.1:1" || sum["count"] != float64(total-2) {
			t.Fatalf("summary %v", sum)
		}
		n := 0.0
		for _, v := range sum["reasons"].(map[string]any) {
			n += v.(float64)
		}
		if n != total-2 {
			t.Errorf("reasons add up to %v, want %d: %v", n, total-2, sum["reasons"])
		}
		sources := sum["sources"].(map[string]any)
		n, _ = sum["sources_other"].(float64) // absent: none
		for _, v := range sources {
			n += v.(float64)
		}
		if n != total-2 || sources["192.0.2.0/24"] == nil || sources["2001:db8:1:2::/64"] == nil {
			t.Errorf("sources %v and %v others, want blocks adding up to %d", sources, sum["sources_other"], total-2)
		}
	})
}

// Allow lets the burst's events through for their own lines and counts the rest, which
// the summary gives: lines and counts add up to the events.
func TestSummaryAllow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := testkit.NewLogBuf()
		l := New(out)
		s := l.Summarise(3, 10*time.Second)
		src := Block(netip.MustParseAddr("192.0.2.77"))
		shown := 0
		for range 100 {
			if s.Allow("refused", Info, "not in the allow list", src) {
				shown++
				l.Refused("192.0.2.77:1", "not in the allow list")
			}
		}
		s.Flush()
		got := lines(out)
		want := `summary: 97 more "refused" in the last 1s: not in the allow list x97; from 192.0.2.0/24 x97`
		if shown != 3 || len(got) != 4 || !strings.HasSuffix(got[3], " "+want) {
			t.Errorf("%d shown; lines %q, want 3 and the summary %q", shown, got, want)
		}
		s.Allow("refused", Info, "not in the allow list", src)
		if allocs := testing.AllocsPerRun(100, func() { s.Allow("refused", Info, "not in the allow list", src) }); allocs != 0 {
			t.Errorf("Allow: %v allocations for a kind, reason and source seen before", allocs)
		}
		s.Flush()
	})
}

// Events with no source (the zero Prefix) are summed up without a "from" part, and
// beside events that have one, they count in the reasons only.
func TestSummaryWithoutSources(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := testkit.NewLogBuf()
		s := New(out).Summarise(1, 10*time.Second)
		for range 3 {
			s.Event("links to relay:1 failed", Warning, "refused", netip.Prefix{}, "failed")
		}
		s.Event("other", Warning, "r", netip.Prefix{}, "x")
		s.Event("other", Warning, "r", netip.MustParsePrefix("192.0.2.1/32"), "x")
		s.Event("other", Warning, "r", netip.Prefix{}, "x")
		s.Flush()
		got := lines(out)
		if len(got) != 4 {
			t.Fatalf("lines: %q", got)
		}
		if want := `summary: 2 more "links to relay:1 failed" in the last 1s: refused x2`; !strings.HasSuffix(got[2], want) {
			t.Errorf("summary line\n%s\nwant it to end\n%s", got[2], want)
		}
		if want := `summary: 2 more "other" in the last 1s: r x2; from 192.0.2.1 x1`; !strings.HasSuffix(got[3], want) {
			t.Errorf("summary line\n%s\nwant it to end\n%s", got[3], want)
		}
	})
}
