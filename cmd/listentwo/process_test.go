package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel"
)

// relayProc is a listentwo process started by a test.
type relayProc struct {
	*testkit.Proc
	clients, links endpoint.Endpoint
}

// startRelayTo runs listentwo on two free loopback ports with args after -s and -d, its
// stderr going to stderr. The process is killed, by its pid, if the test ends with it
// running.
func startRelayTo(t *testing.T, stderr *os.File, args ...string) *relayProc {
	t.Helper()
	p := &relayProc{ // listentwo rejects port 0
		clients: endpoint.Endpoint{Host: "127.0.0.1", Port: testkit.FreePort(t, "127.0.0.1")},
		links:   endpoint.Endpoint{Host: "127.0.0.1", Port: testkit.FreePort(t, "127.0.0.1")},
	}
	argv := append([]string{"-s", p.clients.String(), "-d", p.links.String()}, args...)
	cmd := exec.Command("listentwo", argv...)
	cmd.Stderr = stderr
	p.Proc = testkit.StartCmd(t, cmd)
	return p
}

// stop sends SIGTERM and waits for exit 0.
func (p *relayProc) stop(t *testing.T) {
	t.Helper()
	p.Stop(t, syscall.SIGTERM, 10*time.Second)
}

// startAgent runs connecttwo's engine in this process, with links to p and the echo
// service svc, until the test ends.
func startAgent(t *testing.T, p *relayProc, svc *testkit.Backend, secret string, log *testkit.LogBuf) *tunnel.Agent {
	t.Helper()
	cfg := tunnel.AgentConfig{
		Relay: p.links, Service: endpoint.Endpoint{Host: "127.0.0.1", Port: svc.Port()}, Pool: 2,
		BackoffBase: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
	}
	if secret != "" {
		cfg.Secret = []byte(secret)
	}
	if log != nil {
		cfg.Log = connlog.New(log)
	}
	a, err := tunnel.NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// A log reader that goes away (listentwo 2>&1 | head -1) stops the logging, not the
// relay: 200 clients are served through the tunnel afterwards, every byte checked, and
// SIGTERM still stops listentwo with exit 0.
func TestLogReaderGone(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := startRelayTo(t, w)
	w.Close()
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(r).ReadString('\n'); err != nil || !strings.Contains(line, "listening for clients") {
		t.Fatalf("first line %q (%v), want the listening line", line, err)
	}
	r.Close() // as head -1 does
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	startAgent(t, p, svc, "", nil)
	for i := range 200 {
		c := testkit.Dial(t, p.clients.String())
		testkit.RoundTrip(t, c, uint64(i), 10000)
		c.Close()
	}
	p.stop(t)
}

// SIGHUP makes listentwo reread --secret-file and go on: afterwards an agent with the old
// secret is refused (its idle links, which proved the old one, are closed and cannot come
// back), and one with the new secret is accepted and serves clients.
func TestSIGHUPRereadsSecret(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("old secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := testkit.NewLogBuf()
	lr, lw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := startRelayTo(t, lw, "--secret-file", secret, "--wait", "5")
	lw.Close()
	go func() { defer lr.Close(); _, _ = lr.WriteTo(log) }()
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)

	oldLog := testkit.NewLogBuf()
	old := startAgent(t, p, svc, "old secret", oldLog)
	if err := old.WaitIdle(timeout(t), 2); err != nil {
		t.Fatal(err)
	}
	c := testkit.Dial(t, p.clients.String())
	testkit.RoundTrip(t, c, 1, 10000)
	c.Close()

	if err := os.WriteFile(secret, []byte("new secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	log.WaitFor(t, `reread secret file `+secret+`: links must prove the new secret from now on$`, 1, 10*time.Second)
	log.WaitFor(t, `link #\d+ down \S+: the secret changed$`, 1, 10*time.Second)
	// The old agent reconnects and is refused, on both sides.
	log.WaitFor(t, `link #\d+ refused \S+: .*authentication failed`, 1, 10*time.Second)
	oldLog.WaitFor(t, `link #\d+ to \S+ failed: .*; retry`, 1, 10*time.Second)
	select {
	case <-p.Done():
		t.Fatalf("listentwo exited on SIGHUP: %v\n%s", p.Err(), log.String())
	default:
	}

	fresh := startAgent(t, p, svc, "new secret", nil)
	if err := fresh.WaitIdle(timeout(t), 2); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c := testkit.Dial(t, p.clients.String())
		testkit.RoundTrip(t, c, uint64(10+i), 100000)
		c.Close()
	}
	p.stop(t)
}

// timeout returns a context that ends after 10 s or with the test.
func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
