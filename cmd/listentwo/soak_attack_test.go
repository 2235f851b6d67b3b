package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/metrics/metricstest"
	"shd-tcp-tools/internal/testkit"
)

// soakConns is how many connections TestAttackSoak makes through each path: 2,000, or
// SHD_SOAK_CONNS.
func soakConns(t *testing.T) int {
	t.Helper()
	s := os.Getenv("SHD_SOAK_CONNS")
	if s == "" {
		return 2000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("SHD_SOAK_CONNS=%q: want a positive number", s)
	}
	return n
}

// soak makes conns connections to addr, four at a time, each moving 4 KiB each way
// checked by SHA-256, and fails the test at the first that fails.
func soak(t *testing.T, addr string, conns int) time.Duration {
	t.Helper()
	start := time.Now()
	jobs := make(chan int)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range jobs {
				if err := testkit.EchoTrip(addr, uint64(i), 4<<10, testkit.Timeout, false); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
			}
		})
	}
feed:
	for i := range conns {
		select {
		case jobs <- i:
		case err := <-errs:
			close(jobs)
			wg.Wait()
			t.Fatal(err)
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return time.Since(start)
}

// level is what a process holds: descriptors, resident KiB, goroutines.
type level struct{ fds, rssKiB, goroutines int }

func (l level) String() string {
	return fmt.Sprintf("%d descriptors, %d KiB resident, %d goroutines", l.fds, l.rssKiB, l.goroutines)
}

// soaked is a process of the soak and where its metrics are.
type soaked struct {
	p       *testkit.Proc
	metrics string
	// sockets is how many it holds when idle: its listeners, the metrics listener, the
	// scrapes' keep-alive connection and its links.
	sockets int
}

// idle waits until s holds its idle sockets and at most the goroutines it held idle
// (goroutines; -1: any), and returns its level then.
func (s soaked) idle(t *testing.T, goroutines int) level {
	t.Helper()
	var l level
	testkit.WaitUntil(t, testkit.Timeout, filepath.Base(s.p.Cmd.Path)+" idle again", func() bool {
		l = level{fds: s.p.FDs(t), rssKiB: s.p.RSS(t), goroutines: int(metricstest.Get(t, s.metrics).Get(t, "go_goroutines"))}
		return s.p.Sockets(t) == s.sockets && (goroutines < 0 || l.goroutines <= goroutines)
	})
	return l
}

// TestAttackSoak: thousands of short connections (2,000 by default, SHD_SOAK_CONNS to
// change it: 10,000 is the soak docs/architecture.md quotes), four at a time, each moving
// 4 KiB each way checked by SHA-256, through tcp-pf and through the plain tunnel
// (listentwo and connecttwo, with hellos, --pool 4), in two rounds of half of them. After
// a warm-up of 200 connections (the idle level) and after each round, each process must
// hold its idle sockets and at most the goroutines it held idle (so no connection and no
// goroutine is leaked), at most pipeFDs descriptors more than idle (the splice pipes a
// pool keeps until the collector drops them: four connections at a time, each with at
// most a pipe each way, two descriptors a pipe; a leak of one descriptor a connection
// would be hundreds), and at most 12 MiB more resident
// memory than idle, of which the second round may add at most 4 MiB (a process's heap
// grows to its working size once; a leak grows with every round).
func TestAttackSoak(t *testing.T) {
	const pipeFDs = 4 * 2 * 2 // 8 failed once: 24 descriptors against 15 idle
	conns := soakConns(t)
	bins := testkit.Build(t, "shd-tcp-tools/cmd/tcp-pf", "shd-tcp-tools/cmd/listentwo", "shd-tcp-tools/cmd/connecttwo")
	svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	metricsAt := func() string { return "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1")) }
	run := func(t *testing.T, addr string, procs []soaked) {
		soak(t, addr, 200)
		idle := make([]level, len(procs))
		for i, s := range procs {
			idle[i] = s.idle(t, -1)
		}
		after := make([]level, len(procs))
		for round := 1; round <= 2; round++ {
			took := soak(t, addr, conns/2)
			t.Logf("round %d: %d connections in %v (%.0f a second)", round, conns/2, took.Round(time.Millisecond), float64(conns/2)/took.Seconds())
			for i, s := range procs {
				name := filepath.Base(s.p.Cmd.Path)
				l := s.idle(t, idle[i].goroutines)
				t.Logf("%s after round %d: %v; idle before: %v", name, round, l, idle[i])
				if l.fds > idle[i].fds+pipeFDs || l.rssKiB > idle[i].rssKiB+12<<10 || round == 2 && l.rssKiB > after[i].rssKiB+4<<10 {
					t.Errorf("%s after round %d: %v; idle before: %v, after round 1: %v", name, round, l, idle[i], after[i])
				}
				after[i] = l
			}
		}
		for _, s := range procs {
			s.p.Stop(t, syscall.SIGTERM, 10*time.Second)
		}
	}
	t.Run("tcp-pf", func(t *testing.T) {
		addr, m := "127.0.0.1:"+strconv.Itoa(testkit.FreePort(t, "127.0.0.1")), metricsAt()
		pf := testkit.Start(t, bins["tcp-pf"], "-s", addr, "-d", svc.Addr(), "-q", "--metrics", m)
		pf.WaitListening(t, mustPort(t, addr))
		run(t, addr, []soaked{{pf, m, 3}})
	})
	t.Run("tunnel", func(t *testing.T) {
		rm, am := metricsAt(), metricsAt()
		relay, clients, links := startRelay(t, bins["listentwo"], "--hello-dst", "--metrics", rm)
		agent := testkit.Start(t, bins["connecttwo"], "-s", links, "-d", svc.Addr(), "--hello-from-src", "--pool", "4", "-q", "--metrics", am)
		run(t, clients, []soaked{{relay, rm, 4 + 4}, {agent, am, 2 + 4}})
	})
}

// mustPort returns the port of a HOST:PORT address.
func mustPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	if err != nil || n == 0 {
		t.Fatalf("no port in %q", addr)
	}
	return n
}
