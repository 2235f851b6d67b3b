package forward

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/testkit"
)

// benchServer runs a Server for cfg on 127.0.0.1 with the log discarded.
func benchServer(b *testing.B, cfg Config) string {
	b.Helper()
	cfg.Log = connlog.New(io.Discard)
	s, _, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ln := testkit.Listen(b, "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx, ln); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// BenchmarkStream is single-stream throughput, one MiB per op, into a sink that splices to
// /dev/null: straight to the sink, and through the forwarder in its modes.
func BenchmarkStream(b *testing.B) {
	got := make(chan int64, 1)
	sink := testkit.StartBackend(b, "127.0.0.1:0", testkit.DevNullSink(b, got))
	hosts := writeFile(b, sink.Addr()+" 0\n")
	targets := []struct {
		name string
		cfg  *Config
	}{
		{"direct", nil},
		{"forward", &Config{Dest: dest(b, sink.Addr())}},
		{"forward-rate", &Config{Dest: dest(b, sink.Addr()), Rate: 64 << 30}},
		{"forward-hostfile", &Config{HostFile: hosts, Port: 9}},
	}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			addr := sink.Addr()
			if tg.cfg != nil {
				addr = benchServer(b, *tg.cfg)
			}
			c := testkit.Dial(b, addr)
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			_ = c.CloseWrite()
			n := <-got // the last bytes are in: stop the clock
			b.StopTimer()
			if n != int64(b.N)*int64(len(buf)) {
				b.Fatalf("sink got %d bytes, want %d", n, int64(b.N)*int64(len(buf)))
			}
		})
	}
}

// BenchmarkConnect is one short connection per op: connect, a 64-byte echo, close; through
// the forwarder with one destination, and with host files of 3 and 10,000 entries (the
// backend's among them, the others never picked), which should cost the same.
func BenchmarkConnect(b *testing.B) {
	be := testkit.StartBackend(b, "127.0.0.1:0", testkit.Echo)
	for _, tg := range []struct {
		name string
		cfg  *Config
	}{
		{"direct", nil},
		{"forward", &Config{Dest: dest(b, be.Addr())}},
		{"hostfile-3", &Config{HostFile: bigHostFile(b, 3, []string{be.Addr()}), Port: 9}},
		{"hostfile-10000", &Config{HostFile: bigHostFile(b, 10000, []string{be.Addr()}), Port: 9}},
	} {
		b.Run(tg.name, func(b *testing.B) {
			addr := be.Addr()
			if tg.cfg != nil {
				addr = benchServer(b, *tg.cfg)
			}
			msg := make([]byte, 64)
			reply := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, reply); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkIdleMemory holds 1,000 idle relayed connections and reports the Go memory they
// take, per 1,000: goroutine stacks and live heap, measured on the first op only (later ops
// reuse the stacks the first one freed). The in-process echo backend's goroutine (one per
// connection, about 4 KiB of stack) is included; bench/relay.sh measures the real process.
func BenchmarkIdleMemory(b *testing.B) {
	const conns = 1000
	raiseNoFile(b, conns*10+256)
	be := testkit.StartBackend(b, "127.0.0.1:0", testkit.Echo)
	addr := benchServer(b, Config{Dest: dest(b, be.Addr())})
	first := true
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		cs := make([]net.Conn, 0, conns)
		for i := range conns {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			cs = append(cs, c)
			testkit.RoundTrip(b, c, uint64(i), 8)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if first {
			first = false
			b.ReportMetric(float64(runtime.NumGoroutine()-g0)/conns, "goroutines/conn")
			b.ReportMetric((float64(after.StackInuse)-float64(before.StackInuse))/(1<<20), "stack-MiB/1000conns")
			b.ReportMetric((float64(after.HeapInuse)-float64(before.HeapInuse))/(1<<20), "heap-MiB/1000conns")
		}
		for _, c := range cs {
			c.Close()
		}
	}
}

// BenchmarkPick is the balancer's part of one connection: a pick, the bytes it moves, and
// its release, with host files of 3 and 10,000 entries of equal counts.
func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 10000} {
		b.Run(fmt.Sprintf("entries-%d", n), func(b *testing.B) {
			var sb strings.Builder
			for i := range n {
				fmt.Fprintf(&sb, "192.0.2.%d:%d 0\n", i%250+1, 1000+i/250)
			}
			bal, _, err := newBalancer(hostfile.NewStore(writeFile(b, sb.String())), 9)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				e := bal.pick(nil)
				bal.add(e, 4096)
				bal.release(e)
			}
		})
	}
}
