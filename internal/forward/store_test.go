package forward

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/testkit"
)

// memStore is a Store that is not a file, as a store shared by several machines would be:
// counts in memory, changed by another hand with set, and a Watch that never calls (as a
// store without change notices, or a file whose watch could not start).
type memStore struct {
	mu      sync.Mutex
	entries []hostfile.Entry
	adds    int // calls of Add
}

func (m *memStore) Read() ([]hostfile.Entry, []error, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]hostfile.Entry(nil), m.entries...), nil, nil
}

func (m *memStore) Add(ctx context.Context, counts map[string]uint64) ([]hostfile.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adds++
	for i, e := range m.entries {
		m.entries[i].Bytes = hostfile.SaturatingAdd(e.Bytes, counts[e.Name])
	}
	return append([]hostfile.Entry(nil), m.entries...), nil
}

func (m *memStore) Watch(ctx context.Context, changed func()) error { return nil }

func (m *memStore) String() string { return "memory" }

func (m *memStore) set(name string, n uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.entries {
		if m.entries[i].Name == name {
			m.entries[i].Bytes = n
		}
	}
}

func (m *memStore) counts() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := make(map[string]uint64)
	for _, e := range m.entries {
		c[e.Name] = e.Bytes
	}
	return c
}

// The balancer needs nothing of the host file but the Store interface: with a store of
// another kind in Config.Store, connections go to the least used of its hosts, over IPv4
// and IPv6, the counts are added to it at the stop, exactly, and a change it gives no notice
// of is taken on Reload (SIGHUP in tcp-pf), with the counts not yet written kept.
func TestOtherStore(t *testing.T) {
	t.Parallel()
	a := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	b := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	nameB := fmt.Sprintf("[::1]:%d", b.Port())
	st := &memStore{entries: []hostfile.Entry{
		{Name: a.Addr(), Host: "127.0.0.1", Port: a.Port(), Bytes: 0, Line: 1},
		{Name: nameB, Host: "::1", Port: b.Port(), Bytes: 50000, Line: 2},
	}}
	pf := startServer(t, "[::1]:0", Config{Store: st, Interval: time.Hour, Grace: -1})
	pf.log.WaitFor(t, `forwarding to the least used host of memory`, 1, time.Second)

	roundTrip := func(id int, n int64) string {
		t.Helper()
		c := testkit.Dial(t, pf.addr)
		testkit.RoundTrip(t, c, uint64(id), n)
		c.Close()
		pf.log.WaitFor(t, fmt.Sprintf(`close #%d `, id), 1, 5*time.Second)
		return openedTo(t, pf, id)
	}
	if got := roundTrip(1, 1000); got != a.Addr() {
		t.Fatalf("connection 1 went to %s, want %s (0 bytes)", got, a.Addr())
	}
	// Another hand gives a far more bytes, with no notice: nothing rereads by itself.
	st.set(a.Addr(), 90000)
	if got := roundTrip(2, 1000); got != a.Addr() {
		t.Fatalf("connection 2 went to %s before any reread, want %s", got, a.Addr())
	}
	pf.Reload()
	testkit.WaitUntil(t, time.Second, "the reread count of a", func() bool {
		pf.bal.mu.Lock()
		defer pf.bal.mu.Unlock()
		return pf.bal.byName[a.Addr()].base == 90000
	})
	if n := pf.bal.pendingOf(a.Addr()); n != 4000 {
		t.Errorf("a's unwritten bytes after the reread: %d, want 4000", n)
	}
	if got := roundTrip(3, 3000); got != nameB {
		t.Fatalf("connection 3 went to %s, want %s after the reread", got, nameB)
	}
	if err := pf.stop(); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{a.Addr(): 90000 + 4000, nameB: 50000 + 6000}
	if got := st.counts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("store counts after the stop: %v, want %v (%d adds)", got, want, st.adds)
	}
}
