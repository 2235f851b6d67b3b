package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/test/netns/nstest"
)

func TestParsePort(t *testing.T) {
	good := map[string]int{"1": 1, "22": 22, "65535": 65535, "ssh": 22, "0080": 80}
	for in, want := range good {
		if got, err := ParsePort(in); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "65536", "99999", "abc", "-1", "+5", "1e3", "4294967318", "nosuchservice"} {
		if got, err := ParsePort(in); err == nil {
			t.Errorf("ParsePort(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseHostPort(t *testing.T) {
	good := map[string]Endpoint{
		"example.test:22":   {"example.test", 22},
		"192.0.2.1:80":      {"192.0.2.1", 80},
		"[::1]:8080":        {"::1", 8080},
		"[2001:db8::5]:ssh": {"2001:db8::5", 22},
	}
	for in, want := range good {
		if got, err := ParseHostPort(in); err != nil || got != want {
			t.Errorf("ParseHostPort(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"host", ":22", "::1:22", "host:0", "host:65536", "[::1]", "host:abc"} {
		if got, err := ParseHostPort(in); err == nil {
			t.Errorf("ParseHostPort(%q) = %v, want an error", in, got)
		}
	}
	if got := (Endpoint{"::1", 22}).String(); got != "[::1]:22" {
		t.Errorf("String() = %q", got)
	}
}

func TestParseListen(t *testing.T) {
	good := map[string]Endpoint{
		"8080": {"", 8080}, ":8080": {"", 8080}, "127.0.0.1:8080": {"127.0.0.1", 8080}, "[::1]:9": {"::1", 9},
	}
	for in, want := range good {
		if got, err := ParseListen(in); err != nil || got != want {
			t.Errorf("ParseListen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0", ":0", "65536", "abc:", "::1:80", "1.2.3.4:99999"} {
		if got, err := ParseListen(in); err == nil {
			t.Errorf("ParseListen(%q) = %v, want an error", in, got)
		}
	}
}

func TestResolveLocal(t *testing.T) {
	ctx := context.Background()
	if ip, err := ResolveLocal(ctx, ""); ip.IsValid() || err != nil {
		t.Fatalf("empty: %v %v", ip, err)
	}
	if ip, err := ResolveLocal(ctx, "127.0.0.2"); err != nil || ip != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("literal: %v %v", ip, err)
	}
	if ip, err := ResolveLocal(ctx, "::ffff:127.0.0.2"); err != nil || ip != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("mapped: %v %v", ip, err)
	}
	if ip, err := ResolveLocal(ctx, "fe80::1%lo"); err != nil || ip.Zone() != "lo" {
		t.Fatalf("zone: %v %v", ip, err)
	}
	if ip, err := ResolveLocal(ctx, "localhost"); err != nil || !ip.IsLoopback() {
		t.Fatalf("localhost: %v %v", ip, err)
	}
	_, err := ResolveLocal(ctx, "no-such-host.invalid")
	if err == nil || !strings.Contains(err.Error(), "INADDR_DEFAULT=no-such-host.invalid") {
		t.Fatalf("unresolvable: %v", err)
	}
}

func listen(t *testing.T, addr string) *net.TCPListener {
	t.Helper()
	ln, err := Listen(context.Background(), Endpoint{Host: addr}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// A closed port: listen, note the port, close.
func closedPort(t *testing.T, host string) int {
	ln := listen(t, host)
	p := port(ln)
	ln.Close()
	return p
}

func TestDialFromLocalAddress(t *testing.T) {
	ln := listen(t, "127.0.0.1")
	d := Dialer{Local: netip.MustParseAddr("127.0.0.3"), Timeout: 5 * time.Second}
	c, err := d.Dial(context.Background(), Endpoint{"127.0.0.1", port(ln)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if got := a.RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.3" {
		t.Fatalf("peer address %s, want 127.0.0.3", got)
	}
}

func TestDialFirstFailsOver(t *testing.T) {
	ln := listen(t, "::1")
	var d Dialer
	cands := []Endpoint{{"127.0.0.1", closedPort(t, "127.0.0.1")}, {"::1", port(ln)}}
	c, i, failures, err := d.DialFirst(context.Background(), cands)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if i != 1 || len(failures) != 1 || !errors.Is(failures[0].Err, syscall.ECONNREFUSED) {
		t.Fatalf("index %d failures %+v", i, failures)
	}
	if !strings.Contains(failures[0].Err.Error(), "connecting to 127.0.0.1:") || strings.Contains(failures[0].Err.Error(), "connect: ") {
		t.Fatalf("message %q", failures[0].Err)
	}
}

func TestDialFirstAllFail(t *testing.T) {
	var d Dialer
	cands := []Endpoint{{"127.0.0.1", closedPort(t, "127.0.0.1")}, {"127.0.0.1", closedPort(t, "127.0.0.1")}}
	_, _, failures, err := d.DialFirst(context.Background(), cands)
	if err == nil || len(failures) != 2 || !strings.Contains(err.Error(), "all 2 hosts failed") {
		t.Fatalf("err %v, failures %d", err, len(failures))
	}
}

func TestListenError(t *testing.T) {
	ln := listen(t, "127.0.0.1")
	_, err := Listen(context.Background(), Endpoint{"127.0.0.1", port(ln)}, netip.Addr{})
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second listen: %v", err)
	}
	// An empty host with a local address listens there.
	ln2, err := Listen(context.Background(), Endpoint{Port: closedPort(t, "127.0.0.1")}, netip.MustParseAddr("127.0.0.4"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if got := ln2.Addr().(*net.TCPAddr).IP.String(); got != "127.0.0.4" {
		t.Fatalf("listening on %s", got)
	}
}

// The listener's options reach every accepted socket without a system call per connection:
// TCP_NODELAY and keepalive are read back from a socket accepted with accept4(2) itself,
// not through net, which would set them again.
func TestListenerOptionsInherited(t *testing.T) {
	ln, err := Listen(context.Background(), Endpoint{Host: "127.0.0.1"}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// The dial has returned, so the handshake is done and the connection is queued: one
	// accept takes it (a listener's RawConn supports only Control).
	nfd, aerr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC) }); err != nil || aerr != nil {
		t.Fatal(err, aerr)
	}
	defer unix.Close(nfd)
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(ListenKeepAlive / time.Second)},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
	} {
		if v, err := unix.GetsockoptInt(nfd, o.level, o.opt); err != nil || v != o.want {
			t.Errorf("%s on an accepted socket: %d, %v; want %d", o.name, v, err, o.want)
		}
	}
}

// TestLocalZone: INADDR_DEFAULT=fe80::1%lo keeps its zone, without which a link-local
// address cannot be bound ("invalid argument"): a listener and a connection from it work,
// in a namespace of the test's own whose loopback has fe80::1.
func TestLocalZone(t *testing.T) {
	ns := nstest.New(t)
	ns.Run(t, "ip", "addr", "add", "fe80::1/64", "dev", "lo", "nodad")
	ctx := context.Background()
	local, err := ResolveLocal(ctx, "fe80::1%lo")
	if err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error {
		ln, err := Listen(ctx, Endpoint{}, local)
		if err != nil {
			return err
		}
		defer ln.Close()
		d := Dialer{Local: local, Timeout: 5 * time.Second}
		c, err := d.Dial(ctx, Endpoint{Host: "fe80::1%lo", Port: port(ln)})
		if err != nil {
			return err
		}
		defer c.Close()
		if a := c.LocalAddr().(*net.TCPAddr); a.IP.String() != "fe80::1" || a.Zone != "lo" {
			return fmt.Errorf("connection from %v; want [fe80::1%%lo]", a)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCheckFamily: a local address of one family cannot reach a literal of the other; a
// name, or no local address, always passes; an IPv4-mapped literal is IPv4.
func TestCheckFamily(t *testing.T) {
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	for _, c := range []struct {
		local netip.Addr
		host  string
		want  string
	}{
		{v6, "127.0.0.1", "INADDR_DEFAULT=::1 is an IPv6 address: it cannot reach the IPv4 address 127.0.0.1"},
		{v6, "::ffff:192.0.2.1", "INADDR_DEFAULT=::1 is an IPv6 address: it cannot reach the IPv4 address 192.0.2.1"},
		{v4, "[2001:db8::1]", "INADDR_DEFAULT=127.0.0.1 is an IPv4 address: it cannot reach the IPv6 address 2001:db8::1"},
		{v4, "192.0.2.1", ""},
		{v6, "2001:db8::1", ""},
		{v6, "localhost", ""},
		{netip.Addr{}, "::1", ""},
	} {
		err := CheckFamily(EnvLocal, c.local, c.host)
		if got := fmt.Sprint(err); (c.want == "" && err != nil) || (c.want != "" && got != c.want) {
			t.Errorf("CheckFamily(%v, %q) = %v; want %q", c.local, c.host, err, c.want)
		}
	}
	d := Dialer{Local: v6}
	if _, err := d.Dial(context.Background(), Endpoint{"127.0.0.1", 9}); err == nil ||
		err.Error() != "connecting to 127.0.0.1:9: the local address ::1 is an IPv6 address: it cannot reach the IPv4 address 127.0.0.1" {
		t.Errorf("Dial from ::1 to 127.0.0.1: %v", err)
	}
}
