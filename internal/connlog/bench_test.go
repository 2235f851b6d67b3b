package connlog

import (
	"errors"
	"os"
	"testing"
	"time"
)

// benchLogger returns a Buffer, as an event loop holds, on a Logger writing to /dev/null
// (stderr redirected to a file: the lines are written by the caller, at the Flush), and
// a function that ends a round every 32 events as a busy loop would: the round's time is
// read once, and its lines are flushed.
func benchLogger(b *testing.B, o Options) (*Logger, func(i int)) {
	b.Helper()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { null.Close() })
	round := time.Now()
	l := NewWith(null, o).BufferAt(func() time.Time { return round })
	b.ReportAllocs()
	b.ResetTimer()
	return l, func(i int) {
		if i%32 == 31 {
			l.Flush()
			round = time.Now()
		}
	}
}

// BenchmarkOpenClose is a short connection's two lines: open and close.
func BenchmarkOpenClose(b *testing.B) {
	for _, f := range []struct {
		name string
		o    Options
	}{{"text", Options{}}, {"json", Options{Format: JSON}}, {"quiet", Options{Quiet: true}}} {
		b.Run(f.name, func(b *testing.B) {
			l, round := benchLogger(b, f.o)
			for i := range b.N {
				l.Open(uint64(i), "192.0.2.9:51234", "127.0.0.1:22")
				l.Close(uint64(i), "192.0.2.9:51234", "127.0.0.1:22", 1<<20, 2048, 2333*time.Millisecond, "client closed")
				round(i)
			}
		})
	}
}

// BenchmarkFailed is a line for a destination that refused.
func BenchmarkFailed(b *testing.B) {
	l, round := benchLogger(b, Options{})
	err := errors.New("connection refused")
	for i := range b.N {
		l.Failed(uint64(i), "[2001:db8::9]:51234", "127.0.0.1:22", err)
		round(i)
	}
}
