package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/systemd/sdtest"
)

// helperEnv makes the test binary a small tool (see TestMain) that takes the sockets named
// in it ("-s:clients,-d:links"), the way tcp-pf and listentwo do.
const helperEnv = "SYSTEMD_TEST_SOCKETS"

// TestMain runs the helper tool when helperEnv is set: New, then one line per Socket with
// the address of its listener (after a client connected to it got the Socket's name
// written to it), then the LISTEN_ variables as they are after New. An error is one line
// and exit status 2 or 1, as the tools give.
func TestMain(m *testing.M) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		os.Exit(m.Run())
	}
	var sockets []Socket
	for _, s := range strings.Split(spec, ",") {
		flag, name, _ := strings.Cut(s, ":")
		sockets = append(sockets, Socket{Flag: flag, Name: name})
	}
	os.Exit(helper(sockets))
}

// report prints err as the tools do, and exits 2 for a *SetupError, 1 for the rest.
func report(err error) int {
	fmt.Fprintf(os.Stderr, "helper: %v\n", err)
	if _, ok := errors.AsType[*SetupError](err); ok {
		return 2
	}
	return 1
}

func helper(sockets []Socket) int {
	svc, err := New(context.Background(), sockets...)
	if err != nil {
		return report(err)
	}
	defer svc.Close()
	for _, sk := range sockets {
		ep, err := endpoint.ParseListen(svc.Default(sk.Name, ""))
		if err != nil {
			return report(err)
		}
		ln, err := svc.Listen(context.Background(), sk.Name, ep, netip.Addr{})
		if err != nil {
			return report(err)
		}
		c, err := ln.Accept()
		if err != nil {
			return report(err)
		}
		_, _ = io.WriteString(c, sk.Name)
		c.Close()
		fmt.Printf("%s %s\n", sk.Name, ln.Addr())
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if val, ok := os.LookupEnv(v); ok {
			fmt.Printf("%s=%s still set\n", v, val)
		}
	}
	return 0
}

// run starts the helper tool through sh, which sets LISTEN_PID to its own pid before it
// execs the helper (so the pid is the helper's), with files as descriptors 3, 4, ... and
// env added. It returns stdout, stderr and the exit status.
func run(t *testing.T, spec string, files []*os.File, env ...string) (string, string, int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `LISTEN_PID=${PID:-$$} exec "$0"`, exe)
	// No second at exit for the race detector (its atexit_sleep_ms).
	cmd.Env = append(os.Environ(), helperEnv+"="+spec, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close() // the helper holds them now
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill() // by pid: the process this test started
		t.Fatalf("helper still running after 10 s; stderr:\n%s", stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// listening returns a listening socket on addr as a file for the helper, and its address.
func listening(t *testing.T, addr string) (*os.File, string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	return f, ln.Addr().String()
}

// greet connects to addr until the helper accepts, and returns what it wrote.
func greet(t *testing.T, addr string) <-chan string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			ch <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			ch <- err.Error()
			return
		}
		ch <- string(b)
	}()
	return ch
}

// The passed sockets serve the Sockets by FileDescriptorName, and without names (or with
// other names) in order; the variables are gone afterwards.
func TestPassedSockets(t *testing.T) {
	cases := []struct {
		name, spec, fdnames string
		want                []string // the Socket each passed socket serves
	}{
		{"one, unnamed", "-s:source", "", []string{"source"}},
		{"one, the unit's name", "-s:source", "tcp-pf.socket", []string{"source"}},
		{"two, unnamed", "-s:clients,-d:links", "", []string{"clients", "links"}},
		{"two, named in reverse", "-s:clients,-d:links", "links:clients", []string{"links", "clients"}},
		{"two, one named", "-s:clients,-d:links", "listentwo.socket:clients", []string{"links", "clients"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var files []*os.File
			var addrs []string
			for i := range c.want {
				host := "127.0.0.1:0"
				if i%2 == 1 {
					host = "[::1]:0"
				}
				f, addr := listening(t, host)
				files, addrs = append(files, f), append(addrs, addr)
			}
			greetings := make([]<-chan string, len(addrs))
			for i, a := range addrs {
				greetings[i] = greet(t, a)
			}
			env := []string{fmt.Sprintf("LISTEN_FDS=%d", len(files))}
			if c.fdnames != "" {
				env = append(env, "LISTEN_FDNAMES="+c.fdnames)
			}
			stdout, stderr, code := run(t, c.spec, files, env...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			for i, a := range addrs {
				if got := <-greetings[i]; got != c.want[i] {
					t.Errorf("socket %d (%s) served %q, want %q", i+3, a, got, c.want[i])
				}
				if line := c.want[i] + " " + a + "\n"; !strings.Contains(stdout, line) {
					t.Errorf("stdout %q lacks %q", stdout, line)
				}
			}
			if strings.Contains(stdout, "still set") {
				t.Errorf("variables left for children:\n%s", stdout)
			}
		})
	}
}

// What does not fit is one line and exit 2; nothing is served.
func TestBadPassedSockets(t *testing.T) {
	dir := t.TempDir()
	regular, err := os.Create(filepath.Join(dir, "file"))
	if err != nil {
		t.Fatal(err)
	}
	regular.Close()
	for _, c := range []struct {
		name, spec string
		files      func(t *testing.T) []*os.File
		env        []string
		want       string
	}{
		{"two for one", "-s:source", twoSockets, []string{"LISTEN_FDS=2"},
			"helper: LISTEN_FDS=2: systemd passed 2 sockets, this tool takes 1: for -s\n"},
		{"one for two", "-s:clients,-d:links", oneSocket, []string{"LISTEN_FDS=1"},
			"helper: LISTEN_FDS=1: systemd passed 1 socket, this tool takes 2: for -s (clients), -d (links)\n"},
		{"not a number", "-s:source", oneSocket, []string{"LISTEN_FDS=one"},
			"helper: LISTEN_FDS=\"one\": not a count of sockets\n"},
		{"negative", "-s:source", oneSocket, []string{"LISTEN_FDS=-1"},
			"helper: LISTEN_FDS=\"-1\": not a count of sockets\n"},
		{"bad pid", "-s:source", oneSocket, []string{"LISTEN_FDS=1", "PID=x"},
			"helper: LISTEN_PID=\"x\": not a process id\n"},
		{"a name twice", "-s:clients,-d:links", twoSockets, []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=links:links"},
			"helper: LISTEN_FDNAMES=links:links: two sockets are named \"links\"\n"},
		{"a file", "-s:source", func(t *testing.T) []*os.File {
			f, err := os.Open(regular.Name())
			if err != nil {
				t.Fatal(err)
			}
			return []*os.File{f}
		}, []string{"LISTEN_FDS=1"},
			"helper: socket 3 from systemd (-s): not a socket: socket operation on non-socket\n"},
		{"udp", "-s:source", func(t *testing.T) []*os.File {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			f, err := pc.(*net.UDPConn).File()
			if err != nil {
				t.Fatal(err)
			}
			return []*os.File{f}
		}, []string{"LISTEN_FDS=1"},
			"helper: socket 3 from systemd (-s): not a TCP socket (ListenStream= takes [ADDR:]PORT)\n"},
		{"connected, not listening", "-s:source", func(t *testing.T) []*os.File {
			f, addr := listening(t, "127.0.0.1:0")
			defer f.Close()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			cf, err := c.(*net.TCPConn).File()
			if err != nil {
				t.Fatal(err)
			}
			return []*os.File{cf}
		}, []string{"LISTEN_FDS=1"},
			"helper: socket 3 from systemd (-s): a TCP socket that is not listening (Accept=no is needed)\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := run(t, c.spec, c.files(t), c.env...)
			if code != 2 || stderr != c.want || stdout != "" {
				t.Errorf("exit %d, stderr %q, stdout %q; want exit 2, stderr %q", code, stderr, stdout, c.want)
			}
		})
	}
}

func oneSocket(t *testing.T) []*os.File {
	f, _ := listening(t, "127.0.0.1:0")
	return []*os.File{f}
}

func twoSockets(t *testing.T) []*os.File {
	f, _ := listening(t, "127.0.0.1:0")
	g, _ := listening(t, "[::1]:0")
	return []*os.File{f, g}
}

// LISTEN_PID of another process (a shell that set the variables for a child it did not
// exec) passes nothing: the tool binds as usual, and the variables are gone.
func TestOtherPid(t *testing.T) {
	t.Setenv("LISTEN_PID", fmt.Sprint(os.Getppid()))
	t.Setenv("LISTEN_FDS", "1")
	svc, err := New(context.Background(), Socket{Flag: "-s", Name: "source"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if svc.Activated() {
		t.Fatal("activated by another process's variables")
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS"} {
		if val, ok := os.LookupEnv(v); ok {
			t.Errorf("%s=%s still set", v, val)
		}
	}
	if got := svc.Default("source", ""); got != "" {
		t.Errorf("Default gave %q without a passed socket", got)
	}
	ln, err := svc.Listen(context.Background(), "source", endpoint.Endpoint{Host: "::1", Port: freePort(t)}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

// A -s that names another port or address than the passed socket is a usage error; one
// that agrees, or none, takes the socket.
func TestListenAgrees(t *testing.T) {
	f, addr := listening(t, "127.0.0.1:0")
	greeting := greet(t, addr)
	_, stderr, code := run(t, "-s:source", []*os.File{f}, "LISTEN_FDS=1")
	if code != 0 || <-greeting != "source" {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// The check itself, on a Service with a passed socket made in-process.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tl := ln.(*net.TCPListener)
	p := tl.Addr().(*net.TCPAddr).Port
	svc := &Service{sockets: []Socket{{"-s", "source"}}, passed: map[string]*net.TCPListener{"source": tl}, taken: map[string]bool{}, stop: func() bool { return false }}
	for _, c := range []struct {
		ep endpoint.Endpoint
		ok bool
	}{
		{endpoint.Endpoint{Port: p}, true},
		{endpoint.Endpoint{Host: "127.0.0.1", Port: p}, true},
		{endpoint.Endpoint{Host: "::ffff:127.0.0.1", Port: p}, true},
		{endpoint.Endpoint{Host: "127.0.0.2", Port: p}, false},
		{endpoint.Endpoint{Port: p + 1}, false},
	} {
		got, err := svc.Listen(context.Background(), "source", c.ep, netip.Addr{})
		if c.ok && (err != nil || got != tl) || !c.ok && !isSetup(err) {
			t.Errorf("Listen(%v) = %v, %v; want ok=%v", c.ep, got, err, c.ok)
		}
	}
	_, err = svc.Listen(context.Background(), "source", endpoint.Endpoint{Port: p + 1}, netip.Addr{})
	if want := fmt.Sprintf("-s :%d: systemd passed the socket 127.0.0.1:%d for it; leave -s out or make them agree", p+1, p); err == nil || err.Error() != want {
		t.Errorf("mismatch: %v\nwant %s", err, want)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// READY=1 goes to $NOTIFY_SOCKET when Ready is called, STOPPING=1 when the context ends,
// each once.
func TestNotify(t *testing.T) {
	notify := sdtest.NewNotify(t)
	t.Setenv("NOTIFY_SOCKET", notify.Path)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a second call tells nothing more
		if err := svc.Ready(); err != nil {
			t.Fatal(err)
		}
	}
	if got := notify.Next(t); got != "READY=1" {
		t.Fatalf("first message %q, want READY=1", got)
	}
	cancel()
	if got := notify.Next(t); got != "STOPPING=1" {
		t.Fatalf("second message %q, want STOPPING=1", got)
	}
	svc.Close()
	notify.None(t, 100*time.Millisecond)
}

// Close sends STOPPING=1 when the context never ended (the tool stopped on an error), and
// nothing when Ready was never called.
func TestNotifyAtClose(t *testing.T) {
	notify := sdtest.NewNotify(t)
	t.Setenv("NOTIFY_SOCKET", notify.Path)
	svc, err := New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	svc.Close()
	notify.None(t, 100*time.Millisecond)
	svc, err = New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Ready(); err != nil {
		t.Fatal(err)
	}
	svc.Close()
	var got []string
	for range 2 {
		got = append(got, notify.Next(t))
	}
	if want := []string{"READY=1", "STOPPING=1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("messages %q, want %q", got, want)
	}
}

// A NOTIFY_SOCKET nobody listens on is an error that names it.
func TestNotifyFails(t *testing.T) {
	name := filepath.Join(t.TempDir(), "nobody")
	t.Setenv("NOTIFY_SOCKET", name)
	svc, err := New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if err := svc.Ready(); err == nil || !strings.Contains(err.Error(), "telling systemd READY=1 through NOTIFY_SOCKET="+name) {
		t.Fatalf("Ready: %v", err)
	}
}

func TestAssign(t *testing.T) {
	two := []Socket{{"-s", "clients"}, {"-d", "links"}}
	for _, c := range []struct {
		names []string
		want  []int
	}{
		{[]string{""}, []int{0, 1}},
		{[]string{"clients", "links"}, []int{0, 1}},
		{[]string{"links", "clients"}, []int{1, 0}},
		{[]string{"links"}, []int{1, 0}},
		{[]string{"a.socket", "a.socket"}, []int{0, 1}},
		{[]string{"unknown", "clients", "extra"}, []int{1, 0}},
	} {
		got, err := assign(c.names, two)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("assign(%q) = %v, %v; want %v", c.names, got, err, c.want)
		}
	}
}

func isSetup(err error) bool {
	_, ok := errors.AsType[*SetupError](err)
	return ok
}
