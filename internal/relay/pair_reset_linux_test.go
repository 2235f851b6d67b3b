package relay

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/testkit"
)

// tcpPair returns both ends of a TCP connection on host's loopback.
func tcpPair(t *testing.T, host string) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); c.Close() })
	return d.(*net.TCPConn), c.(*net.TCPConn)
}

// TestPairPassesOnResetWhoseErrorWasTaken: a side whose peer reset it reads as a clean
// EOF once the socket's error was taken (by a write that failed, a splice, SO_ERROR):
// the kernel answers ECONNRESET once, then 0. The pair must still pass the reset on, not
// a FIN that makes a cut transfer look complete. Seen as TestStopResetsOpenRelay's
// "client: read 0, EOF; want a reset" (internal/tunnel, 1 run in 300): connecttwo reset
// the link, and listentwo's pair read its EOF after the error had gone with a write.
func TestPairPassesOnResetWhoseErrorWasTaken(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			clientPeer, client := tcpPair(t, host)
			server, serverPeer := tcpPair(t, host)
			_ = serverPeer.SetLinger(0)
			serverPeer.Close() // the RST
			testkit.WaitUntil(t, testkit.Timeout, "the reset to reach the relay's side", func() bool { return ConnReset(server) })
			raw, err := server.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var soErr int
			_ = raw.Control(func(fd uintptr) { soErr, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) })
			if soErr != int(unix.ECONNRESET) {
				t.Fatalf("SO_ERROR = %d, want ECONNRESET", soErr)
			}
			res := startPair(t, client, server, Options{HalfClose: true})
			_ = clientPeer.SetReadDeadline(time.Now().Add(testkit.Timeout))
			if n, err := clientPeer.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("client: read %d, %v; want a reset", n, err)
			}
			select {
			case r := <-res:
				t.Logf("pair ended: %q", r.End)
			case <-time.After(testkit.Timeout):
				t.Fatal("the pair did not end")
			}
		})
	}
}
