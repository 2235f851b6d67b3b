package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/health"
	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/testkit"
)

func writeFile(t testing.TB, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// openedTo waits for the open line of connection #id and returns its destination.
func openedTo(t testing.TB, pf *running, id int) string {
	t.Helper()
	re := fmt.Sprintf(`open #%d \S+ -> (\S+)$`, id)
	pf.log.WaitFor(t, re, 1, 5*time.Second)
	m := regexp.MustCompile("(?m)" + re).FindStringSubmatch(pf.log.String())
	return m[1]
}

// The host with the fewest bytes gets the connection; bytes of connections still open count
// (so a busy host loses its place before anything is written back); ties go to the host
// with fewer open connections, then to the earlier line.
func TestLeastBytes(t *testing.T) {
	t.Parallel()
	var bes [3]*testkit.Backend
	for i := range bes {
		bes[i] = testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	}
	a, b, c := bes[0].Addr(), bes[1].Addr(), bes[2].Addr()
	path := writeFile(t, fmt.Sprintf("# three\n%s 300\n%s 100\n\n%s 250\n", a, b, c))
	pf := startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: 9})

	c1 := testkit.Dial(t, pf.addr)
	if got := openedTo(t, pf, 1); got != b {
		t.Fatalf("first connection went to %s, want %s (100 bytes)", got, b)
	}
	testkit.RoundTrip(t, c1, 1, 100) // B: 100 + 200 moved = 300, still open
	testkit.WaitUntil(t, 5*time.Second, "the live count of B", func() bool { return pf.bal.pendingOf(b) == 200 })
	testkit.Dial(t, pf.addr)
	if got := openedTo(t, pf, 2); got != c {
		t.Fatalf("second connection went to %s, want %s (250 bytes, B has 300 live)", got, c)
	}
}

func TestTieByOpenConnections(t *testing.T) {
	t.Parallel()
	var bes [3]*testkit.Backend
	for i := range bes {
		bes[i] = testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	}
	// The first entry uses -p; the others name their own ports.
	path := writeFile(t, fmt.Sprintf("127.0.0.1 5\n%s 5\n%s 5\n", bes[1].Addr(), bes[2].Addr()))
	pf := startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: bes[0].Port()})
	want := []string{bes[0].Addr(), bes[1].Addr(), bes[2].Addr(), bes[0].Addr()}
	for i, w := range want {
		testkit.Dial(t, pf.addr) // held open, idle
		if got := openedTo(t, pf, i+1); got != w {
			t.Fatalf("connection %d went to %s, want %s", i+1, got, w)
		}
	}
}

// A host that refuses or times out is skipped for the next one at once, with a log line each.
func TestFailover(t *testing.T) {
	t.Parallel()
	good := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	refused := fmt.Sprintf("127.0.0.1:%d", testkit.ClosedPort(t, "127.0.0.1"))
	silent := testkit.Blackhole(t)
	path := writeFile(t, fmt.Sprintf("%s 0\n%s 1\n%s 2\n", refused, silent, good.Addr()))
	pf := startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: 9, ConnectTimeout: 300 * time.Millisecond})
	start := time.Now()
	c := testkit.Dial(t, pf.addr)
	testkit.RoundTrip(t, c, 1, 5000)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("failover took %v", d)
	}
	pf.log.WaitFor(t, `failed #1 \S+ -> `+regexp.QuoteMeta(refused)+`: connection refused$`, 1, time.Second)
	pf.log.WaitFor(t, `failed #1 \S+ -> `+regexp.QuoteMeta(silent)+`: connection timed out$`, 1, time.Second)
	if got := openedTo(t, pf, 1); got != good.Addr() {
		t.Errorf("opened to %s, want %s", got, good.Addr())
	}
	// The open connection was moved to the host that answered.
	open := fmt.Sprint(pf.bal.openCounts())
	if want := fmt.Sprintf("map[%s:1]", good.Addr()); open != want {
		t.Errorf("open connections %s, want %s", open, want)
	}
}

// When every host of the file fails, one more line says so: each host's own "failed" line
// reads, until then, as if tcp-pf were still trying (it is, while a host is left).
func TestEveryHostFailed(t *testing.T) {
	t.Parallel()
	a := fmt.Sprintf("127.0.0.1:%d", testkit.ClosedPort(t, "127.0.0.1"))
	b := fmt.Sprintf("[::1]:%d", testkit.ClosedPort(t, "::1"))
	path := writeFile(t, fmt.Sprintf("%s 0\n%s 1\n", a, b))
	pf := startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: 9})
	if c, err := net.DialTimeout("tcp", pf.addr, 5*time.Second); err == nil { // reset at once, maybe before the dial returns
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("the client was served, with every host refusing")
		}
		c.Close()
	}
	pf.log.WaitFor(t, `failed #1 \S+ -> `+regexp.QuoteMeta(a)+`: connection refused$`, 1, time.Second)
	pf.log.WaitFor(t, `failed #1 \S+ -> `+regexp.QuoteMeta(b)+`: connection refused$`, 1, time.Second)
	pf.log.WaitFor(t, `failed #1 \S+ -> -: all 2 hosts failed; the client is reset$`, 1, time.Second)
}

// Counts are written back every interval and at the stop, exactly, with the file's other
// lines kept; another writer of the same file (a second tcp-pf, tcppipe-least) loses nothing.
func TestWriteBack(t *testing.T) {
	t.Parallel()
	be := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	// The second host is never picked (its count is far higher); another tool adds to it.
	text := "# backends\n%s %d\n\nbroken line here\n127.0.0.1:1 10 # three fields\n[::1]:2 %d\n"
	path := writeFile(t, fmt.Sprintf(text, be.Addr(), 0, 1000000))
	pfs := []*running{
		startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: 9, Interval: 50 * time.Millisecond, Grace: -1}),
		startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: 9, Interval: 70 * time.Millisecond, Grace: -1}),
	}
	if n := len(pfs[0].warn); n != 2 {
		t.Errorf("%d warnings, want 2 (lines 4 and 5): %v", n, pfs[0].warn)
	}
	// Meanwhile another tool adds to a host of its own in the same file.
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 40 {
			if err := hostfile.Update(path, false, func(f *hostfile.File) error { f.Add("[::1]:2", 1); return nil }); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var total uint64
	for i, pf := range pfs {
		for j := range 3 {
			c := testkit.Dial(t, pf.addr)
			n := int64(10000 * (i + j + 1))
			testkit.RoundTrip(t, c, uint64(j), n)
			total += uint64(2 * n)
			if j < 2 {
				c.Close()
			} // the last stays open through the stop
		}
	}
	// A periodic write-back shows up before the stop.
	testkit.WaitUntil(t, 5*time.Second, "a periodic write-back", func() bool {
		f, _, err := hostfile.Read(path)
		return err == nil && f.Entries()[0].Bytes > 0
	})
	wg.Wait()
	for _, pf := range pfs {
		if err := pf.stop(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(text, be.Addr(), total, 1000040)
	if string(got) != want {
		t.Errorf("host file:\n%s\nwant:\n%s", got, want)
	}
	// The stop says what it did: the last counts written, or none left to write (the
	// rounds at -i wrote them while the last connection ran).
	if l := pfs[0].log.String(); !strings.Contains(l, "wrote counts to "+path) && !strings.Contains(l, "counts in "+path+" up to date") {
		t.Errorf("no write line at the stop:\n%s", l)
	}
}

// A host-file Flush also takes up counts that other processes wrote.
func TestFlushRefreshesCounts(t *testing.T) {
	path := writeFile(t, "a.example:1 10\nb.example:1 20\n")
	b, _, err := newBalancer(hostfile.NewStore(path), 9)
	if err != nil {
		t.Fatal(err)
	}
	first := func() string {
		e := b.pick(nil)
		b.release(e)
		return e.name
	}
	if got := first(); got != "a.example:1" {
		t.Fatalf("picked %s", got)
	}
	if err := hostfile.Update(path, false, func(f *hostfile.File) error { f.Add("a.example:1", 100); return nil }); err != nil {
		t.Fatal(err)
	}
	if got := first(); got != "a.example:1" {
		t.Fatalf("picked %s before the refresh", got)
	}
	if _, _, err := b.reread(); err != nil {
		t.Fatal(err)
	}
	if got := first(); got != "b.example:1" {
		t.Fatalf("picked %s after the refresh, want b.example:1", got)
	}
	if open := b.openCounts(); len(open) != 0 {
		t.Errorf("open counts left: %v", open)
	}
}

func TestBalancerErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"# nothing\n\nbad line here\n", "no usable entry"},
		{"", "no usable entry"},
	} {
		path := writeFile(t, tc.text)
		_, _, err := newBalancer(hostfile.NewStore(path), 9)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
	_, _, err := newBalancer(hostfile.NewStore(filepath.Join(t.TempDir(), "missing")), 9)
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

// The index picks as a sort of the whole file would: fewest bytes (file count plus pending),
// then fewest open connections, then file order; a failover asks for the best host not
// tried yet; bytes added without the lock are seen by the next pick.
func TestPickOrder(t *testing.T) {
	path := writeFile(t, "a:1 30\nb:1 10\nc:1 10\nd:1 20\n# end\nb:1 0\n")
	b, _, err := newBalancer(hostfile.NewStore(path), 9)
	if err != nil {
		t.Fatal(err)
	}
	name := func(e *hostEntry) string {
		if e == nil {
			return "none"
		}
		return e.name
	}
	byName := func(n string) *hostEntry { return b.byName[n] }

	// b and c tie on 10 bytes: file order (the duplicate b line counts for nothing).
	e1 := b.pick(nil)
	if name(e1) != "b:1" {
		t.Fatalf("first pick %s, want b:1", name(e1))
	}
	// b has one open connection now: c, same bytes, fewer open.
	e2 := b.pick(nil)
	if name(e2) != "c:1" {
		t.Fatalf("second pick %s, want c:1", name(e2))
	}
	b.release(e2)
	// Bytes moved through b (no lock): 10+15 = 25 > d's 20 > c's 10.
	b.add(e1, 15)
	for i, want := range []string{"c:1", "d:1", "b:1", "a:1", "none"} {
		tried := []*hostEntry{}
		for _, n := range []string{"c:1", "d:1", "b:1", "a:1"}[:i] {
			tried = append(tried, byName(n))
		}
		e := b.pick(tried)
		if name(e) != want {
			t.Fatalf("pick after %d tried: %s, want %s", i, name(e), want)
		}
		if e != nil {
			b.release(e)
		}
	}
	// A host set aside by the health tracker comes after every healthy one, whatever its
	// bytes, and is still picked when every host is set aside.
	b.health = health.New(func(context.Context, endpoint.Endpoint) error { return errors.New("refused") }, func(string, ...any) {})
	defer b.health.Close()
	b.health.Failed(byName("c:1").ep, errors.New("refused"))
	if e := b.pick(nil); name(e) != "d:1" {
		t.Errorf("with c set aside: %s, want d:1", name(e))
	} else {
		b.release(e)
	}
	for _, n := range []string{"a:1", "b:1", "d:1"} {
		b.health.Failed(byName(n).ep, errors.New("refused"))
	}
	if e := b.pick(nil); name(e) != "c:1" {
		t.Errorf("with every host set aside: %s, want c:1 (fewest bytes)", name(e))
	} else {
		b.release(e)
	}
	b.release(e1)
	if open := b.openCounts(); len(open) != 0 {
		t.Errorf("open counts left: %v", open)
	}
}

// The index against a plain sort of every host, over random counts, moves and picks.
func TestPickMatchesSort(t *testing.T) {
	var sb strings.Builder
	const n = 200
	for i := range n {
		fmt.Fprintf(&sb, "h%d:1 %d\n", i, (i*7919)%13)
	}
	path := writeFile(t, sb.String())
	b, _, err := newBalancer(hostfile.NewStore(path), 9)
	if err != nil {
		t.Fatal(err)
	}
	var all []*hostEntry
	for i := range n {
		all = append(all, b.byName[fmt.Sprintf("h%d:1", i)])
	}
	want := func(tried []*hostEntry) *hostEntry {
		var best *hostEntry
		for _, e := range all {
			if triedIn(tried, e) {
				continue
			}
			if best == nil || e.bytes() < best.bytes() || e.bytes() == best.bytes() && (e.open < best.open || e.open == best.open && e.order < best.order) {
				best = e
			}
		}
		return best
	}
	var held []*hostEntry
	seed := uint64(1)
	rnd := func(m int) int { seed = seed*6364136223846793005 + 1442695040888963407; return int(seed>>33) % m }
	for step := range 5000 {
		switch r := rnd(10); {
		case r < 4:
			b.add(all[rnd(n)], int64(rnd(5)))
		case r < 7 || len(held) == 0:
			var tried []*hostEntry
			for range rnd(3) {
				tried = append(tried, all[rnd(n)])
			}
			w := want(tried)
			got := b.pick(tried)
			if got != w {
				t.Fatalf("step %d: picked %s (%d bytes, %d open), a sort gives %s (%d bytes, %d open)",
					step, got.name, got.bytes(), got.open, w.name, w.bytes(), w.open)
			}
			held = append(held, got)
		default:
			i := rnd(len(held))
			b.release(held[i])
			held = slices.Delete(held, i, i+1)
		}
	}
}

// A pick, its bytes and its release allocate nothing, with 3 entries as with 10,000: a
// connection costs no copy of the list, whatever the size of the file. A failover pick
// (the best host not among those tried) allocates nothing either.
func TestPickAllocatesNothing(t *testing.T) {
	for _, n := range []int{3, 10000} {
		var sb strings.Builder
		for i := range n {
			fmt.Fprintf(&sb, "192.0.2.%d:%d %d\n", i%250+1, 1000+i/250, i%7)
		}
		b, _, err := newBalancer(hostfile.NewStore(writeFile(t, sb.String())), 9)
		if err != nil {
			t.Fatal(err)
		}
		first := b.pick(nil)
		allocs := testing.AllocsPerRun(1000, func() {
			e := b.pick(nil)
			b.add(e, 4096)
			f := b.pick([]*hostEntry{e})
			b.release(f)
			b.release(e)
		})
		b.release(first)
		if allocs != 0 {
			t.Errorf("%d entries: %.1f allocations per pick, want 0", n, allocs)
		}
	}
}
