package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestSecrets runs whole tunnels with the secret right, wrong and on one side only. A link
// that fails is logged on both sides and no client is ever paired with it.
func TestSecrets(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		relaySecret, agentSc string
		relayLog, agentLog   string // "" means links must come up
	}{
		{name: "right", relaySecret: "correct horse", agentSc: "correct horse"},
		{name: "wrong", relaySecret: "correct horse", agentSc: "battery staple",
			relayLog: `link #\d+ refused 127\.0\.0\.1:\d+: authentication failed`,
			agentLog: `relay refused the link: authentication failed`},
		{name: "relay only", relaySecret: "correct horse",
			relayLog: `refused .*auth mismatch: listentwo has --secret-file, connecttwo has none`,
			agentLog: `auth mismatch: listentwo has --secret-file, connecttwo has none`},
		{name: "agent only", agentSc: "correct horse",
			relayLog: `refused .*auth mismatch: connecttwo has --secret-file, listentwo has none`,
			agentLog: `auth mismatch: connecttwo has --secret-file, listentwo has none; refusing a relay`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := startService(t, "127.0.0.1", echoMode)
			var tn tunnel
			rc := RelayConfig{Hello: true, Wait: 200 * time.Millisecond}
			if tc.relaySecret != "" {
				rc.Secret = []byte(tc.relaySecret)
			}
			startRelay(t, "127.0.0.1", rc, &tn)
			ac := AgentConfig{Service: svc.ep(t), Hello: true, Pool: 2, BackoffBase: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
			if tc.agentSc != "" {
				ac.Secret = []byte(tc.agentSc)
			}
			startAgent(t, ac, &tn)
			if tc.relayLog == "" {
				tn.waitPools(t, 2, 2)
				if _, err := roundTrip(dial(t, tn.clients), 100<<10, 0); err != nil {
					t.Fatal(err)
				}
				return
			}
			// Several failed attempts, each logged on both sides, with growing delays.
			tn.relayLog.waitCount(tc.relayLog, 4)
			tn.agentLog.waitCount(tc.agentLog+`.*; retry \d+ in`, 4)
			tn.agentLog.wait(`retry 3 in`)
			if tn.relay.IdleLinks() != 0 || tn.agent.IdleLinks() != 0 {
				t.Errorf("a failed link joined a pool: relay %d, agent %d", tn.relay.IdleLinks(), tn.agent.IdleLinks())
			}
			c := dial(t, tn.clients)
			expectClosed(t, c)
			tn.relayLog.wait(`failed #1 .* no idle link`)
			if svc.accepted.Load() != 0 || tn.relayLog.count(`open #`) != 0 {
				t.Errorf("a client was served through an unauthenticated link")
			}
		})
	}
}

// TestHelloMismatch: only one side using hellos fails every link, logged on both sides.
func TestHelloMismatch(t *testing.T) {
	for _, relayHello := range []bool{true, false} {
		t.Run(fmt.Sprintf("relay hello=%v", relayHello), func(t *testing.T) {
			svc := startService(t, "127.0.0.1", echoMode)
			var tn tunnel
			startRelay(t, "127.0.0.1", RelayConfig{Hello: relayHello, Wait: time.Second}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: !relayHello, Pool: 1, BackoffBase: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond}, &tn)
			tn.relayLog.waitCount(`link #\d+ refused 127\.0\.0\.1:\d+: hello mismatch: connecttwo `, 2)
			tn.agentLog.waitCount(`link #\d+ to .* failed: hello mismatch: listentwo `, 2)
			if tn.relay.IdleLinks() != 0 {
				t.Error("a mismatched link joined the pool")
			}
		})
	}
}

// TestRelayRestart stops the relay under a running agent and starts it again on the same
// ports: the agent logs the lost links, retries with growing delays, and reconnects by
// itself; a client is then served.
func TestRelayRestart(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Wait: testTimeout}, &tn)
	clientsAddr, linksAddr := tn.clients.Addr().String(), tn.links.Addr().String()
	startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 2, BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}, &tn)
	tn.waitPools(t, 2, 2)

	tn.stopRelay()
	waitDone(t, "Relay.Serve", tn.relayDone)
	tn.agentLog.waitCount(`link #\d+ down .*: closed by listentwo`, 2)
	// Retries while the relay is down, with the delay growing (jitter keeps each in the
	// upper half of its step: 10-20ms, 20-40ms, 40-80ms).
	tn.agentLog.waitCount(`connection refused; retry 3 in`, 2)
	delays := retryDelays(tn.agentLog.String())
	if len(delays) < 3 || !(delays[2] > delays[0]) {
		t.Errorf("retry delays do not grow: %v", delays)
	}

	// Restart on the same ports.
	cl, err := net.Listen("tcp", clientsAddr)
	if err != nil {
		t.Fatalf("relisten: %v", err)
	}
	ll, err := net.Listen("tcp", linksAddr)
	if err != nil {
		cl.Close()
		t.Fatalf("relisten: %v", err)
	}
	tn2 := tunnel{relayLog: newSink(t, "listentwo #2")}
	r, err := NewRelay(RelayConfig{Clients: epOf(t, cl.Addr()), Links: epOf(t, ll.Addr()), Wait: testTimeout, Log: tn2.relayLog.logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, cl, ll) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	tn2.relay = r
	tn2.waitPools(t, 0, 2)
	if err := tn.agent.WaitIdle(ctxT(t), 2); err != nil {
		t.Fatal("agent did not refill after the restart")
	}
	c, err := net.Dial("tcp", clientsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := roundTrip(c.(*net.TCPConn), 100<<10, 0); err != nil {
		t.Fatal(err)
	}
}

// retryDelays pulls "retry N in X.XXXs" delays, in log order, from the first slot that
// logged three.
func retryDelays(log string) []float64 {
	var out []float64
	for _, line := range strings.Split(log, "\n") {
		i := strings.Index(line, "; retry ")
		if i < 0 {
			continue
		}
		var n int
		var d float64
		if _, err := fmt.Sscanf(line[i:], "; retry %d in %fs", &n, &d); err == nil && n == len(out)+1 {
			out = append(out, d)
		}
	}
	return out
}

// TestStrangers: connections to the link port that send garbage or nothing never get a
// greeting, never become links and never get a client. A flood of silent ones holds at
// most MaxHandshakes connections, each for at most FirstByte, newcomers pushing the oldest
// out; a real agent gets through during the flood.
func TestStrangers(t *testing.T) {
	svc := startService(t, "127.0.0.1", echoMode)
	var tn tunnel
	const firstByte = 300 * time.Millisecond
	startRelay(t, "127.0.0.1", RelayConfig{
		Secret: []byte("s3cret"), Wait: 200 * time.Millisecond,
		MaxHandshakes: 4, FirstByte: firstByte, HandshakeTimeout: 500 * time.Millisecond,
	}, &tn)

	garbage := dial(t, tn.links)
	io.WriteString(garbage, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = garbage.SetReadDeadline(time.Now().Add(testTimeout))
	if got, _ := io.ReadAll(garbage); len(got) != 0 {
		t.Errorf("a stranger sending garbage got %q", got)
	}
	tn.relayLog.wait(`link #\d+ refused 127\.0\.0\.1:\d+: not a link: its first line is not the opening \("GET / HTTP/1\.1\?\?"\)`)

	// 20 silent connections: all but the last 4 are pushed out by the newer ones at once,
	// the last 4 are closed after FirstByte; none gets a byte.
	const flood = 20
	var conns []net.Conn
	for range flood {
		c, err := net.DialTimeout("tcp", tn.links.Addr().String(), testTimeout)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	start := time.Now()
	for _, c := range conns {
		expectClosed(t, c)
	}
	if took := time.Since(start); took > firstByte+2*time.Second {
		t.Errorf("the flood held its connections for %v", took)
	}
	// The first strangerBurst refusals are logged one by one, the rest summarised.
	testkit.WaitUntil(t, testTimeout, "every refusal counted", func() bool {
		return tn.relay.strangers.Count(kindSilentLink) == 1+flood
	})
	if n := tn.relay.linkRoom.len(); n != 0 {
		t.Errorf("%d strangers still held", n)
	}
	tn.relay.strangers.Flush()
	tn.relayLog.wait(`summary: \d+ more "links refused before their opening" in the last \d+s: pushed out by newer connections while silent x\d+, sent nothing within 300ms x4; from 127\.0\.0\.1 x\d+$`)
	// The summary is written after the lines it follows: count those once it is there.
	logged := tn.relayLog.count(`link #\d+ refused 127\.0\.0\.1:\d+: `)
	summarised, _ := strconv.Atoi(regexp.MustCompile(`summary: (\d+) more`).FindStringSubmatch(tn.relayLog.String())[1])
	if logged != strangerBurst || logged+summarised != 1+flood {
		t.Errorf("%d refusals logged and %d summarised, want %d and %d", logged, summarised, strangerBurst, 1+flood-strangerBurst)
	}

	// No stranger became a link or got a client.
	if tn.relay.IdleLinks() != 0 {
		t.Fatalf("strangers in the pool: %d", tn.relay.IdleLinks())
	}
	c := dial(t, tn.clients)
	io.WriteString(c, "x")
	expectClosed(t, c)
	tn.relayLog.wait(`failed #1 .*no idle link`)

	// A real agent joins while silent strangers keep coming back.
	f := tunneltest.StartFlood(t, "127.0.0.1", tn.links.Addr().String(), 20, 20000, nil)
	testkit.WaitUntil(t, testTimeout, "the flood", func() bool { return f.Dials.Load() >= 40 })
	startAgent(t, AgentConfig{Service: svc.ep(t), Pool: 1, Secret: []byte("s3cret")}, &tn)
	tn.waitPools(t, 1, 1)
	f.Stop()
	if _, err := roundTrip(dial(t, tn.clients), 10<<10, 0); err != nil {
		t.Fatal(err)
	}
}

// TestPoolCapRefusesLinks: links beyond --max-links are refused with a reason both sides
// log; connecttwo, with fewer than --pool links idle, retries the one refused with its
// backoff, with plain links and with TLS (IPv4 and IPv6), since the relay's pool is full
// without connecttwo holding --pool (--max-links below --pool).
func TestPoolCapRefusesLinks(t *testing.T) {
	for _, tc := range []struct {
		host string
		tls  bool
	}{{"127.0.0.1", false}, {"127.0.0.1", true}, {"::1", true}} {
		t.Run(fmt.Sprintf("%s tls=%v", tc.host, tc.tls), func(t *testing.T) {
			svc := startService(t, tc.host, echoMode)
			var tn tunnel
			rc := RelayConfig{MaxLinks: 2, Wait: testTimeout}
			ac := AgentConfig{Service: svc.ep(t), Pool: 3, BackoffBase: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
			if tc.tls {
				srv := newTLSServer(t)
				rc.TLS, ac.TLS = srv, pinned(t, srv.Pin)
			}
			startRelay(t, tc.host, rc, &tn)
			startAgent(t, ac, &tn)
			tn.relayLog.wait(`refused .*idle link pool is full`)
			tn.agentLog.waitCount(`relay refused the link: idle link pool is full; retry`, 2)
			tn.waitPools(t, 2, 2)
			if n := tn.agentLog.count(`not retried`); n != 0 {
				t.Errorf("%d links not retried with 2 of --pool 3 idle\n%s", n, tn.agentLog)
			}
		})
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s, warn, err := LoadSecret(write("ok", "top secret\r\nsecond line\n", 0o600))
	if err != nil || string(s) != "top secret" || warn != nil {
		t.Errorf("ok: %q %v %v", s, warn, err)
	}
	s, warn, err = LoadSecret(write("nolf", "abc", 0o640))
	if err != nil || string(s) != "abc" || warn != nil {
		t.Errorf("no newline: %q %v %v", s, warn, err)
	}
	open := write("open", "abc\n", 0o644)
	_, warn, err = LoadSecret(open)
	if want := "secret file " + open + ": readable by every user; chmod 600 it"; err != nil || warn == nil || warn.Error() != want {
		t.Errorf("world-readable: %v %v, want the warning %q", warn, err, want)
	}
	for _, empty := range []string{"", "\n", "   \nsecret on line 2\n"} {
		_, _, err = LoadSecret(write("empty", empty, 0o600))
		if !errors.Is(err, ErrEmptySecret) || !strings.Contains(err.Error(), "first line is empty") {
			t.Errorf("empty %q: %v, want ErrEmptySecret (a usage error for the tools)", empty, err)
		}
	}
	missing := filepath.Join(dir, "missing")
	_, _, err = LoadSecret(missing)
	// The file by its own name, not a flag's: cmd/* names the flag (cli.FileError).
	if want := "secret file " + missing + ": no such file or directory"; err == nil || errors.Is(err, ErrEmptySecret) || err.Error() != want {
		t.Errorf("missing file: %v, want %q", err, want)
	}
	_, _, err = LoadSecret(write("long", strings.Repeat("x", 5000), 0o600))
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("long line: %v", err)
	}
}

func TestValidate(t *testing.T) {
	good := RelayConfig{Clients: ep(1234), Links: ep(1235)}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]RelayConfig{
		"no -s":     {Links: ep(1)},
		"same":      {Clients: ep(1), Links: ep(1)},
		"neg wait":  {Clients: ep(1), Links: ep(2), Wait: -1},
		"empty sec": {Clients: ep(1), Links: ep(2), Secret: []byte{}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid, want an error", name)
		}
	}
	a := AgentConfig{Relay: hep(1), Service: hep(2), Pool: 1}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]AgentConfig{
		"pool 0":          {Relay: hep(1), Service: hep(2)},
		"pool -1":         {Relay: hep(1), Service: hep(2), Pool: -1},
		"no host":         {Relay: ep(1), Service: hep(2), Pool: 1},
		"proxy, no hello": {Relay: hep(1), Service: hep(2), Pool: 1, SendProxy: true},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid, want an error", name)
		}
	}
}

func ep(port int) endpoint.Endpoint  { return endpoint.Endpoint{Port: port} }
func hep(port int) endpoint.Endpoint { return endpoint.Endpoint{Host: "127.0.0.1", Port: port} }

// TestNoLeaks: after a tunnel has served clients and stopped, the goroutine count returns
// to where it was.
func TestNoLeaks(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("tunnel", func(t *testing.T) {
		svc := startService(t, "127.0.0.1", echoMode)
		var tn tunnel
		startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout, Secret: []byte("x")}, &tn)
		startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 3, Secret: []byte("x")}, &tn)
		tn.waitPools(t, 3, 3)
		for i := 0; i < 5; i++ {
			if _, err := roundTrip(dial(t, tn.clients), 10<<10, 0); err != nil {
				t.Fatal(err)
			}
		}
		held := dial(t, tn.clients)
		io.WriteString(held, "x")
		tn.relayLog.wait(`open #6 `)
	})
	// Goroutines that closed sockets may take a moment to be gone: poll the count until
	// the deadline.
	deadline := time.After(testTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > base {
		select {
		case <-deadline:
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, was %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		case <-tick.C:
		}
	}
}
