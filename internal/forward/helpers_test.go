package forward

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/testkit"
)

// running is a Server serving on a loopback listener.
type running struct {
	*Server
	addr string
	warn []error // from New
	log  *testkit.LogBuf
	stop func() error // cancel Serve and return its result
}

// startServer runs a Server for cfg on listen ("127.0.0.1:0", "[::1]:0") until the test
// ends. The setup functions run on the Server before it serves.
func startServer(t testing.TB, listen string, cfg Config, setup ...func(*Server)) *running {
	t.Helper()
	lb := testkit.NewLogBuf()
	cfg.Log = connlog.New(lb)
	s, warn, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(s)
	}
	ln := testkit.Listen(t, listen)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := s.Serve(ctx, ln)
		cfg.Log.Drain() // as tcp-pf does before it exits: every line written once Serve returned
		done <- err
	}()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(30 * time.Second):
				result = errors.New("Serve did not return within 30s of the stop")
			}
		})
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &running{Server: s, addr: ln.Addr().String(), warn: warn, log: lb, stop: stop}
}
