package main

import (
	"net"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"shd-tcp-tools/internal/systemd/sdtest"
	"shd-tcp-tools/internal/testkit"
)

// tcpPF is the path of this test binary as tcp-pf, for systemd-socket-activate to exec.
func tcpPF(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("tcp-pf")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Socket-activated, tcp-pf serves the socket systemd passed, over IPv4 and IPv6, with -s
// left out or given: the bytes of every connection arrive whole (length and checksum),
// READY=1 comes once it listens and STOPPING=1 when SIGTERM stops it.
func TestSocketActivated(t *testing.T) {
	for _, c := range []struct {
		host string
		args []string
	}{
		{"127.0.0.1", nil},
		{"::1", []string{"-s", "{0}"}}, // the command line as without systemd
	} {
		t.Run(c.host, func(t *testing.T) {
			t.Parallel()
			be := testkit.StartBackend(t, "["+c.host+"]:0", testkit.Echo)
			notify := sdtest.NewNotify(t)
			p := sdtest.Activate(t, []string{c.host}, []string{"-E", "NOTIFY_SOCKET=" + notify.Path},
				tcpPF(t), append([]string{"-d", be.Addr()}, c.args...)...)
			first := testkit.Dial(t, p.Addrs[0]) // systemd-socket-activate starts tcp-pf now
			testkit.RoundTrip(t, first, 1, 1<<20)
			p.Log.WaitFor(t, ` listening on `+regexp.QuoteMeta(p.Addrs[0])+`, forwarding to `, 1, sdtest.Timeout)
			if got := notify.Next(t); got != "READY=1" {
				t.Fatalf("first notification %q, want READY=1", got)
			}
			second := testkit.Dial(t, p.Addrs[0])
			testkit.RoundTrip(t, second, 2, 300000)
			first.Close()
			second.Close()
			p.Log.WaitFor(t, `close #\d+ `, 2, sdtest.Timeout)
			p.Signal(t, syscall.SIGTERM)
			if got := notify.Next(t); got != "STOPPING=1" {
				t.Fatalf("second notification %q, want STOPPING=1", got)
			}
			if code, _ := p.Exit(t, sdtest.Timeout); code != 0 {
				t.Fatalf("exit %d after SIGTERM:\n%s", code, p.Log.String())
			}
			if be.Accepts.Load() != 2 {
				t.Errorf("backend saw %d connections, want 2", be.Accepts.Load())
			}
		})
	}
}

// Passed sockets that do not fit are a usage error (exit 2) with one line saying why,
// and nothing is served.
func TestSocketActivatedMisfit(t *testing.T) {
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	for _, c := range []struct {
		name  string
		hosts []string
		args  []string
		want  string
	}{
		{"two sockets", []string{"127.0.0.1", "::1"}, nil,
			`tcp-pf: LISTEN_FDS=2: systemd passed 2 sockets, this tool takes 1: for -s`},
		{"another -s", []string{"127.0.0.1"}, []string{"-s", "1"},
			`tcp-pf: -s :1: systemd passed the socket 127\.0\.0\.1:\d+ for it; leave -s out or make them agree`},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"-d", be.Addr()}, c.args...)
			p := sdtest.Activate(t, c.hosts, nil, tcpPF(t), args...)
			if c, err := net.DialTimeout("tcp", p.Addrs[0], sdtest.Timeout); err == nil {
				c.Close() // starts tcp-pf
			}
			if code, _ := p.Exit(t, sdtest.Timeout); code != 2 {
				t.Fatalf("exit %d, want 2:\n%s", code, p.Log.String())
			}
			lines := strings.Split(strings.TrimSuffix(p.Log.String(), "\n"), "\n")
			var ours []string
			for _, l := range lines {
				if strings.HasPrefix(l, "tcp-pf") {
					ours = append(ours, l)
				}
			}
			if len(ours) != 1 || !regexp.MustCompile(`^`+c.want+`$`).MatchString(ours[0]) {
				t.Fatalf("tcp-pf's lines %q, want one matching %q", ours, c.want)
			}
			if be.Accepts.Load() != 0 {
				t.Errorf("the backend got %d connections", be.Accepts.Load())
			}
		})
	}
}
