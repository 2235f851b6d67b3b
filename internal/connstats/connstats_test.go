package connstats

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// The ends of relay's close lines map to their own End, anything else to EndError.
func TestEndOf(t *testing.T) {
	for end, want := range map[string]End{
		"client closed": EndClientClosed, "server closed": EndServerClosed,
		"reset by client": EndClientReset, "reset by server": EndServerReset,
		"cut: idle timeout": EndIdle, "cut: stopped": EndStopped,
		"error: splice: broken pipe": EndError, "": EndError,
	} {
		if got := EndOf(end); got != want {
			t.Errorf("EndOf(%q) = %v, want %v", end, got, want)
		}
	}
}

func TestFailureOf(t *testing.T) {
	for _, c := range []struct {
		err  error
		want Failure
	}{
		{os.NewSyscallError("connect", syscall.ECONNREFUSED), FailRefused},
		{fmt.Errorf("dialing: %w", syscall.ETIMEDOUT), FailTimeout},
		{context.DeadlineExceeded, FailTimeout},
		{errors.New("connection timed out"), FailTimeout},
		{&net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}, FailResolve},
		{&net.DNSError{Err: "i/o timeout", Name: "x.example", IsTimeout: true}, FailTimeout},
		{syscall.EHOSTUNREACH, FailUnreachable},
		{syscall.ENETUNREACH, FailUnreachable},
		{os.NewSyscallError("socket", syscall.EMFILE), FailResources},
		{syscall.ECONNRESET, FailReset},
		{ErrNoHost, FailNoHost},
		{errors.New("cut: stopped"), FailCut},
		{errors.New("something else"), FailOther},
	} {
		if got := FailureOf(c.err); got != c.want {
			t.Errorf("FailureOf(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A snapshot adds up several Counters, and the histogram puts each time in its bucket.
func TestSnapshot(t *testing.T) {
	var a, b Counters
	a.Accepted()
	a.Opened(50 * time.Microsecond) // first bucket
	b.Opened(3 * time.Millisecond)  // le=0.005
	b.Opened(time.Minute)           // above every bound
	a.Ended(EndClientClosed)
	a.Moved(true, 10)
	b.Moved(false, 20)
	a.Up(5)
	b.Refused(RefusedAllow)
	b.Failed(FailRefused)
	b.AttemptFailed(FailTimeout)
	var s Snapshot
	s.Add(&a)
	s.Add(&b)
	if s.Accepted != 1 || s.Opened != 3 || s.Open() != 2 || s.Up != 15 || s.Down != 20 ||
		s.Refused[RefusedAllow] != 1 || s.Failed[FailRefused] != 1 || s.AttemptFailed[FailTimeout] != 1 {
		t.Errorf("snapshot %+v", s)
	}
	if s.Connect[0] != 1 || s.Connect[5] != 1 || s.Connect[len(ConnectBuckets)] != 1 {
		t.Errorf("connect buckets %v", s.Connect)
	}
	if want := 50*time.Microsecond + 3*time.Millisecond + time.Minute; s.ConnectSum != want {
		t.Errorf("connect sum %v, want %v", s.ConnectSum, want)
	}
}

// What the data path pays: one Moved per splice, and one Accepted, Opened and Ended per
// connection (on the loop's own Counters, so without contention).
func BenchmarkMoved(b *testing.B) {
	var c Counters
	b.ReportAllocs()
	for b.Loop() {
		c.Moved(true, 1500)
	}
}

func BenchmarkConnection(b *testing.B) {
	var c Counters
	b.ReportAllocs()
	for b.Loop() {
		c.Accepted()
		c.Opened(300 * time.Microsecond)
		c.Ended(EndClientClosed)
	}
}
