package tunnel

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffDelays(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    float64
		want []time.Duration
	}{
		// r=1 (just below): the top of each range: base, doubled, capped at Max.
		{"top", 0.999999999, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}},
		// r=0: the bottom of each range, half the nominal delay.
		{"bottom", 0, []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second, 15 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := Backoff{Base: time.Second, Max: 30 * time.Second, Rand: func() float64 { return tc.r }}
			for i, want := range tc.want {
				got := b.Next().Round(time.Millisecond)
				if got != want {
					t.Errorf("delay %d = %v, want %v", i+1, got, want)
				}
			}
			b.Reset()
			if got := b.Next().Round(time.Millisecond); got != tc.want[0] {
				t.Errorf("after Reset: %v, want %v", got, tc.want[0])
			}
		})
	}
}

func TestBackoffDefaultsAndJitter(t *testing.T) {
	var b Backoff
	seen := map[time.Duration]bool{}
	for i := 0; i < 40; i++ {
		d := b.Next()
		if d > DefaultBackoffMax || d < DefaultBackoffBase/2 {
			t.Fatalf("delay %d = %v outside [%v, %v]", i, d, DefaultBackoffBase/2, DefaultBackoffMax)
		}
		if i >= 10 {
			seen[d] = true
		}
	}
	if len(seen) < 10 {
		t.Errorf("capped delays show no jitter: %d distinct of 30", len(seen))
	}
}

// TestBackoffSleep runs the retry loop's timing in a bubble: each sleep lasts exactly the
// delay Next gave, and a cancelled context ends a sleep at once.
func TestBackoffSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := Backoff{Base: 100 * time.Millisecond, Max: time.Second, Rand: func() float64 { return 0.5 }}
		start := time.Now()
		var total time.Duration
		for i := 0; i < 6; i++ {
			d := b.Next()
			total += d
			if !sleep(context.Background(), d) {
				t.Fatal("sleep cut short")
			}
		}
		if got := time.Since(start); got != total {
			t.Errorf("slept %v, want %v", got, total)
		}
		// 75, 150, 300, 600, 750, 750 ms
		if want := 2625 * time.Millisecond; total != want {
			t.Errorf("total %v, want %v", total, want)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(time.Second); cancel() }()
		start = time.Now()
		if sleep(ctx, time.Hour) {
			t.Error("sleep ignored cancel")
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("cancelled sleep took %v", got)
		}
	})
}
