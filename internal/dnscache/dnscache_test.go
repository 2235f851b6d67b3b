package dnscache

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeDNS answers after delay: slow.example never (until the lookup's context ends),
// bad.example with an error, any other name with 192.0.2.1 and ::ffff:192.0.2.2. It counts
// the lookups per name.
type fakeDNS struct {
	delay time.Duration
	mu    sync.Mutex
	n     map[string]int
}

func (f *fakeDNS) lookup(ctx context.Context, network, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	if f.n == nil {
		f.n = map[string]int{}
	}
	f.n[host]++
	f.mu.Unlock()
	if host == "slow.example" {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if host == "bad.example" {
		return nil, errors.New("no such host")
	}
	return []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.2")}, nil
}

func (f *fakeDNS) count(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[host]
}

// waiter records the answer it is told and when.
type waiter struct {
	got  atomic.Pointer[Answer]
	when time.Time
}

func (w *waiter) Resolved(a Answer) { w.when = time.Now(); w.got.Store(&a) }

func TestCache(t *testing.T) {
	for _, tc := range []struct {
		name   string
		host   string
		wait   time.Duration // between the two rounds of gets
		second int           // lookups after the second round
		err    string        // in the answer, "" for addresses
		after  time.Duration // when the first answer comes
	}{
		{"answer used while valid", "ok.example", 29 * time.Second, 1, "", time.Second},
		{"answer expires", "ok.example", 30 * time.Second, 2, "", time.Second},
		{"failure remembered", "bad.example", 4 * time.Second, 1, "no such host", time.Second},
		{"failure expires", "bad.example", 5 * time.Second, 2, "no such host", time.Second},
		{"silent resolver times out", "slow.example", 4 * time.Second, 1, "looking up slow.example: no answer within 10s", 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				dns := &fakeDNS{delay: time.Second}
				c := &Cache{Lookup: dns.lookup}
				start := time.Now()
				ws := make([]*waiter, 5)
				for i := range ws { // all at once: one lookup
					ws[i] = &waiter{}
					if _, ok := c.Get("ip", tc.host, ws[i]); ok {
						t.Fatal("an answer before any lookup")
					}
				}
				synctest.Wait()
				time.Sleep(tc.after) // synctest: the fake clock
				synctest.Wait()
				for i, w := range ws {
					a := w.got.Load()
					if a == nil {
						t.Fatalf("waiter %d not told", i)
					}
					if d := w.when.Sub(start); d != tc.after {
						t.Errorf("waiter %d told after %v, want %v", i, d, tc.after)
					}
					checkAnswer(t, *a, tc.err)
				}
				if n := dns.count(tc.host); n != 1 {
					t.Errorf("%d lookups for %d simultaneous gets, want 1", n, len(ws))
				}
				time.Sleep(tc.wait)
				a, ok := c.Get("ip", tc.host, &waiter{})
				if ok {
					checkAnswer(t, a, tc.err)
				}
				synctest.Wait()
				if n := dns.count(tc.host); n != tc.second {
					t.Errorf("%d lookups after %v, want %d", n, tc.wait, tc.second)
				}
				if ok != (tc.second == 1) {
					t.Errorf("cached after %v: %v, want %v", tc.wait, ok, tc.second == 1)
				}
				time.Sleep(DefaultTimeout) // every lookup ends before the bubble
			})
		})
	}
}

func checkAnswer(t *testing.T, a Answer, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if a.Err == nil || !strings.Contains(a.Err.Error(), wantErr) {
			t.Errorf("answer %v, want the error %q", a, wantErr)
		}
		return
	}
	want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}
	if a.Err != nil || len(a.Addrs) != 2 || a.Addrs[0] != want[0] || a.Addrs[1] != want[1] {
		t.Errorf("answer %v, want %v (IPv4 unmapped)", a, want)
	}
}

// A name whose resolver does not answer delays no other name, and the network is part of
// the key.
func TestSlowNameDelaysNoOther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dns := &fakeDNS{delay: 10 * time.Millisecond}
		c := &Cache{Lookup: dns.lookup}
		c.Get("ip", "slow.example", &waiter{})
		w := &waiter{}
		start := time.Now()
		c.Get("ip", "ok.example", w)
		synctest.Wait()
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if w.got.Load() == nil || w.when.Sub(start) != 10*time.Millisecond {
			t.Errorf("ok.example answered at %v beside a silent name, want 10ms", w.when.Sub(start))
		}
		c.Get("ip4", "ok.example", &waiter{})
		synctest.Wait()
		if n := dns.count("ok.example"); n != 2 {
			t.Errorf("%d lookups for ip and ip4, want 2", n)
		}
		time.Sleep(DefaultTimeout)
	})
}

// Resolve waits for the answer, or for its context.
func TestResolve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dns := &fakeDNS{delay: time.Second}
		c := &Cache{Lookup: dns.lookup}
		checkAnswer(t, c.Resolve(context.Background(), "ip", "ok.example"), "")
		checkAnswer(t, c.Resolve(context.Background(), "ip", "ok.example"), "") // cached
		if n := dns.count("ok.example"); n != 1 {
			t.Errorf("%d lookups, want 1", n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		a := c.Resolve(ctx, "ip", "slow.example")
		if !errors.Is(a.Err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("Resolve of a silent name with a 1s context: %v after %v", a.Err, time.Since(start))
		}
		time.Sleep(DefaultTimeout) // the lookup itself ends too
	})
}

// Expired entries are dropped, so the cache holds only recent names.
func TestSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dns := &fakeDNS{}
		c := &Cache{Lookup: dns.lookup}
		for _, h := range []string{"a.example", "b.example", "c.example"} {
			c.Get("ip", h, &waiter{})
		}
		synctest.Wait()
		time.Sleep(DefaultValid)
		c.Get("ip", "d.example", &waiter{})
		synctest.Wait()
		c.mu.Lock()
		n := len(c.names)
		c.mu.Unlock()
		if n != 1 {
			t.Errorf("%d names kept after the others expired, want 1", n)
		}
	})
}
