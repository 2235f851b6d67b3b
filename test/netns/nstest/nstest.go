// Package nstest gives a test its own network namespace: a loopback of its own, firewall
// rules (nft) and a resolv.conf that touch nothing outside it, programs run inside it with
// "ip netns exec", and sockets the test process itself opens inside it. It needs root and
// ip (iproute2); nft only for Nft. Only tests import it.
package nstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NS is a network namespace made for one test, with its loopback up. It is removed, with
// its /etc/netns directory, when the test ends.
type NS struct {
	// Name is the namespace's name, for "ip netns exec NAME".
	Name string
}

var made atomic.Int64

// New makes a namespace, or skips the test when it cannot be made here (not root, no ip).
func New(t testing.TB) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2) to make a network namespace")
	}
	n := &NS{Name: fmt.Sprintf("tt-%d-%d", os.Getpid(), made.Add(1))}
	run(t, "ip", "netns", "add", n.Name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", n.Name).Run()
		_ = os.RemoveAll(n.etc())
	})
	run(t, "ip", "-n", n.Name, "link", "set", "lo", "up")
	return n
}

func (n *NS) etc() string { return filepath.Join("/etc/netns", n.Name) }

// Run runs a command inside the namespace and fails the test if it fails.
func (n *NS) Run(t testing.TB, name string, args ...string) {
	t.Helper()
	run(t, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Nft loads an nft ruleset inside the namespace, or skips the test without nft.
func (n *NS) Nft(t testing.TB, ruleset string) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft (nftables)")
	}
	cmd := exec.Command("ip", "netns", "exec", n.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", n.Name, err, out)
	}
}

// Hosts makes text the hosts file of the programs run with "ip netns exec" in the
// namespace (bind-mounted over /etc/hosts for them, as resolv.conf is).
func (n *NS) Hosts(t testing.TB, text string) { n.etcFile(t, "hosts", text) }

// ResolvConf makes conf the resolv.conf of the programs run with "ip netns exec" in the
// namespace (ip bind-mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf for them).
func (n *NS) ResolvConf(t testing.TB, conf string) { n.etcFile(t, "resolv.conf", conf) }

// etcFile writes /etc/netns/NAME/name, which "ip netns exec" mounts over /etc/name.
func (n *NS) etcFile(t testing.TB, name, text string) {
	t.Helper()
	if err := os.MkdirAll(n.etc(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.etc(), name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Do runs f on an OS thread that has joined the namespace: the sockets f creates belong to
// the namespace for their whole life, whichever thread uses them later. The thread is
// never given back to other goroutines; it ends with f. It is never the process's main
// thread, whose namespace /proc/self/net (and so /proc/net/tcp) shows.
func (n *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go n.inThread(f, errc)
	return <-errc
}

func (n *NS) inThread(f func() error, errc chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread: hold it while another goroutine, so on another thread, goes in.
		defer runtime.UnlockOSThread()
		done := make(chan error, 1)
		go n.inThread(f, done)
		errc <- <-done
		return
	}
	// No UnlockOSThread from here on: the thread dies with this goroutine.
	fd, err := unix.Open(filepath.Join("/run/netns", n.Name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		errc <- fmt.Errorf("opening namespace %s: %w", n.Name, err)
		return
	}
	err = unix.Setns(fd, unix.CLONE_NEWNET)
	unix.Close(fd)
	if err != nil {
		errc <- fmt.Errorf("joining namespace %s: %w", n.Name, err)
		return
	}
	errc <- f()
}

// Listen opens a TCP listener inside the namespace on addr ("127.0.0.1:0", "[::1]:0") and
// closes it when the test ends.
func (n *NS) Listen(t testing.TB, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// ListenUDP opens a UDP socket inside the namespace on addr and closes it when the test
// ends.
func (n *NS) ListenUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	var pc net.PacketConn
	if err := n.Do(func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatalf("listening on udp %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.(*net.UDPConn)
}

// Dial connects from inside the namespace to addr, an IP literal with a port, within
// timeout.
func (n *NS) Dial(addr string, timeout time.Duration) (*net.TCPConn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
