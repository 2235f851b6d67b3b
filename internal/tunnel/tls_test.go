package tunnel

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/tlslink"
)

// newTLSServer makes a relay identity from a fresh key file in the test's directory.
func newTLSServer(t testing.TB) *tlslink.Server {
	t.Helper()
	s, err := tlslink.LoadServer("", filepath.Join(t.TempDir(), "relay.key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pinned(t testing.TB, pins ...string) *tlslink.Client {
	t.Helper()
	c, err := tlslink.NewPinned(pins)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// appearances counts the 8-byte words of data (at offsets that are multiples of 8) that
// occur anywhere in seen.
func appearances(data, seen []byte) int {
	words := make(map[uint64]struct{}, len(data)/8)
	for i := 0; i+8 <= len(data); i += 8 {
		words[binary.LittleEndian.Uint64(data[i:])] = struct{}{}
	}
	found := make(map[uint64]struct{})
	for i := 0; i+8 <= len(seen); i++ {
		w := binary.LittleEndian.Uint64(seen[i:])
		if _, ok := words[w]; ok {
			found[w] = struct{}{}
		}
	}
	return len(found)
}

// TestTLSHidesClientBytes sends a client's 1 MiB of random bytes through the tunnel with a
// tap on the link, over IPv4 and IPv6: with TLS none of them appears in the link's bytes
// (either way), without TLS they all do.
func TestTLSHidesClientBytes(t *testing.T) {
	for _, tc := range []struct {
		host string
		tls  bool
	}{{"127.0.0.1", true}, {"::1", true}, {"127.0.0.1", false}} {
		t.Run(fmt.Sprintf("%s tls=%v", tc.host, tc.tls), func(t *testing.T) {
			const size = 1 << 20
			svc := startService(t, tc.host, echoMode)
			var tn tunnel
			rc := RelayConfig{Hello: true, Wait: testTimeout}
			ac := AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1}
			if tc.tls {
				srv := newTLSServer(t)
				rc.TLS, ac.TLS = srv, pinned(t, srv.Pin)
			}
			startRelay(t, tc.host, rc, &tn)
			tp := startTap(t, tn.links.Addr().String())
			ac.Relay = epOf(t, tp.ln.Addr())
			startAgent(t, ac, &tn)
			tn.waitPools(t, 1, 1)

			c := dial(t, tn.clients)
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			data := make([]byte, size)
			_, _ = rand.Read(data)
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(data)
				if err == nil {
					err = c.CloseWrite()
				}
				werr <- err
			}()
			back, err := io.ReadAll(c)
			if err != nil || <-werr != nil || !bytes.Equal(back, data) {
				t.Fatalf("echo: %d bytes back (equal %v), read %v", len(back), bytes.Equal(back, data), err)
			}
			tn.relayLog.wait(`close #1 `)
			tp.mu.Lock()
			link := tp.conns[0]
			tp.mu.Unlock()
			link.mu.Lock()
			toAgent, toRelay := bytes.Clone(link.toAgent), bytes.Clone(link.toRelay)
			link.mu.Unlock()
			if len(toAgent) < size || len(toRelay) < size {
				t.Fatalf("the tap saw %d bytes to the agent and %d back, want at least %d each", len(toAgent), len(toRelay), size)
			}
			n := appearances(data, toAgent) + appearances(data, toRelay)
			t.Logf("tls=%v: %d of %d words of the client's data seen on the link", tc.tls, n, 2*size/8)
			switch {
			case tc.tls && n != 0:
				t.Errorf("with TLS, %d words of the client's data crossed the link in the clear", n)
			case !tc.tls && n < 2*size/8*99/100:
				t.Errorf("without TLS only %d words of the client's data seen on the link: the tap sees nothing?", n)
			}
		})
	}
}

// TestTLSPins runs links against pins that are right, wrong, and two for a rotation: a
// wrong pin is logged on both sides in words and no client is paired with the link.
func TestTLSPins(t *testing.T) {
	srv, other := newTLSServer(t), newTLSServer(t)
	for _, tc := range []struct {
		name string
		pins []string
		ok   bool
	}{
		{"right", []string{srv.Pin}, true},
		{"rotated old first", []string{other.Pin, srv.Pin}, true},
		{"rotated new first", []string{srv.Pin, other.Pin}, true},
		{"wrong", []string{other.Pin}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := startService(t, "127.0.0.1", echoMode)
			var tn tunnel
			startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: 200 * time.Millisecond, TLS: srv}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 2, TLS: pinned(t, tc.pins...),
				BackoffBase: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}, &tn)
			if tc.ok {
				tn.waitPools(t, 2, 2)
				if _, err := roundTrip(dial(t, tn.clients), 100<<10, 0); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := "relay presents " + srv.Pin + ", expected " + strings.Join(tc.pins, " or ")
			tn.agentLog.waitCount(`link #\d+ to .* failed: `+quoteRe(want)+`; retry \d+ in`, 3)
			tn.relayLog.waitCount(`link #\d+ refused 127\.0\.0\.1:\d+: connecttwo refused this relay's certificate \(tls: bad certificate\): check that its --tls-pin is this relay's `+quoteRe(srv.Pin), 3)
			if tn.relay.IdleLinks() != 0 || tn.agent.IdleLinks() != 0 {
				t.Errorf("a link with a wrong pin joined a pool: relay %d, agent %d", tn.relay.IdleLinks(), tn.agent.IdleLinks())
			}
			expectClosed(t, dial(t, tn.clients))
			tn.relayLog.wait(`failed #1 .* no idle link`)
			if svc.accepted.Load() != 0 {
				t.Error("a client was served through a link with a wrong pin")
			}
		})
	}
}

func quoteRe(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

var _ = net.Dial
