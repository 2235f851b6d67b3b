package meter

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// feed runs p in the caller's bubble: it adds each of adds in the middle of a second (so
// that no add races a tick), lets one more second pass without data, stops the reporter
// at 4.5 s after the last add's second and prints the summary.
func feed(t *testing.T, p *Progress, adds []int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	synctest.Wait() // Run has marked the start
	time.Sleep(500 * time.Millisecond)
	for _, n := range adds {
		p.Add(n)
		time.Sleep(time.Second)
	}
	time.Sleep(time.Second) // an idle tick: no report
	synctest.Wait()
	cancel()
	<-done
	p.Finish()
}

func TestProgressLines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := testkit.NewLogBuf()
		p := &Progress{Out: out, Prefix: "tcppipe:"}
		feed(t, p, []int64{1 << 20, 1 << 20, 0, 1 << 20})
		want := "tcppipe: 1.00 MiB, 1.00 MiB/s now, 1.00 MiB/s average\n" +
			"tcppipe: 2.00 MiB, 1.00 MiB/s now, 1.00 MiB/s average\n" +
			// the second with no data has no report
			"tcppipe: 3.00 MiB, 1.00 MiB/s now, 768.00 KiB/s average\n" +
			"tcppipe: 3145728 bytes (3.00 MiB) in 5.500 s, 558.55 KiB/s average\n"
		if got := out.String(); got != want {
			t.Errorf("got\n%s\nwant\n%s", got, want)
		}
		if p.Bytes() != 3<<20 {
			t.Errorf("Bytes() = %d; want %d", p.Bytes(), 3<<20)
		}
	})
}

func TestProgressTerminal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := testkit.NewLogBuf()
		p := &Progress{Out: out, Terminal: true, Interval: time.Second, Prefix: "tcppipe:"}
		// 1000 KiB then 1000 KiB more: the second report is shorter than the first and
		// must blank the first one's tail.
		feed(t, p, []int64{1000 << 10, 1000 << 10})
		got := out.String()
		if !strings.HasPrefix(got, "\r") || !strings.HasSuffix(got, "\n") || strings.Count(got, "\n") != 1 {
			t.Fatalf("terminal output %q: want \\r-led updates and one final newline", got)
		}
		parts := strings.Split(strings.TrimSuffix(got[1:], "\n"), "\r")
		want := []string{
			"tcppipe: 1000.00 KiB, 1000.00 KiB/s now, 1000.00 KiB/s average",
			"tcppipe: 1.95 MiB, 1000.00 KiB/s now, 1000.00 KiB/s average",
			"tcppipe: 2048000 bytes (1.95 MiB) in 3.500 s, 571.43 KiB/s average",
		}
		if len(parts) != len(want) {
			t.Fatalf("terminal output %q: %d updates; want %d", got, len(parts), len(want))
		}
		for i, w := range want {
			if strings.TrimRight(parts[i], " ") != w {
				t.Errorf("update %d = %q; want %q", i, parts[i], w)
			}
			if i > 0 && len(parts[i]) < len(parts[i-1]) {
				t.Errorf("update %d (%d chars) does not cover update %d (%d chars)", i, len(parts[i]), i-1, len(parts[i-1]))
			}
		}
	})
}

// TestProgressNothingAfterFinish checks that a reporter still running when Finish prints
// the summary prints nothing more: the summary is the last line.
func TestProgressNothingAfterFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := testkit.NewLogBuf()
		p := &Progress{Out: out, Interval: 100 * time.Millisecond, Prefix: "x:"}
		go p.Run(t.Context())
		synctest.Wait()
		p.Add(10)
		time.Sleep(150 * time.Millisecond)
		p.Finish()
		p.Add(10)
		time.Sleep(time.Second)
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[1], "x: 10 bytes (10 B) in 0.150 s") {
			t.Errorf("output %q: want one report, then the summary last", out.String())
		}
	})
}

func TestProgressFinishWithoutRun(t *testing.T) {
	out := testkit.NewLogBuf()
	p := &Progress{Out: out, Prefix: "x:"}
	p.Add(5)
	p.Add(-3) // ignored
	p.Finish()
	if got := out.String(); !strings.HasPrefix(got, "x: 5 bytes (5 B) in 0.0") || !strings.HasSuffix(got, " average\n") {
		t.Errorf("summary %q", got)
	}
}
