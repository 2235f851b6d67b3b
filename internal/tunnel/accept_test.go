package tunnel

import (
	"context"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"

	"shd-tcp-tools/internal/accept"
)

// faultyListener fails its first n accepts with err, as accept(2) does when the process
// is out of descriptors or the kernel of memory, or a connection in the queue met a
// network error; the connections that wait meanwhile are accepted after.
type faultyListener struct {
	net.Listener
	n   atomic.Int32
	err error
}

func (l *faultyListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.err)}
	}
	return l.Listener.Accept()
}

// A shortage on either listening socket (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses accepting
// and goes on, and so does a connection's own network error that accept(2) passes on
// (EPROTO, ENETDOWN, ...), as on tcp-pf's loops: the relay never stops for them, and the
// link and the client that waited in the queue are served after.
func TestAcceptShortageBacksOff(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EPROTO, syscall.ENETDOWN} {
		t.Run(errno.Error(), func(t *testing.T) {
			svc := startService(t, "127.0.0.1", echoMode)
			tn := tunnel{relayLog: newSink(t, "listentwo")}
			tn.clients, tn.links = listen(t, "127.0.0.1"), listen(t, "::1")
			r, err := NewRelay(RelayConfig{Clients: epOf(t, tn.clients.Addr()), Links: epOf(t, tn.links.Addr()), Wait: testTimeout, Log: tn.relayLog.logger()})
			if err != nil {
				t.Fatal(err)
			}
			tn.relay = r
			clients := &faultyListener{Listener: tn.clients, err: errno}
			links := &faultyListener{Listener: tn.links, err: errno}
			clients.n.Store(3)
			links.n.Store(3)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Serve(ctx, clients, links) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Serve after the stop: %v", err)
				}
			})
			startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 1}, &tn)
			tn.waitPools(t, 1, 1)
			c := dial(t, tn.clients)
			if _, err := roundTrip(c, 100000, 0); err != nil {
				t.Fatalf("client after the accept errors: %v\nrelay:\n%s", err, tn.relayLog)
			}
			if accept.Shortage(errno) {
				tn.relayLog.wait(`accepting (link|client)s: out of descriptors or memory \(.*` + errno.Error() + `\): pausing accept for 5ms, doubling up to 1s$`)
				tn.relayLog.wait(`accepting (link|client)s: serving again after \d+ failures for lack of descriptors or memory$`)
			}
			select {
			case err := <-done:
				t.Fatalf("Serve returned %v; want it to go on", err)
			default:
			}
		})
	}
}
