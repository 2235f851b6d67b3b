package forward

import (
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// bigHostFile writes a host file of n entries: the backends with count 0, and n-len(backends)
// documentation addresses (never dialled: their counts are far higher) in between.
func bigHostFile(t testing.TB, n int, backends []string) string {
	t.Helper()
	var lines []string
	for i := range n - len(backends) {
		lines = append(lines, fmt.Sprintf("198.51.%d.%d:%d 1000000000000\n", i/250%250, i%250+1, 1000+i/62500))
	}
	var mine []string
	for _, b := range backends {
		mine = append(mine, b+" 0\n")
	}
	lines = slices.Insert(lines, len(lines)/2, mine...)
	return writeFile(t, strings.Join(lines, ""))
}

// heapInUse returns the bytes of live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// idleHeap holds conns idle relayed connections through a server for a host file of
// entries entries, and returns the live heap they take. It fails early, once the heap grows
// past limit, rather than filling the machine's memory.
func idleHeap(t *testing.T, entries, conns int, limit uint64) uint64 {
	var backends []string
	for range 4 {
		backends = append(backends, testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo).Addr())
	}
	path := bigHostFile(t, entries, backends)
	pf := startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: 9, Grace: -1})
	before := heapInUse()
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for i := range conns {
		c, err := net.DialTimeout("tcp", pf.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		testkit.RoundTrip(t, c, uint64(i), 8)
		if i%100 == 99 {
			if h := heapInUse(); h > before+limit {
				t.Fatalf("%d-entry file: %d idle connections take %d MiB of heap, more than the %d MiB bound for %d",
					entries, i+1, (h-before)>>20, limit>>20, conns)
			}
		}
	}
	after := heapInUse()
	if after < before {
		return 0
	}
	return after - before
}

// A connection keeps no copy of the host file: 1,000 idle connections with a 10,000-entry
// file take about what they take with a 3-entry file, and a few MiB in all.
func TestIdleMemoryWithBigHostFile(t *testing.T) {
	const conns = 1000
	raiseNoFile(t, conns*10+256)
	small := idleHeap(t, 4, conns, 64<<20)
	big := idleHeap(t, 10000, conns, 64<<20)
	t.Logf("heap of %d idle connections: %.1f MiB with 4 entries, %.1f MiB with 10,000",
		conns, float64(small)/(1<<20), float64(big)/(1<<20))
	if big > 2*small+(2<<20) {
		t.Errorf("%d idle connections take %.1f MiB of heap with a 10,000-entry file, %.1f MiB with 4 entries: want within 2x",
			conns, float64(big)/(1<<20), float64(small)/(1<<20))
	}
}
