package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// jsonLines decodes every line of a log as one JSON object, failing the test on any other.
func jsonLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for line := range strings.Lines(log) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not a JSON object: %v\n%s", line, err, log)
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", fmt.Sprint(m["time"])); err != nil {
			t.Errorf("line %q: time: %v", line, err)
		}
		objs = append(objs, m)
	}
	return objs
}

// With --log-format json, every line tcp-pf writes is one JSON object: the listening
// message, open and close with the exact byte counts each way, and a failed connection
// with its destination and error; over IPv6 loopback.
func TestJSONLog(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	p := startPF(t, "::1", "", "-d", be.Addr(), "--log-format", "json")
	c := testkit.Dial(t, p.addr)
	testkit.RoundTrip(t, c, 3, 1<<20+7)
	c.Close()
	p.Log.WaitFor(t, `"event":"close"`, 1, 5*time.Second)
	dead := "127.0.0.1:" + fmt.Sprint(testkit.FreePort(t, "127.0.0.1"))
	q := startPF(t, "127.0.0.1", "", "-d", dead, "--log-format=json")
	d, err := net.DialTimeout("tcp", q.addr, 5*time.Second)
	if err == nil {
		d.Close()
	}
	q.Log.WaitFor(t, `"event":"failed"`, 1, 5*time.Second)
	p.Stop(t, syscall.SIGTERM, 10*time.Second)
	q.Stop(t, syscall.SIGTERM, 10*time.Second)

	byEvent := map[string]map[string]any{}
	for _, m := range jsonLines(t, q.Log.String()+p.Log.String()) {
		if e := fmt.Sprint(m["event"]); e != "message" || strings.HasPrefix(fmt.Sprint(m["msg"]), "listening on [::1]:") {
			byEvent[e] = m
		}
	}
	if m := byEvent["message"]; m == nil || m["level"] != "info" {
		t.Errorf("listening line: %v", m)
	}
	client := regexp.MustCompile(`^\[::1\]:\d+$`)
	if m := byEvent["open"]; m == nil || m["id"] != 1.0 || !client.MatchString(fmt.Sprint(m["client"])) || m["dest"] != be.Addr() {
		t.Errorf("open: %v", m)
	}
	if m := byEvent["close"]; m == nil || m["id"] != 1.0 || m["up"] != float64(1<<20+7) || m["down"] != float64(1<<20+7) ||
		m["end"] != "client closed" || m["seconds"] == nil || m["up_rate"] == nil || m["down_rate"] == nil || m["level"] != "info" {
		t.Errorf("close: %v", m)
	}
	if m := byEvent["failed"]; m == nil || m["dest"] != dead || m["error"] != "connection refused" || m["level"] != "error" {
		t.Errorf("failed: %v", m)
	}
}

// With -q, a connection served without trouble writes nothing, while a host that refuses
// still gives its failed line (an error) and the line that sets it aside (a warning).
func TestQuietLog(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	dead := "127.0.0.1:" + fmt.Sprint(testkit.FreePort(t, "127.0.0.1"))
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte(dead+" 0\n"+be.Addr()+" 100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startPF(t, "127.0.0.1", "", "-l", hosts, "-q")
	for i := range 3 {
		c := testkit.Dial(t, p.addr)
		testkit.RoundTrip(t, c, uint64(i), 64<<10)
		c.Close()
	}
	p.Stop(t, syscall.SIGTERM, 10*time.Second)
	lines := strings.Split(strings.TrimSuffix(p.Log.String(), "\n"), "\n")
	want := []string{
		`^\S+ failed #1 127\.0\.0\.1:\d+ -> ` + regexp.QuoteMeta(dead) + `: connection refused$`,
		`^\S+ host ` + regexp.QuoteMeta(dead) + ` set aside \(connection refused\): `,
	}
	if len(lines) != len(want) {
		t.Fatalf("quiet log has %d lines, want %d:\n%s", len(lines), len(want), p.Log.String())
	}
	for i, re := range want {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("line %d %q, want %s", i+1, lines[i], re)
		}
	}
}
