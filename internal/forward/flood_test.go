package forward

import (
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/testkit"
)

// floodClients connects n clients to addr one after the other, each until tcp-pf ends it
// (a FIN or a reset), so that each has been refused or failed, and logged or counted,
// before the next. The loop is bounded by n and by a deadline.
func floodClients(t *testing.T, addr string, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var buf [1]byte
	for i := range n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d clients ended within 60s", i, n)
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if errors.Is(err, syscall.ECONNRESET) {
			continue // reset by tcp-pf before the dial returned: ended already
		}
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(buf[:]); err == nil {
			t.Fatalf("client %d was served, want it ended", i)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("client %d: not ended within 10s", i)
		}
		c.Close()
	}
}

// floodLines checks a log after n events of one kind: at most floodBurst lines of their
// own (re is one of them) per interval, and summary lines (sum) whose counts, with those
// lines, add up to n: no event lost, none counted twice. It returns the summary lines.
func floodLines(t *testing.T, log, re, sum string, n int) []string {
	t.Helper()
	own := regexp.MustCompile("(?m)"+re).FindAllString(log, -1)
	rx := regexp.MustCompile(`(?m)^\S+ summary: (\d+) more ` + sum + `$`)
	var summaries []string
	counted := 0
	for _, m := range rx.FindAllStringSubmatch(log, -1) {
		summaries = append(summaries, m[0])
		c, _ := strconv.Atoi(m[1])
		counted += c
	}
	if len(own)+counted != n {
		t.Errorf("%d lines of their own and %d counted in %d summaries; want %d events in all\n%s", len(own), counted, len(summaries), n, log)
	}
	if len(summaries) == 0 || len(own) > floodBurst*(len(summaries)+1) {
		t.Errorf("%d lines of their own and %d summaries for %d events: want at most %d lines per interval", len(own), len(summaries), n, floodBurst)
	}
	if lines := strings.Count(log, "\n"); lines > 3*floodBurst*(len(summaries)+1) {
		t.Errorf("%d log lines for %d events", lines, n)
	}
	return summaries
}

// Thousands of clients refused by the allow list give a burst of lines and a summary
// with their count, reason and client block, not a line each; IPv4 and IPv6.
func TestRefusedFloodSummarised(t *testing.T) {
	for _, tc := range []struct {
		listen, block string
		n             int
	}{
		{"127.0.0.1:0", `127\.0\.0\.0/24`, 1500},
		{"[::1]:0", `::/64`, 500},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
			al, err := allow.Parse(t.Context(), nil, []string{"192.0.2.0/24"})
			if err != nil {
				t.Fatal(err)
			}
			pf := startServer(t, tc.listen, Config{Dest: dest(t, be.Addr()), Allow: al})
			floodClients(t, pf.addr, tc.n)
			if err := pf.stop(); err != nil {
				t.Fatal(err)
			}
			floodLines(t, pf.log.String(), `^\S+ refused \S+: not in the allow list$`,
				`"refused" in the last \d+s: not in the allow list x\d+; from `+tc.block+` x\d+`, tc.n)
		})
	}
}

// A dead destination tried by thousands of clients gives a burst of "failed" lines and a
// summary naming it, with the count and the reason, not a line per client.
func TestDeadHostFloodSummarised(t *testing.T) {
	dead := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1")) // nothing listens
	ep, err := endpoint.ParseHostPort(dead)
	if err != nil {
		t.Fatal(err)
	}
	pf := startServer(t, "127.0.0.1:0", Config{Dest: ep})
	const n = 1500
	floodClients(t, pf.addr, n)
	if err := pf.stop(); err != nil {
		t.Fatal(err)
	}
	q := regexp.QuoteMeta(dead)
	floodLines(t, pf.log.String(), `^\S+ failed #\d+ 127\.0\.0\.1:\d+ -> `+q+`: connection refused$`,
		`"failed -> `+q+`" in the last \d+s: connection refused x\d+; from 127\.0\.0\.0/24 x\d+`, n)
}
