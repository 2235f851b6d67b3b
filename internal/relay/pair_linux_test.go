package relay

import (
	"context"
	"net"
	"testing"

	"shd-tcp-tools/internal/eventloop"
)

// startPair runs a Pair on an event loop of its own, with the sockets of client and server
// detached from the standard library: Join's tests run on it too (the engines of
// join_test.go).
func startPair(t *testing.T, client, server *net.TCPConn, o Options) <-chan Result {
	t.Helper()
	lp, err := eventloop.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = lp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cfd, err := Detach(client)
	if err != nil {
		t.Fatal(err)
	}
	sfd, err := Detach(server)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan Result, 1)
	lp.Post(func() {
		_, err := StartPair(lp, cfd, sfd, PairOptions{
			HalfClose:   o.HalfClose,
			Pace:        [2]*Pacer{NewPacer(o.Rate), NewPacer(o.Rate)},
			IdleTimeout: o.IdleTimeout,
			Progress:    o.Progress,
			OnEnd:       func(r Result) { res <- r },
			stall:       o.stall,
		})
		if err != nil {
			res <- Result{End: "starting the pair: " + err.Error()}
		}
	})
	return res
}
