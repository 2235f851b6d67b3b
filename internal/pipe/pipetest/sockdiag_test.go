package pipetest

import (
	"net"
	"testing"
)

func TestListenQueue(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp"} { // IPv4 only, and dual-stack [::]
		ln, err := net.Listen(network, ":0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		if q, ok, err := ListenQueue(port); err != nil || !ok || q != 0 {
			t.Fatalf("%s: ListenQueue(%d) = %d, %v, %v; want 0, true, nil", network, port, q, ok, err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if q, ok, err := ListenQueue(port); err != nil || !ok || q != 1 {
			t.Fatalf("%s: with a connection waiting, ListenQueue(%d) = %d, %v, %v; want 1, true, nil", network, port, q, ok, err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		if q, ok, err := ListenQueue(port); err != nil || !ok || q != 0 {
			t.Fatalf("%s: after the accept, ListenQueue(%d) = %d, %v, %v; want 0, true, nil", network, port, q, ok, err)
		}
		ln.Close()
		if _, ok, err := ListenQueue(port); err != nil || ok {
			t.Fatalf("%s: closed, ListenQueue(%d) says listening (%v, %v)", network, port, ok, err)
		}
	}
}
