package accept

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	var b Backoff
	now := time.Unix(1000, 0)
	var pauses []time.Duration
	lines := 0
	// 3 s of failures: the pauses double from 5 ms to 1 s; the log gets about one line a second.
	for end := now.Add(3 * time.Second); now.Before(end); {
		if line := b.Fail(now, syscall.EMFILE); line != "" {
			lines++
		}
		p := b.Pause(now)
		pauses = append(pauses, p)
		now = now.Add(p)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i, w := range want {
		if i >= len(pauses) || pauses[i] != w*time.Millisecond {
			t.Fatalf("pauses %v, want them to start %v ms", pauses, want)
		}
	}
	if lines < 2 || lines > 4 {
		t.Errorf("%d log lines over 3 s of failures, want about 3", lines)
	}
	if line := b.OK(); line == "" {
		t.Error("no line when serving again")
	}
	if p := b.Pause(now); p > 0 {
		t.Errorf("still paused for %v after a connection was served", p)
	}
	if line := b.OK(); line != "" {
		t.Errorf("a second recovery line %q", line)
	}

	// Flapping between shortage and recovery still logs at most a line a second (plus the
	// recovery line of a back-off that was logged).
	var c Backoff
	t0 := time.Unix(2000, 0)
	lines = 0
	for i := range 100 {
		at := t0.Add(time.Duration(i) * 20 * time.Millisecond) // 2 s
		if c.Fail(at, syscall.EMFILE) != "" {
			lines++
		}
		if c.Pause(at) != MinPause {
			t.Fatalf("pause %v after a recovery, want %v", c.Pause(at), MinPause)
		}
		if c.OK() != "" {
			lines++
		}
	}
	if lines < 2 || lines > 6 {
		t.Errorf("%d lines for 2 s of flapping, want 2 to 6", lines)
	}
}

// Classify gives every accept error its verdict, also wrapped as net's Accept and the
// raw accept4 return them.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want Verdict
	}{
		{syscall.EMFILE, Short},
		{syscall.ENFILE, Short},
		{syscall.ENOBUFS, Short},
		{syscall.ENOMEM, Short},
		{syscall.EINTR, Again},
		{syscall.ECONNABORTED, Again},
		{syscall.EPROTO, Again},
		{syscall.ENETDOWN, Again},
		{syscall.ENOPROTOOPT, Again},
		{syscall.EHOSTDOWN, Again},
		{syscall.ENONET, Again},
		{syscall.EHOSTUNREACH, Again},
		{syscall.EOPNOTSUPP, Again},
		{syscall.ENETUNREACH, Again},
		{syscall.EBADF, Fatal},
		{syscall.EINVAL, Fatal},
		{net.ErrClosed, Fatal},
		{errors.New("something else"), Fatal},
	} {
		wrapped := []error{
			c.err,
			os.NewSyscallError("accept4", c.err),
			&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", c.err)},
			fmt.Errorf("accepting clients: %w", c.err),
		}
		for _, err := range wrapped {
			if got := Classify(err); got != c.want {
				t.Errorf("Classify(%v) = %v, want %v", err, got, c.want)
			}
		}
		if got := Shortage(c.err); got != (c.want == Short) {
			t.Errorf("Shortage(%v) = %v", c.err, got)
		}
	}
}
