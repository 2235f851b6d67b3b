package nstest

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNS is a resolver a test runs on a UDP socket of its namespace (ListenUDP on
// 127.0.0.1:53, named in the namespace's ResolvConf): it answers the queries that come, or
// while silent only reads them, and counts them by type and name ("A backend1.example.").
// An A query for a name of its answers gets that address, an AAAA query for it an empty
// answer, any other name NXDOMAIN. Safe for simultaneous use.
type DNS struct {
	mu      sync.Mutex
	queries map[string]int
	answers map[string]netip.Addr
	silent  bool
}

// ServeDNS serves DNS on pc until the test ends, silent from the start or not.
func ServeDNS(t testing.TB, pc *net.UDPConn, silent bool, answers map[string]netip.Addr) *DNS {
	d := &DNS{queries: map[string]int{}, answers: answers, silent: silent}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			d.mu.Lock()
			d.queries[q.Type.String()[4:]+" "+q.Name.String()]++
			silent := d.silent
			d.mu.Unlock()
			if silent {
				continue
			}
			if out, err := d.answer(h.ID, q); err == nil {
				_, _ = pc.WriteToUDP(out, from)
			}
		}
	})
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	return d
}

// Silence makes the resolver stop answering (true) or answer again (false).
func (d *DNS) Silence(silent bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.silent = silent
}

func (d *DNS) answer(id uint16, q dnsmessage.Question) ([]byte, error) {
	addr, known := d.answers[q.Name.String()]
	h := dnsmessage.Header{ID: id, Response: true, Authoritative: true}
	if !known {
		h.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if known && q.Type == dnsmessage.TypeA {
		rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 300}
		if err := b.AResource(rh, dnsmessage.AResource{A: addr.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// Count returns how many queries of key ("A backend1.example.") came.
func (d *DNS) Count(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[key]
}

// String lists the queries that came, with their counts.
func (d *DNS) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fmt.Sprint(d.queries)
}

// Resolver serves DNS (ServeDNS) on the namespace's 127.0.0.1:53, silent from the start or
// not, and names it in the namespace's resolv.conf, followed by options (such as
// "options timeout:1 attempts:1\n"), so that every lookup inside the namespace asks it.
func (n *NS) Resolver(t testing.TB, silent bool, answers map[string]netip.Addr, options string) *DNS {
	t.Helper()
	d := ServeDNS(t, n.ListenUDP(t, "127.0.0.1:53"), silent, answers)
	n.ResolvConf(t, "nameserver 127.0.0.1\n"+options)
	return d
}
