package tunnel

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

type fakeLink struct{ name string }

// TestPoolNewestFirst: the newest idle link goes to the next client, so the links that
// idled longest, which connecttwo closes as not needed, are the last to be paired.
func TestPoolNewestFirst(t *testing.T) {
	p := newPool[*fakeLink](4)
	a, b, c := &fakeLink{"a"}, &fakeLink{"b"}, &fakeLink{"c"}
	var watched []string
	for _, l := range []*fakeLink{a, b} {
		if err := p.reserve(); err != nil {
			t.Fatal(err)
		}
		p.put(l, func(l *fakeLink) { watched = append(watched, l.name) })
	}
	if len(watched) != 2 || p.len() != 2 {
		t.Fatalf("watched %v, idle %d", watched, p.len())
	}
	want := func(l *fakeLink) {
		t.Helper()
		got, err := p.get(context.Background(), 0, false)
		if err != nil || got != l {
			t.Fatalf("get = %v, %v; want %s", got, err, l.name)
		}
	}
	want(b)
	if err := p.reserve(); err != nil {
		t.Fatal(err)
	}
	p.put(c, func(*fakeLink) {})
	want(c)
	want(a)
	if _, err := p.get(context.Background(), 0, false); !errors.Is(err, errNoLink) {
		t.Fatalf("get on an empty pool without waiting: %v", err)
	}
}

func TestPoolCap(t *testing.T) {
	p := newPool[*fakeLink](2)
	for i := 0; i < 2; i++ {
		if err := p.reserve(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.reserve(); !errors.Is(err, ErrPoolFull) {
		t.Fatalf("third reserve in a pool of 2: %v", err)
	}
	p.unreserve()
	if err := p.reserve(); err != nil {
		t.Fatalf("reserve after unreserve: %v", err)
	}
	synctest.Test(t, func(t *testing.T) {
		// A waiting client makes room for one more link: it will be handed over at once.
		go p.get(context.Background(), time.Minute, false)
		synctest.Wait()
		if err := p.reserve(); err != nil {
			t.Fatalf("reserve with a client waiting: %v", err)
		}
		p.put(&fakeLink{"x"}, nil)
		synctest.Wait()
	})
}

// TestPoolWait checks --wait in a bubble: a client gets a link that comes within its wait
// at the moment it comes, and gives up exactly when the wait ends.
func TestPoolWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool[*fakeLink](4)
		start := time.Now()
		type result struct {
			l   *fakeLink
			err error
			at  time.Duration
		}
		results := make(chan result, 2)
		for i := 0; i < 2; i++ {
			go func() {
				l, err := p.get(context.Background(), 30*time.Second, false)
				results <- result{l, err, time.Since(start)}
			}()
			synctest.Wait() // the first client queues before the second
		}
		if p.waiting() != 2 {
			t.Fatalf("waiting %d, want 2", p.waiting())
		}
		time.Sleep(10 * time.Second) // fake time: the bubble's clock
		x := &fakeLink{"x"}
		if err := p.reserve(); err != nil {
			t.Fatal(err)
		}
		p.put(x, func(*fakeLink) { t.Error("a link with a client waiting went idle") })
		first := <-results
		if first.l != x || first.err != nil || first.at != 10*time.Second {
			t.Errorf("first client: %+v, want link x at 10s", first)
		}
		second := <-results
		if !errors.Is(second.err, errNoLink) || second.at != 30*time.Second {
			t.Errorf("second client: %+v, want no link at exactly 30s", second)
		}
		if p.waiting() != 0 {
			t.Errorf("waiting %d after expiry", p.waiting())
		}
	})
}

func TestPoolFrontAndCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool[*fakeLink](4)
		got := make(chan string, 2)
		go func() {
			_, err := p.get(context.Background(), time.Minute, false)
			got <- "back " + errString(err)
		}()
		synctest.Wait()
		go func() {
			l, err := p.get(context.Background(), time.Minute, true)
			if err == nil {
				got <- "front " + l.name
			}
		}()
		synctest.Wait()
		p.reserve()
		p.put(&fakeLink{"x"}, nil)
		if g := <-got; g != "front x" {
			t.Errorf("a client that lost a dead link should keep its turn; got %q", g)
		}
		if g := <-got; g != "back no idle link" {
			t.Errorf("second client: %q", g)
		}

		ctx, cancel := context.WithCancel(context.Background())
		errs := make(chan error, 1)
		go func() { _, err := p.get(ctx, time.Hour, false); errs <- err }()
		synctest.Wait()
		cancel()
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Errorf("get after cancel: %v", err)
		}
	})
}

func TestPoolRemoveAndWaitLen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool[*fakeLink](4)
		a := &fakeLink{"a"}
		done := make(chan error, 1)
		go func() { done <- p.waitUntil(context.Background(), func(n, _ int) bool { return n == 1 }) }()
		p.reserve()
		p.put(a, nil)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !p.remove(a) || p.remove(a) || p.len() != 0 {
			t.Fatal("remove should succeed once")
		}
	})
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
