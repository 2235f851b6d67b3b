package tunnel

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/connlog"
)

// roomPeer is one end of a real loopback connection from source, the other end entered
// into a room.
type roomPeer struct {
	name   string
	remote net.Conn // the peer's end
	g      *guest
}

// TestRoomOrder: a full room pushes out silent guests before those that spoke, and those
// before guests in the exchange; the oldest of the busiest source first, and only the
// newcomer's own source when that source holds its share. A silent guest whose bytes have
// arrived is not silent. Pushed-out peers see a reset.
func TestRoomOrder(t *testing.T) {
	ln := listen(t, "127.0.0.1")
	rm := newRoom(4, 2)
	connect := func(name, from string, cl class) *roomPeer {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: testTimeout}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s, err := ln.AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		g, _ := rm.enter(s, cl)
		return &roomPeer{name: name, remote: c, g: g}
	}
	pushed := func(want ...*roomPeer) {
		t.Helper()
		for _, p := range want {
			if _, ok := rm.pushedOut(p.g); !ok {
				t.Errorf("%s still in the room", p.name)
				continue
			}
			_ = p.remote.SetReadDeadline(time.Now().Add(testTimeout))
			if _, err := p.remote.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
				t.Errorf("%s: read %v, want a reset", p.name, err)
			}
		}
	}
	kept := func(want ...*roomPeer) {
		t.Helper()
		for _, p := range want {
			if _, ok := rm.pushedOut(p.g); ok {
				t.Errorf("%s was pushed out", p.name)
			}
		}
	}

	a1 := connect("a1", "127.0.0.1", silent)
	a2 := connect("a2", "127.0.0.1", silent)
	a3 := connect("a3", "127.0.0.1", silent) // 127.0.0.1 is at its share: its oldest goes
	pushed(a1)
	b1 := connect("b1", "127.0.0.2", silent)
	c1 := connect("c1", "127.0.0.3", silent)
	kept(a2, a3, b1, c1)

	// The room is full. a3 has spoken, b1's bytes are there unseen.
	if !rm.advance(a3.g, spoke) {
		t.Fatal("a3 was out")
	}
	io.WriteString(b1.remote, "x")
	waitPending(t, b1.g.conn)
	d1 := connect("d1", "127.0.0.4", engaged) // silent a2, b1, c1 from one each: a2 is the oldest
	pushed(a2)
	e1 := connect("e1", "127.0.0.5", engaged) // b1 is not silent after all: c1
	pushed(c1)
	kept(a3, b1, d1, e1)
	f1 := connect("f1", "127.0.0.6", silent) // none silent: of a3 and b1 (spoke), the older
	pushed(a3)
	if !rm.advance(f1.g, engaged) {
		t.Fatal("f1 was out")
	}
	g1 := connect("g1", "127.0.0.7", silent) // b1, the last that only spoke
	pushed(b1)
	h1 := connect("h1", "127.0.0.8", engaged) // the silent newcomer before the engaged
	pushed(g1)
	kept(d1, e1, f1, h1)
	i1 := connect("i1", "127.0.0.9", silent) // all engaged, one per source: the oldest
	pushed(d1)
	kept(e1, f1, h1, i1)

	if !rm.leave(e1.g) || rm.leave(d1.g) {
		t.Error("leave: a guest in the room must leave, a pushed-out one must not")
	}
	if rm.advance(d1.g, engaged) {
		t.Error("a pushed-out guest advanced")
	}
	if n := rm.len(); n != 3 {
		t.Errorf("%d guests, want 3", n)
	}
}

func waitPending(t *testing.T, c *net.TCPConn) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !pending(c) {
		if time.Now().After(deadline) {
			t.Fatal("the bytes never arrived")
		}
		time.Sleep(time.Millisecond) // poll interval, bounded by the deadline
	}
}

func TestSourceOf(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.7:1", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:1", "192.0.2.7"},
		{"[2001:db8:1:2:3:4:5:6]:1", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:9", "2001:db8:1:2::/64"},
	} {
		a, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := connlog.SourceName(sourceOf(a)); got != tc.want {
			t.Errorf("%s: source %s, want %s", tc.addr, got, tc.want)
		}
	}
	if p := sourceOf(nil); p != (netip.Prefix{}) {
		t.Errorf("no address: %v", p)
	}
}
