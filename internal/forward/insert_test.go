package forward

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"shd-tcp-tools/internal/pipe/pipetest"
	"shd-tcp-tools/internal/testkit"
)

// With -r, the --insert bytes count against the rate like the client's: a 1 MiB insert at
// 512 KiB/s takes two seconds, and no 1-second window at the destination carries more than
// 1.05 x RATE + 64 KiB. Not parallel: the pacing needs the CPU it asks for.
func TestInsertRateLimited(t *testing.T) {
	const rate = 512 << 10
	const payload = 128 << 10
	insert := make([]byte, 1<<20)
	ln := testkit.Listen(t, "127.0.0.1:0")
	// On the listener, so that the bytes that arrive before the accept are stamped too.
	if err := pipetest.SetTimestamps(ln); err != nil {
		t.Fatal(err)
	}
	type result struct {
		arr []pipetest.Arrival
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		arr, _, err := pipetest.ReceiveTimestamped(c, time.Now().Add(20*time.Second))
		got <- result{arr, err}
	}()
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, ln.Addr().String()), Rate: rate, Insert: insert, Lazy: true})
	c := testkit.Dial(t, pf.addr)
	if _, err := testkit.Send(c, 3, payload); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := int64(len(insert) + payload)
	if len(r.arr) == 0 || r.arr[len(r.arr)-1].Total != want {
		t.Fatalf("destination got %v, want %d bytes", r.arr[len(r.arr)-1:], want)
	}
	bound := 1.05*rate + 64<<10
	if most := pipetest.MaxWindow(r.arr, time.Second); float64(most) > bound {
		t.Errorf("a 1 s window carried %d bytes; the bound is %.0f", most, bound)
	}
	if span := r.arr[len(r.arr)-1].At.Sub(r.arr[0].At); span < 2*time.Second {
		t.Errorf("%d bytes at %d B/s arrived in %v; they cannot take less than 2 s", want, rate, span)
	}
	m := pf.log.WaitFor(t, fmt.Sprintf(`close #1 .*up=%d .* time=([0-9.]+)s `, want), 1, 5*time.Second)
	// The close line's time and rates count from the open, the insert included.
	if secs, err := strconv.ParseFloat(m[1], 64); err != nil || secs < 2 {
		t.Errorf("close line time=%ss, want at least 2 s (the insert's)", m[1])
	}
}
