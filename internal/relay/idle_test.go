package relay

import (
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// pipeFDs counts this process's open pipe descriptors.
func pipeFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "pipe:") {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// Idle relays hold no splice pipes: after traffic, the pipes go back to the cache, and the
// cache is emptied by the garbage collector.
func TestIdleRelayHoldsNoPipe(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			base := pipeFDs(t)
			const n = 20
			chains := make([]*chain, n)
			buf := make([]byte, 5)
			for i := range chains {
				c := newChainOn(t, e, "tcp4", "127.0.0.1:0", Options{})
				chains[i] = c
				if _, err := c.user.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c.backend, buf); err != nil {
					t.Fatal(err)
				}
				if _, err := c.backend.Write([]byte("world")); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c.user, buf); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "idle relays to give their pipes back", func() bool { return pipeFDs(t) <= base })
			for _, c := range chains {
				c.user.Close()
				c.wait(t)
			}
		})
	}
}

// By default, when the client ends while the server still has bytes in flight that nobody
// will read, the server sees every client byte and then a FIN, not a reset.
func TestCloseBothIsFINWithUnreadBytes(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			c := newChainOn(t, e, "tcp4", "127.0.0.1:0", Options{})
			// The backend floods a reply the user never reads, so the relay holds unread bytes.
			flood := make(chan struct{})
			go func() {
				defer close(flood)
				c.backend.Write(make([]byte, 16<<20))
			}()
			data := randomBytes(t, 1<<20)
			if _, err := c.user.Write(data); err != nil {
				t.Fatal(err)
			}
			c.user.CloseWrite()
			c.backend.SetReadDeadline(time.Now().Add(20 * time.Second))
			got, err := io.ReadAll(c.backend)
			if err != nil {
				t.Fatalf("backend read %d bytes then %v, want a clean EOF", len(got), err)
			}
			if len(got) != len(data) {
				t.Fatalf("backend got %d bytes, want %d; %+v", len(got), len(data), c.wait(t))
			}
			c.user.Close()
			c.backend.Close()
			<-flood
			if r := c.wait(t); r.End != EndClientClosed {
				t.Fatalf("End %q", r.End)
			}
		})
	}
}
