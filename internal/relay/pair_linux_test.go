package relay

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/ratelimit"
)

// startPair relays client and server as a Pair on a Loops of two loops (Relay detaches
// both sockets from the standard library): Join's tests run on it too (the engines of
// join_test.go).
func startPair(t *testing.T, client, server *net.TCPConn, o Options) <-chan Result {
	t.Helper()
	ls, err := NewLoops(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ls.Close) // after the test waited for the result
	res := make(chan Result, 1)
	go func() {
		res <- ls.Relay(context.Background(), client, server, PairOptions{
			HalfClose:   o.HalfClose,
			Pace:        [2]*ratelimit.Bucket{ratelimit.NewBucket(o.Rate), ratelimit.NewBucket(o.Rate)},
			IdleTimeout: o.IdleTimeout,
			Progress:    o.Progress,
			stall:       o.stall,
		})
	}()
	return res
}

// The end of the context cuts a pair on the loops, also one that ended before the pair
// started; both peers see a reset.
func TestLoopsStopOnCancel(t *testing.T) {
	ls, err := NewLoops(1)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	for _, early := range []bool{false, true} {
		relayClient, user := pair(t, "tcp4", "127.0.0.1:0")
		backend, relayServer := pair(t, "tcp6", "[::1]:0")
		ctx, cancel := context.WithCancel(context.Background())
		if early {
			cancel()
		}
		done := make(chan Result, 1)
		ls.Start(ctx, relayClient, relayServer, PairOptions{HalfClose: true, OnEnd: func(r Result) { done <- r }})
		// With the cut first, the reset may come before this write, which then reports it
		// (and a read after it finds only the end).
		_, werr := user.Write([]byte("x"))
		if werr != nil && !early {
			t.Fatal(werr)
		}
		cancel()
		select {
		case r := <-done:
			if r.End != EndStopped {
				t.Errorf("early=%v: End %q, want %q", early, r.End, EndStopped)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("early=%v: the pair ignored the cancellation", early)
		}
		for _, c := range []*net.TCPConn{user, backend} {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 8)
			var err error
			if c == user {
				err = werr
			}
			for err == nil {
				_, err = c.Read(buf)
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("early=%v: %v read %v, want a reset", early, c.LocalAddr(), err)
			}
		}
	}
}
