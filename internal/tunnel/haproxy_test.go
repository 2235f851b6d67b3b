package tunnel

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// needTool returns the path of a program the test needs. When it is missing and we are
// root, it installs the Debian package pkg with apt-get; only if that fails is the test
// skipped, saying why.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Geteuid() != 0 {
		t.Skipf("%s is not installed and we are not root to apt-get install %s", name, pkg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	apt := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if _, err := apt("install", "-y", "--no-install-recommends", pkg); err != nil {
		// The package lists may be missing or stale: update once and try again.
		if out, err := apt("update"); err != nil {
			t.Skipf("%s is missing and apt-get update failed: %v\n%s", name, err, out)
		}
		if out, err := apt("install", "-y", "--no-install-recommends", pkg); err != nil {
			t.Skipf("%s is missing and apt-get install %s failed: %v\n%s", name, pkg, err, out)
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("apt-get installed %s but %s is still not in PATH", pkg, name)
	}
	return p
}

// freePort returns a loopback port that was free a moment ago, for a program that cannot
// be handed a listener.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitListening dials addr until it accepts, failing after testTimeout.
func waitListening(t *testing.T, addr string, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("the program meant to listen on %s exited", addr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s after %v: %v", addr, testTimeout, err)
		}
	}
}

// TestSendProxyHAProxy puts a real HAProxy, reading PROXY headers (accept-proxy), behind
// connecttwo --send-proxy and checks from HAProxy's own log that it saw the client's real
// address and port, over IPv4 and IPv6, and that bytes flow through it intact.
func TestSendProxyHAProxy(t *testing.T) {
	haproxy := needTool(t, "haproxy", "haproxy")
	echo := startService(t, "127.0.0.1", echoMode)
	fePort := freePort(t)
	cfg := fmt.Sprintf(`global
    log stdout format raw local0 info
defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:%d accept-proxy
    log-format "seen client=%%ci:%%cp"
    default_backend be
backend be
    server echo %s
`, fePort, echo.ln.Addr())
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(haproxy, "-db", "-f", path)
	logs := newSink(t, "haproxy")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting haproxy: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			logs.Write([]byte(sc.Text() + "\n"))
		}
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill() // by pid: the process this test started
		<-exited
	})
	waitListening(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(fePort)), exited)

	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			var tn tunnel
			startRelay(t, host, RelayConfig{Hello: true, Wait: testTimeout}, &tn)
			startAgent(t, AgentConfig{
				Service: hep(fePort), Hello: true, SendProxy: true, Pool: 1,
			}, &tn)
			tn.waitPools(t, 1, 1)
			c := dial(t, tn.clients)
			if _, err := roundTrip(c, 256<<10, 0); err != nil {
				t.Fatalf("through haproxy: %v\nhaproxy:\n%s", err, logs)
			}
			la := c.LocalAddr().(*net.TCPAddr)
			logs.wait(`seen client=` + regexpQuote(la.IP.String()) + `:` + strconv.Itoa(la.Port) + `$`)
			t.Logf("haproxy log:\n%s", logs)
		})
	}
}
