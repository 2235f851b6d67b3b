package relay

import (
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"time"
)

// The close waits for a peer that is slow to acknowledge as long as it makes progress:
// it gives up only after the stall limit passes with nothing more acknowledged, not at a
// fixed time after the close began. Here the backend reads a 1 MiB upload slowly, so that
// draining what was queued for it takes several stall limits, while it sends a reply
// nobody reads: a close with that reply unread would reset the backend, which would lose
// the tail of the upload.
func TestSettleWaitsWhileThePeerAcknowledges(t *testing.T) {
	// A second: at 500 ms a loaded machine (load 8, under -race) starved the slow reader
	// below for longer than the limit, and the relay rightly gave up on it.
	const stall = time.Second
	// Join's Settle always worked so; the Pair gave up at a fixed time.
	for _, e := range []engine{pairEngine} {
		t.Run(e.name, func(t *testing.T) {
			relayClient, user := pair(t, "tcp4", "127.0.0.1:0")
			backend, relayServer := pair(t, "tcp4", "127.0.0.1:0")
			// A small window at the backend and a large queue at the relay: when the
			// upload's end reaches the relay, about half a megabyte still waits for the
			// backend's acknowledgement.
			if err := backend.SetReadBuffer(16 << 10); err != nil {
				t.Fatal(err)
			}
			if err := relayServer.SetWriteBuffer(256 << 10); err != nil {
				t.Fatal(err)
			}
			c := &chain{user: user, backend: backend, result: e.start(t, relayClient, relayServer, Options{stall: stall})}
			flood := make(chan struct{})
			go func() {
				defer close(flood)
				chunk := make([]byte, 64<<10)
				for range 4096 { // 256 MiB at most; in practice until the relay's close
					if _, err := backend.Write(chunk); err != nil {
						return
					}
				}
			}()
			defer func() { <-flood }()
			data := randomBytes(t, 640<<10) // over the relay's queue: the close comes when about 512 KiB wait
			errc := make(chan error, 1)
			go sendAndHash(c.user, data, errc)
			// 4 KiB every 20 ms, about 200 KiB/s: the queue takes over two stall limits to
			// drain.
			h := sha256.New()
			buf := make([]byte, 4<<10)
			got := 0
			_ = backend.SetReadDeadline(time.Now().Add(30 * time.Second))
			for {
				n, err := io.ReadFull(backend, buf)
				h.Write(buf[:n])
				got += n
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					break
				}
				if err != nil {
					t.Fatalf("backend read %d of %d bytes, then %v", got, len(data), err)
				}
				time.Sleep(20 * time.Millisecond) // a slow reader, not a synchronisation
			}
			if got != len(data) || [32]byte(h.Sum(nil)) != sha256.Sum256(data) {
				t.Fatalf("backend got %d bytes, want %d (checksum match %v)", got, len(data), [32]byte(h.Sum(nil)) == sha256.Sum256(data))
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			backend.Close()
			if r := c.wait(t); r.End != EndClientClosed || r.Up != int64(len(data)) {
				t.Fatalf("result %+v", r)
			}
		})
	}
}

// The close policy, event by event: what each end of a direction asks of the engine, and
// what happens to each side at the close.
func TestClosePolicy(t *testing.T) {
	type event struct {
		kind string // "eof" (a direction's clean end), "fail", "abort"
		dir  int    // eof: the direction; fail: the side reset, or -1
		end  string // fail and abort
	}
	step := func(shutdown, resetNow int, stop bool) closeStep {
		return closeStep{shutdown: shutdown, resetNow: resetNow, stop: stop}
	}
	for _, tc := range []struct {
		name      string
		halfClose bool
		events    []event
		steps     []closeStep
		end       string
		settles   [2]bool
		resets    [2]bool
	}{
		{
			name:    "close both, client ends: FIN to the server, settle the server",
			events:  []event{{kind: "eof", dir: up}, {kind: "eof", dir: down}},
			steps:   []closeStep{step(down, -1, true), noStep},
			end:     EndClientClosed,
			settles: [2]bool{false, true},
		},
		{
			name:    "close both, server ends: FIN to the client, settle the client",
			events:  []event{{kind: "eof", dir: down}, {kind: "fail", dir: -1, end: "error: late"}},
			steps:   []closeStep{step(up, -1, true), noStep},
			end:     EndServerClosed,
			settles: [2]bool{true, false},
		},
		{
			name:      "half-close: each FIN passed on, the close after both",
			halfClose: true,
			events:    []event{{kind: "eof", dir: up}, {kind: "eof", dir: down}},
			steps:     []closeStep{step(down, -1, false), step(up, -1, true)},
			end:       EndClientClosed,
		},
		{
			name:      "half-close: a reset after a FIN is passed on as a reset",
			halfClose: true,
			events:    []event{{kind: "eof", dir: up}, {kind: "fail", dir: down, end: "error: x"}},
			steps:     []closeStep{step(down, -1, false), step(-1, up, true)},
			end:       EndServerReset,
		},
		{
			name:   "a client reset resets the server at once",
			events: []event{{kind: "fail", dir: up, end: "error: x"}, {kind: "eof", dir: down}},
			steps:  []closeStep{step(-1, down, true), noStep},
			end:    EndClientReset,
		},
		{
			name:   "another error resets both at the close",
			events: []event{{kind: "fail", dir: -1, end: "error: broken pipe"}, {kind: "abort", end: EndStopped}},
			steps:  []closeStep{step(-1, -1, true), noStep},
			end:    "error: broken pipe",
			resets: [2]bool{true, true},
		},
		{
			name:      "an abort is a cut: both reset at the close, later ends ignored",
			halfClose: true,
			events:    []event{{kind: "abort", end: EndIdle}, {kind: "eof", dir: up}, {kind: "fail", dir: up, end: "error: x"}},
			steps:     []closeStep{step(-1, -1, true), noStep, noStep},
			end:       EndIdle,
			resets:    [2]bool{true, true},
		},
		{
			name:      "half-close: an abort after one FIN still resets both",
			halfClose: true,
			events:    []event{{kind: "eof", dir: down}, {kind: "abort", end: EndStopped}},
			steps:     []closeStep{step(up, -1, false), step(-1, -1, true)},
			end:       EndStopped, // the cut names the end
			resets:    [2]bool{true, true},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := closing{halfClose: tc.halfClose}
			for i, ev := range tc.events {
				var got closeStep
				switch ev.kind {
				case "eof":
					got = c.finished(ev.dir)
				case "fail":
					got = c.failed(ev.dir, ev.end)
				case "abort":
					got = c.abort(ev.end)
				}
				if got != tc.steps[i] {
					t.Errorf("event %d (%+v): step %+v, want %+v", i, ev, got, tc.steps[i])
				}
			}
			if c.end != tc.end {
				t.Errorf("end %q, want %q", c.end, tc.end)
			}
			for side := range 2 {
				if got := c.settles(side); got != tc.settles[side] {
					t.Errorf("settles(%d) = %v, want %v", side, got, tc.settles[side])
				}
				if got := c.resetsAtClose(side); got != tc.resets[side] {
					t.Errorf("resetsAtClose(%d) = %v, want %v", side, got, tc.resets[side])
				}
			}
		})
	}
}

// The settle clock backs off from settleFirst to settleMax and gives up only after stall
// with no fewer bytes unacknowledged than before.
func TestSettleClock(t *testing.T) {
	start := time.Unix(1000, 0)
	const stall = time.Second
	c := newSettleClock(start, stall, settleFirst)
	for _, tc := range []struct {
		at      time.Duration
		unacked int
		wait    time.Duration
		ok      bool
	}{
		{0, 500, settleFirst, true},
		{time.Millisecond, 500, 2 * settleFirst, true},
		{900 * time.Millisecond, 500, 4 * settleFirst, true},
		{1500 * time.Millisecond, 400, 8 * settleFirst, true}, // progress: the stall starts again
		{2400 * time.Millisecond, 400, 16 * settleFirst, true},
		{2501 * time.Millisecond, 450, 0, false}, // no fewer than 400 for over a second
	} {
		wait, ok := c.next(start.Add(tc.at), tc.unacked)
		if wait != tc.wait || ok != tc.ok {
			t.Errorf("at %v with %d unacked: %v, %v; want %v, %v", tc.at, tc.unacked, wait, ok, tc.wait, tc.ok)
		}
	}
	c = newSettleClock(start, stall, settleFirst)
	var wait time.Duration
	for range 20 {
		wait, _ = c.next(start, 1)
	}
	if wait != settleMax {
		t.Errorf("pause after 20 looks %v, want settleMax %v", wait, settleMax)
	}
}
