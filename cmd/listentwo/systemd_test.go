package main

import (
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"shd-tcp-tools/internal/systemd/sdtest"
	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// Socket-activated, listentwo serves clients and links on the two sockets systemd passed:
// matched by FileDescriptorName (given here in the other order), or without names in the
// order -s, -d. A real connecttwo joins, a client's bytes arrive whole both ways (length and
// checksum), READY=1 comes once both listen and STOPPING=1 at SIGTERM.
func TestSocketActivated(t *testing.T) {
	bins := tunneltest.Build(t)
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	for _, c := range []struct {
		name           string
		hosts, opts    []string
		clients, links int // which passed socket is which
	}{
		{"named", []string{"::1", "127.0.0.1"}, []string{"--fdname=links:clients"}, 1, 0},
		{"in order", []string{"127.0.0.1", "::1"}, nil, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			notify := sdtest.NewNotify(t)
			p := sdtest.Activate(t, c.hosts, append(c.opts, "-E", "NOTIFY_SOCKET="+notify.Path), bins["listentwo"])
			clients, links := p.Addrs[c.clients], p.Addrs[c.links]
			// connecttwo's first link starts listentwo.
			agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--pool", "2")
			p.Log.WaitFor(t, `listening for clients on `+regexp.QuoteMeta(clients)+` and for links on `+regexp.QuoteMeta(links)+`$`, 1, sdtest.Timeout)
			if got := notify.Next(t); got != "READY=1" {
				t.Fatalf("first notification %q, want READY=1", got)
			}
			p.Log.WaitFor(t, `link #\d+ up `, 2, sdtest.Timeout)
			cl := testkit.Dial(t, clients)
			testkit.RoundTrip(t, cl, 1, 1<<20)
			cl.Close()
			p.Log.WaitFor(t, `close #\d+ `, 1, sdtest.Timeout)
			agent.Stop(t, syscall.SIGTERM, sdtest.Timeout)
			p.Signal(t, syscall.SIGTERM)
			if got := notify.Next(t); got != "STOPPING=1" {
				t.Fatalf("second notification %q, want STOPPING=1", got)
			}
			if code, _ := p.Exit(t, sdtest.Timeout); code != 0 {
				t.Fatalf("exit %d after SIGTERM:\n%s", code, p.Log.String())
			}
		})
	}
	t.Run("misfit", func(t *testing.T) { misfit(t, bins) })
}

// misfit: one socket or three for the two that listentwo takes, or two of the same name:
// exit 2 with one line saying why.
func misfit(t *testing.T, bins map[string]string) {
	for _, c := range []struct {
		name        string
		hosts, opts []string
		want        string // a regular expression
		args        []string
	}{
		{"one socket", []string{"127.0.0.1"}, nil,
			`listentwo: LISTEN_FDS=1: systemd passed 1 socket, this tool takes 2: for -s \(clients\), -d \(links\)`, nil},
		{"three sockets", []string{"127.0.0.1", "::1", "127.0.0.1"}, nil,
			`listentwo: LISTEN_FDS=3: systemd passed 3 sockets, this tool takes 2: for -s \(clients\), -d \(links\)`, nil},
		{"a name twice", []string{"127.0.0.1", "::1"}, []string{"--fdname=links:links"},
			`listentwo: LISTEN_FDNAMES=links:links: two sockets are named "links"`, nil},
		{"another -d", []string{"127.0.0.1", "::1"}, nil,
			`listentwo: -d :1: systemd passed the socket \[::1\]:\d+ for it; leave -d out or make them agree`, []string{"-d", "1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := sdtest.Activate(t, c.hosts, c.opts, bins["listentwo"], c.args...)
			if cn, err := net.DialTimeout("tcp", p.Addrs[0], sdtest.Timeout); err == nil {
				cn.Close() // starts listentwo
			}
			if code, _ := p.Exit(t, sdtest.Timeout); code != 2 {
				t.Fatalf("exit %d, want 2:\n%s", code, p.Log.String())
			}
			var ours []string
			for _, l := range strings.Split(p.Log.String(), "\n") {
				if strings.HasPrefix(l, "listentwo") {
					ours = append(ours, l)
				}
			}
			if len(ours) != 1 || !regexp.MustCompile(`^`+c.want+`$`).MatchString(ours[0]) {
				t.Fatalf("listentwo's lines %q, want one matching %q", ours, c.want)
			}
		})
	}
}
