// Package netns runs listentwo and connecttwo on three test hosts made of network
// namespaces: A behind a firewall that drops every incoming connection, B the relay, and C
// a client. It needs root, ip (iproute2) and nft (nftables), and uses only documentation
// addresses: A-B on 198.51.100.0/24, B-C on 192.0.2.0/24.
package netns

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	aAddr = "198.51.100.2" // A, on the A-B link
	bAtoB = "198.51.100.1" // B, on the A-B link
	bCtoB = "192.0.2.1"    // B, on the B-C link
	cAddr = "192.0.2.2"    // C
)

// waitTimeout bounds every wait for a program's readiness or output.
const waitTimeout = 15 * time.Second

func TestFirewalledScenario(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (install iproute2 and nftables)", tool)
		}
	}
	bin := build(t)
	pid := os.Getpid()
	nsA, nsB, nsC := fmt.Sprintf("tt-a-%d", pid), fmt.Sprintf("tt-b-%d", pid), fmt.Sprintf("tt-c-%d", pid)
	for _, ns := range []string{nsA, nsB, nsC} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	vA, vBA := fmt.Sprintf("vA%d", pid), fmt.Sprintf("vBA%d", pid)
	vC, vBC := fmt.Sprintf("vC%d", pid), fmt.Sprintf("vBC%d", pid)
	run(t, "ip", "link", "add", vA, "netns", nsA, "type", "veth", "peer", "name", vBA, "netns", nsB)
	run(t, "ip", "link", "add", vC, "netns", nsC, "type", "veth", "peer", "name", vBC, "netns", nsB)
	run(t, "ip", "-n", nsA, "addr", "add", aAddr+"/24", "dev", vA)
	run(t, "ip", "-n", nsB, "addr", "add", bAtoB+"/24", "dev", vBA)
	run(t, "ip", "-n", nsB, "addr", "add", bCtoB+"/24", "dev", vBC)
	run(t, "ip", "-n", nsC, "addr", "add", cAddr+"/24", "dev", vC)
	for _, l := range [][2]string{{nsA, vA}, {nsB, vBA}, {nsB, vBC}, {nsC, vC}} {
		run(t, "ip", "-n", l[0], "link", "set", l[1], "up")
	}
	// B routes between its two networks, so only A's firewall keeps C out of A.
	run(t, "ip", "-n", nsA, "route", "add", "default", "via", bAtoB)
	run(t, "ip", "-n", nsC, "route", "add", "default", "via", bCtoB)
	run(t, "ip", "netns", "exec", nsB, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

	// A's services: the loopback-only services the tunnel serves, and a listener on A's
	// network address that only shows whether C can reach A directly.
	startProc(t, "serve-proxy", nsA, "ready", bin("nshelper"), "serve", "-echo", "127.0.0.1:7000", "-proxy", "-probe", aAddr+":7001")
	startProc(t, "serve-plain", nsA, "ready", bin("nshelper"), "serve", "-echo", "127.0.0.1:7002")

	// Control: without the firewall, C reaches A directly.
	if out, err := exec.Command("ip", "netns", "exec", nsC, bin("nshelper"), "probe", "-addr", aAddr+":7001", "-timeout", "3s").CombinedOutput(); err != nil {
		t.Fatalf("before the firewall, C should reach A: %v\n%s", err, out)
	}
	// A's firewall: nothing comes in but loopback and replies to what A opened.
	nft := exec.Command("ip", "netns", "exec", nsA, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(`table inet tunneltest {
	chain input {
		type filter hook input priority 0; policy drop;
		iif "lo" accept
		ct state established,related accept
	}
}
`)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	out, err := exec.Command("ip", "netns", "exec", nsC, bin("nshelper"), "probe", "-addr", aAddr+":7001", "-timeout", "1s").CombinedOutput()
	if err == nil {
		t.Fatalf("C reaches A through the firewall:\n%s", out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("probe from C: %v\n%s", err, out)
	}
	t.Logf("C cannot reach A directly: %s", strings.TrimSpace(string(out)))

	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Tunnel 1: hellos, a secret, and the header passed on so A's service sees C.
	relay1 := startProc(t, "listentwo-hello", nsB, "listening for clients", bin("listentwo"),
		"-s", bCtoB+":1234", "-d", bAtoB+":1235", "--hello-dst", "--secret-file", secret)
	agent1 := startProc(t, "connecttwo-hello", nsA, "keeping 2 links", bin("connecttwo"),
		"-s", bAtoB+":1235", "-d", "127.0.0.1:7000", "--hello-from-src", "--send-proxy", "--secret-file", secret)
	relay1.waitCount(`link #\d+ up `+regexp.QuoteMeta(aAddr), 2)
	agent1.waitCount(`link #\d+ up `, 2)

	// Tunnel 2: no hellos, the client speaks first.
	relay2 := startProc(t, "listentwo-plain", nsB, "listening for clients", bin("listentwo"),
		"-s", bCtoB+":2234", "-d", bAtoB+":2235")
	startProc(t, "connecttwo-plain", nsA, "keeping 1 link open", bin("connecttwo"),
		"-s", bAtoB+":2235", "-d", "127.0.0.1:7002", "--pool", "1")
	relay2.waitCount(`link #\d+ up `, 1)

	// Tunnel 3: TLS links with the relay's key pinned, as the README sets it up: B makes
	// its key and prints the pin, A is given it; and the secret, bound to the TLS session.
	key := filepath.Join(t.TempDir(), "relay.key")
	pinOut, err := exec.Command("ip", "netns", "exec", nsB, bin("listentwo"), "--tls-key", key, "--print-pin").Output()
	if err != nil {
		t.Fatalf("listentwo --print-pin: %v", err)
	}
	pin := strings.TrimSpace(string(pinOut))
	relay3 := startProc(t, "listentwo-tls", nsB, "listening for clients", bin("listentwo"),
		"-s", bCtoB+":3234", "-d", bAtoB+":3235", "--hello-dst", "--tls-key", key, "--secret-file", secret)
	relay3.waitCount(`tls pin `+regexp.QuoteMeta(pin)+`$`, 1)
	agent3 := startProc(t, "connecttwo-tls", nsA, "keeping 2 links", bin("connecttwo"),
		"-s", bAtoB+":3235", "-d", "127.0.0.1:7002", "--hello-from-src", "--tls-pin", pin, "--secret-file", secret)
	relay3.waitCount(`link #\d+ up `+regexp.QuoteMeta(aAddr), 2)
	agent3.waitCount(`link #\d+ up `, 2)

	// C through B reaches A's loopback services, byte for byte, in parallel.
	var wg sync.WaitGroup
	errs := make(chan string, 12)
	for i := 0; i < 4; i++ {
		wg.Add(3)
		go func() {
			defer wg.Done()
			out, err := exec.Command("ip", "netns", "exec", nsC, bin("nshelper"), "client",
				"-addr", bCtoB+":3234", "-bytes", "3000000").CombinedOutput()
			if err != nil {
				errs <- fmt.Sprintf("TLS tunnel: %v\n%s", err, out)
			}
		}()
		go func() {
			defer wg.Done()
			out, err := exec.Command("ip", "netns", "exec", nsC, bin("nshelper"), "client",
				"-addr", bCtoB+":1234", "-bytes", "3000000", "-expect-src", cAddr).CombinedOutput()
			if err != nil {
				errs <- fmt.Sprintf("hello tunnel: %v\n%s", err, out)
			}
		}()
		go func() {
			defer wg.Done()
			out, err := exec.Command("ip", "netns", "exec", nsC, bin("nshelper"), "client",
				"-addr", bCtoB+":2234", "-bytes", "3000000").CombinedOutput()
			if err != nil {
				errs <- fmt.Sprintf("plain tunnel: %v\n%s", err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	relay1.waitCount(`close #\d+ `+regexp.QuoteMeta(cAddr)+`:\d+ -> link #\d+ `+regexp.QuoteMeta(aAddr)+`:\d+ up=3000000 .* down=30000\d\d `, 4)
	agent1.waitCount(`open #\d+ `+regexp.QuoteMeta(cAddr)+`:\d+ \(link #\d+\) -> 127\.0\.0\.1:7000`, 4)
	relay2.waitCount(`close #\d+ .* up=3000000 .* down=3000000 `, 4)
	relay3.waitCount(`close #\d+ `+regexp.QuoteMeta(cAddr)+`:\d+ -> link #\d+ `+regexp.QuoteMeta(aAddr)+`:\d+ up=3000000 .* down=3000000 `, 4)
	agent3.waitCount(`close #\d+ `+regexp.QuoteMeta(cAddr)+`:\d+ \(link #\d+\) -> 127\.0\.0\.1:7002 up=3000000 `, 4)

	// SIGTERM and SIGINT stop both ends cleanly, with exit 0.
	relay1.terminate(t, syscall.SIGTERM)
	agent1.terminate(t, syscall.SIGINT)
	relay3.terminate(t, syscall.SIGTERM)
	agent3.terminate(t, syscall.SIGTERM)
}

// build compiles the two tools and the helper into a temporary directory and returns a
// function naming a binary there.
func build(t *testing.T) func(string) string {
	t.Helper()
	dir := t.TempDir()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to build the binaries")
	}
	cmd := exec.Command(goTool, "build", "-o", dir+"/",
		"shd-tcp-tools/cmd/listentwo", "shd-tcp-tools/cmd/connecttwo", "shd-tcp-tools/test/netns/nshelper")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return func(name string) string { return filepath.Join(dir, name) }
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// proc is a program running in a namespace, its output collected line by line.
type proc struct {
	name    string
	cmd     *exec.Cmd
	mu      sync.Mutex
	out     bytes.Buffer
	changed chan struct{}
	exited  chan struct{}
	t       *testing.T
}

// startProc runs prog in namespace ns ("ip netns exec" execs it, so the pid is prog's)
// and waits until its output shows ready. The test kills it by pid at the end.
func startProc(t *testing.T, name, ns, ready, prog string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, changed: make(chan struct{}), exited: make(chan struct{}), t: t}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, prog}, args...)...)
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		p.cmd.Wait()
		w.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill() // by pid: a process this test started
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.output())
		}
	})
	p.waitCount(regexp.QuoteMeta(ready), 1)
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitCount waits until n lines of the output match re.
func (p *proc) waitCount(re string, n int) {
	p.t.Helper()
	rx := regexp.MustCompile("(?m)" + re)
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		got, ch := len(rx.FindAllStringIndex(p.out.String(), -1)), p.changed
		p.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-p.exited:
			p.t.Fatalf("%s exited while waiting for %q:\n%s", p.name, re, p.output())
		case <-deadline.C:
			p.t.Fatalf("%s: waited %v for %d lines matching %q, got %d:\n%s", p.name, waitTimeout, n, re, got, p.output())
		}
	}
}

// terminate sends sig and expects a clean exit 0.
func (p *proc) terminate(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not stop within %v of %v", p.name, waitTimeout, sig)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exited with %d after %v, want 0:\n%s", p.name, code, sig, p.output())
	}
}
