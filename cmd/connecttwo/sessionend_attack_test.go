package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// rxQueue returns the bytes waiting unread in the receive queue of the IPv4 TCP socket
// from local port lport to remote port rport, as /proc/net/tcp shows it, or -1 when there
// is no such socket.
func rxQueue(t *testing.T, lport, rport int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := [2]string{fmt.Sprintf(":%04X", lport), fmt.Sprintf(":%04X", rport)}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 || !strings.HasSuffix(fs[1], want[0]) || !strings.HasSuffix(fs[2], want[1]) {
			continue
		}
		_, rx, _ := strings.Cut(fs[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/tcp: %q", sc.Text())
		}
		return int(n)
	}
	return -1
}

// waitFrozen waits until every thread of p is stopped (SIGSTOP takes effect after kill(2)
// returns).
func waitFrozen(t *testing.T, p *testkit.Proc) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", p.Pid())
	testkit.WaitUntil(t, testkit.Timeout, "every thread of the frozen program stopped", func() bool {
		tasks, err := os.ReadDir(dir)
		if err != nil || len(tasks) == 0 {
			return false
		}
		for _, task := range tasks {
			stat, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
			if err != nil {
				return false
			}
			// The state follows the command's name in parentheses.
			i := strings.LastIndexByte(string(stat), ')')
			if i < 0 || i+2 >= len(stat) || (stat[i+2] != 'T' && stat[i+2] != 't') {
				return false
			}
		}
		return true
	})
}

// TestAttackStopWhileSessionEnds: SIGTERM or SIGINT to one program of a TLS tunnel while
// a session on a link is ending and the other program does not answer (it is stopped,
// SIGSTOP, as a frozen or swapped-out peer is): listentwo after its client reset the
// connection and it sent its RST frame, connecttwo after the service did. The program
// waits for the peer's end of the session (up to 5 s) when it is not stopping; a stop
// must end that wait at once: exit 0 within a second. Over IPv4.
func TestAttackStopWhileSessionEnds(t *testing.T) {
	bins := tunneltest.Build(t)
	linkUp := regexp.MustCompile(`link #1 up 127\.0\.0\.1:(\d+) -> 127\.0\.0\.1:(\d+)`)
	for _, who := range []string{"listentwo", "connecttwo"} {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
			t.Run(who+"/"+sig.String(), func(t *testing.T) {
				conns := make(chan *net.TCPConn, 1)
				done := make(chan struct{}) // closed before the backend's cleanup waits for its handlers
				svc := testkit.StartBackend(t, "127.0.0.1:0", func(c *net.TCPConn) {
					b := make([]byte, 5)
					if _, err := io.ReadFull(c, b); err == nil {
						conns <- c
					}
					<-done
				})
				t.Cleanup(func() { close(done) })
				relay, agent, clients, _ := tlsTunnel(t, bins, "127.0.0.1", svc.Addr())
				m := linkUp.FindStringSubmatch(agent.Log.WaitFor(t, linkUp.String(), 1, testkit.Timeout)[0])
				agentPort, _ := strconv.Atoi(m[1])
				relayPort, _ := strconv.Atoi(m[2])
				c := testkit.Dial(t, clients)
				if _, err := c.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				var sc *net.TCPConn
				select {
				case sc = <-conns:
				case <-time.After(testkit.Timeout):
					t.Fatal("the service never got the client's bytes")
				}
				agent.Log.WaitFor(t, `open #1 .*\(link #1\)`, 1, testkit.Timeout)

				stopping, frozen := relay, agent
				reset, lport, rport := c, agentPort, relayPort // the frozen side's link socket
				if who == "connecttwo" {
					stopping, frozen = agent, relay
					reset, lport, rport = sc, relayPort, agentPort
				}
				frozen.Signal(t, syscall.SIGSTOP)
				defer frozen.Signal(t, syscall.SIGCONT)
				waitFrozen(t, frozen)
				_ = reset.SetLinger(0)
				reset.Close()
				// The stopping side has taken the reset and sent its RST frame: the frozen
				// side's kernel holds it unread.
				testkit.WaitUntil(t, testkit.Timeout, "the RST frame at the frozen side", func() bool {
					return rxQueue(t, lport, rport) > 0
				})
				stopping.Signal(t, sig)
				code, took := stopping.Exit(t, 10*time.Second)
				t.Logf("%s exited %d in %v after %v", who, code, took.Round(time.Millisecond), sig)
				if code != 0 || took > time.Second {
					t.Errorf("%s exited %d in %v after %v, waiting for the end of a session from a peer that does not answer; want 0 within 1s",
						who, code, took.Round(time.Millisecond), sig)
				}
				stopping.Log.WaitFor(t, `close #1 `, 1, testkit.Timeout)
			})
		}
	}
}
