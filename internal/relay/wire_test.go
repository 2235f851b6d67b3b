package relay

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestWireReadAhead: fill reads what the peer sent in one step; Buffered counts it; Read
// gives it whole, then in no-wait mode answers errWouldBlock rather than wait; release
// keeps bytes not read yet; the peer's FIN is given once the bytes before it are read.
func TestWireReadAhead(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		a, b := pair(t, "tcp", addr)
		w := NewWire(a)
		msg := bytes.Repeat([]byte("wire"), 1000)
		if _, err := b.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := 0
		for got < len(msg) { // loopback may deliver the write in more than one piece
			if err := w.fill(); err != nil {
				t.Fatal(err)
			}
			n := w.Buffered()
			if n == 0 {
				t.Fatal("fill returned with nothing read ahead")
			}
			w.release() // as at the end of a relay: the bytes stay
			if w.Buffered() != n {
				t.Fatalf("release kept %d of %d bytes", w.Buffered(), n)
			}
			p := make([]byte, len(msg))
			m, err := w.Read(p)
			if err != nil || m != n || !bytes.Equal(p[:m], msg[got:got+m]) {
				t.Fatalf("Read gave %d bytes, %v; want the %d read ahead", m, err, n)
			}
			got += m
		}
		w.setNoWait(true)
		if n, err := w.Read(make([]byte, 10)); n != 0 || !errors.Is(err, errWouldBlock) {
			t.Fatalf("no-wait Read with nothing read ahead: %d, %v", n, err)
		}
		w.setNoWait(false)
		_ = b.CloseWrite()
		if err := w.fill(); err != nil {
			t.Fatal(err)
		}
		w.setNoWait(true)
		if n, err := w.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("after the FIN: %d, %v; want EOF", n, err)
		}
	}
}

// TestWireGather: writes while gathering reach the peer only at the flush, in order, and
// a write outside gathering goes out at once.
func TestWireGather(t *testing.T) {
	a, b := pair(t, "tcp", "127.0.0.1:0")
	w := NewWire(a)
	w.startGather()
	var want []byte
	for i := range 40 { // past one buffer: gathering flushes when full
		p := bytes.Repeat([]byte{byte(i)}, 16<<10)
		if n, err := w.Write(p); n != len(p) || err != nil {
			t.Fatalf("gathered write: %d, %v", n, err)
		}
		want = append(want, p...)
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("end")); err != nil {
		t.Fatal(err)
	}
	want = append(want, "end"...)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("peer read %v, equal %v", err, bytes.Equal(got, want))
	}
}
