// Package tunneltest holds what the listentwo and connecttwo tests need beyond testkit:
// the two binaries built, and floods of connections: held silent (a stranger locking a
// port), or opened, sent a few bytes and closed at once (a stranger making the peer work).
package tunneltest

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"shd-tcp-tools/internal/testkit"
)

// Build compiles listentwo and connecttwo into a temporary directory of the test and
// returns the path of each, by name.
func Build(t testing.TB) map[string]string {
	t.Helper()
	return testkit.Build(t, "shd-tcp-tools/cmd/listentwo", "shd-tcp-tools/cmd/connecttwo")
}

// Flood holds connections to an address that say nothing (or a few bytes, then nothing):
// each of its workers connects and connects again as soon as the peer closes or resets the
// connection. It is what a stranger does to lock a port: bounded by a number of workers, a
// total number of connects, and the context.
type Flood struct {
	// Held is how many flood connections are open now; Dials counts connects made.
	Held, Dials atomic.Int64
	// MaxHeld is the most connections that were open at once.
	MaxHeld atomic.Int64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// StartFlood starts workers connections from local (an address such as 127.0.0.2, or ""
// for any) to addr, reopened as they are closed, until maxDials connects were made or the
// test calls Stop (or ends). Each connection sends send (if any) once, then nothing more.
func StartFlood(t testing.TB, local, addr string, workers int, maxDials int64, send []byte) *Flood {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &Flood{cancel: cancel}
	d := dialer(local)
	for i := 0; i < workers; i++ {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for ctx.Err() == nil && f.Dials.Add(1) <= maxDials {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					continue // refused or reset before connect returned: try again
				}
				n := f.Held.Add(1)
				for m := f.MaxHeld.Load(); n > m && !f.MaxHeld.CompareAndSwap(m, n); m = f.MaxHeld.Load() {
				}
				stop := context.AfterFunc(ctx, func() { c.Close() })
				if len(send) > 0 {
					_, _ = c.Write(send)
				}
				var b [512]byte
				for {
					// Whatever the peer sends is read and dropped; nothing is ever sent.
					if _, err := c.Read(b[:]); err != nil {
						break
					}
				}
				stop()
				c.Close()
				f.Held.Add(-1)
			}
		}()
	}
	t.Cleanup(f.Stop)
	return f
}

// Stop closes every flood connection and waits for the workers.
func (f *Flood) Stop() {
	f.cancel()
	f.wg.Wait()
}

// WaitHeld waits until at least n flood connections are open at once, or fails the test.
func (f *Flood) WaitHeld(t testing.TB, n int64) {
	t.Helper()
	testkit.WaitUntil(t, testkit.Timeout, "flood connections held", func() bool { return f.Held.Load() >= n })
}

// StartHitAndRun starts workers that each connect from local ("" for any) to addr, send
// send and close the connection at once, again and again, until maxDials connects were
// made or the test calls Stop (or ends): what a stranger does to make the peer work (a
// TLS handshake for every ClientHello replayed) at the least cost to itself. Held stays 0.
func StartHitAndRun(t testing.TB, local, addr string, workers int, maxDials int64, send []byte) *Flood {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &Flood{cancel: cancel}
	d := dialer(local)
	for range workers {
		f.wg.Go(func() {
			for ctx.Err() == nil && f.Dials.Add(1) <= maxDials {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					continue
				}
				_, _ = c.Write(send)
				c.Close()
			}
		})
	}
	t.Cleanup(f.Stop)
	return f
}

// dialer connects from local ("" for any) with testkit's timeout.
func dialer(local string) net.Dialer {
	d := net.Dialer{Timeout: testkit.Timeout}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	return d
}
