package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// TestTLSBulkFewWrites relays 16 MiB of a client's random data up and 16 MiB of the
// service's down through TLS links, with listentwo under strace: every byte arrives
// (length and SHA-256, the half-close passed on), and listentwo writes its sockets far
// fewer times than there are TLS records (16 KiB of data each). One write per record (a
// TLS record per write(2) to the link, a record's plaintext per write(2) to the client)
// is what the copy through a 32 KiB buffer made.
func TestTLSBulkFewWrites(t *testing.T) {
	testkit.NeedStrace(t)
	const size = 16 << 20
	const records = 2 * size / (16 << 10)
	bins := tunneltest.Build(t)

	type result struct {
		d   testkit.Digest
		err error
	}
	upc := make(chan result, 1)
	svc := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) {
		d, err := testkit.Receive(c) // to the client's FIN
		if err == nil {
			_, err = testkit.Send(c, 2, size)
		}
		if err == nil {
			err = c.CloseWrite()
		}
		upc <- result{d, err}
	})
	key := filepath.Join(t.TempDir(), "relay.key")
	trace := filepath.Join(t.TempDir(), "trace")
	clients := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
	links := "[::1]:" + strconv.Itoa(testkit.FreePort(t, "::1"))
	relay := testkit.StartCmd(t, exec.Command("strace", "-f", "-qq", "--seccomp-bpf", "-o", trace,
		"-e", "trace=read,write,readv,writev,recvfrom,sendto,recvmsg,sendmsg",
		bins["listentwo"], "-s", clients, "-d", links, "--hello-dst", "--tls-key", key))
	pin := pinIn(t, relay)
	agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--hello-from-src", "--pool", "1", "--tls-pin", pin)
	relay.Log.WaitFor(t, `link #\d+ up `, 1, 20*time.Second)

	c := testkit.Dial(t, clients)
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	sent, err := testkit.Send(c, 1, size)
	if err == nil {
		err = c.CloseWrite()
	}
	if err != nil {
		t.Fatalf("sending: %v", err)
	}
	got, err := testkit.Receive(c)
	if want := testkit.Expected(2, size); err != nil || got != want {
		t.Fatalf("the client received %v, %v; want %v", got, err, want)
	}
	if up := <-upc; up.err != nil || up.d != sent {
		t.Fatalf("the service received %v, %v; want %v", up.d, up.err, sent)
	}
	relay.Log.WaitFor(t, `close #1 .* up=16777216 .* down=16777216 `, 1, 20*time.Second)

	// listentwo is strace's child: stop it, and strace ends with it.
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", relay.Pid(), relay.Pid()))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(kids)))
	if err != nil || pid <= 0 {
		t.Fatalf("finding listentwo under strace: %q, %v", kids, err)
	}
	_ = syscall.Kill(pid, syscall.SIGTERM) // a process this test started
	relay.Exit(t, 10*time.Second)
	agent.Stop(t, syscall.SIGTERM, 5*time.Second)

	calls := socketCalls(t, trace)
	writes := calls["write"] + calls["writev"] + calls["sendto"] + calls["sendmsg"]
	reads := calls["read"] + calls["readv"] + calls["recvfrom"] + calls["recvmsg"]
	t.Logf("%d TLS records through listentwo: %d writes and %d reads (EAGAIN included) on its sockets: %v", records, writes, reads, calls)
	if writes*3 > records {
		t.Errorf("listentwo wrote its sockets %d times for %d TLS records, want at most %d (3 records a write)", writes, records, records/3)
	}
}

// socketCalls counts the calls an strace -f output file shows, by name, leaving out those
// on descriptors 0 to 2 (the log).
func socketCalls(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	call := regexp.MustCompile(`^\d+\s+(\w+)\((\d+),`)
	n := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m := call.FindStringSubmatch(sc.Text()); m != nil {
			if fd, _ := strconv.Atoi(m[2]); fd > 2 {
				n[m[1]]++
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
