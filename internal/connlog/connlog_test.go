package connlog

import (
	"bytes"
	"errors"
	"regexp"
	"testing"
	"time"
)

func TestLines(t *testing.T) {
	var b bytes.Buffer
	l := New(&b)
	l.now = func() time.Time { return time.Date(2026, 11, 26, 5, 39, 10, 123e6, time.UTC) }
	l.Open(7, "192.0.2.9:51234", "127.0.0.1:22")
	l.Close(7, "192.0.2.9:51234", "127.0.0.1:22", 1<<20, 2048, 2*time.Second, "client closed")
	l.Refused("198.51.100.7:40000", "not in the allow list")
	l.Failed(8, "192.0.2.9:1", "127.0.0.1:23", errors.New("connection refused"))
	want := `2026-11-26T05:39:10.123Z open #7 192.0.2.9:51234 -> 127.0.0.1:22
2026-11-26T05:39:10.123Z close #7 192.0.2.9:51234 -> 127.0.0.1:22 up=1048576 (1.00 MiB, 512.00 KiB/s) down=2048 (2.00 KiB, 1.00 KiB/s) time=2.000s end="client closed"
2026-11-26T05:39:10.123Z refused 198.51.100.7:40000: not in the allow list
2026-11-26T05:39:10.123Z failed #8 192.0.2.9:1 -> 127.0.0.1:23: connection refused
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	// awk-friendly: the close line splits on blanks into stable fields.
	if !regexp.MustCompile(`^\S+ close #7 \S+ -> \S+ up=1048576 `).MatchString(b.String()[bytes.IndexByte(b.Bytes(), '\n')+1:]) {
		t.Fatal("close line fields moved")
	}
	var nilLogger *Logger
	nilLogger.Open(1, "a", "b") // must not panic
}

// writes records each Write call separately.
type writes struct{ calls []string }

func (w *writes) Write(p []byte) (int, error) {
	w.calls = append(w.calls, string(p))
	return len(p), nil
}

// A Buffer keeps its lines until Flush, which hands all of them to the parent in one write.
func TestBuffer(t *testing.T) {
	w := &writes{}
	l := New(w)
	l.now = func() time.Time { return time.Date(2026, 11, 26, 5, 39, 10, 0, time.UTC) }
	b := l.Buffer()
	b.Open(1, "a", "b")
	b.Refused("c", "why")
	if len(w.calls) != 0 {
		t.Fatalf("written before Flush: %q", w.calls)
	}
	b.Flush()
	b.Flush() // nothing pending: no write
	want := "2026-11-26T05:39:10.000Z open #1 a -> b\n2026-11-26T05:39:10.000Z refused c: why\n"
	if len(w.calls) != 1 || w.calls[0] != want {
		t.Fatalf("writes %q, want one: %q", w.calls, want)
	}
	l.Flush() // not a Buffer: nothing happens
	var nilLogger *Logger
	nilLogger.Buffer().Flush() // must not panic
}
