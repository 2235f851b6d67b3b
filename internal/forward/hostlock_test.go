package forward

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/testkit"
)

// holdLock takes the exclusive lock on path's lock file, as `flock FILE.lock sleep N` does,
// until the returned function (or the end of the test) releases it.
func holdLock(t testing.TB, path string) (release func()) {
	t.Helper()
	f, err := os.OpenFile(path+hostfile.LockSuffix, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			f.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// stream keeps bytes flowing both ways on c, 16 KiB every 2 ms, and records the longest
// pause between two reads of the echo.
type stream struct {
	sent    atomic.Int64
	got     atomic.Int64
	lastNs  atomic.Int64 // time of the last read, UnixNano
	maxGap  atomic.Int64 // the longest pause between reads, ns
	stopped atomic.Bool
	done    chan struct{}
	err     error // why reading ended early; valid after done
}

func startStream(c *net.TCPConn) *stream {
	s := &stream{done: make(chan struct{})}
	s.lastNs.Store(time.Now().UnixNano())
	go func() {
		buf := make([]byte, 16<<10)
		pace := time.NewTicker(2 * time.Millisecond) // the load's pace (8 MiB/s), not a synchronisation
		defer pace.Stop()
		for ; !s.stopped.Load(); <-pace.C {
			n, err := c.Write(buf)
			s.sent.Add(int64(n))
			if err != nil {
				return
			}
		}
		_ = c.CloseWrite()
	}()
	go func() {
		defer close(s.done)
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			now := time.Now().UnixNano()
			if gap := now - s.lastNs.Swap(now); gap > s.maxGap.Load() && !s.stopped.Load() {
				s.maxGap.Store(gap)
			}
			s.got.Add(int64(n))
			if err == io.EOF {
				return
			}
			if err != nil {
				s.err = err
				return
			}
		}
	}()
	return s
}

// A host-file lock held by another process (flock FILE.lock sleep N) stops neither the
// relaying nor new connections: the write-back waits off the loops, logs once that the
// file is locked, keeps the counts, and writes them all once the lock is free.
func TestHeldLockDoesNotStall(t *testing.T) {
	t.Parallel()
	a := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	b := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	path := writeFile(t, fmt.Sprintf("# pool\n%s 0\n%s 0\n", a.Addr(), b.Addr()))
	pf := startServer(t, "127.0.0.1:0", Config{HostFile: path, Port: 9, Interval: 20 * time.Millisecond, Grace: -1})

	// Two streams, one to each host (the second goes to the host with fewer open).
	var streams []*stream
	for range 2 {
		streams = append(streams, startStream(testkit.Dial(t, pf.addr)))
	}
	testkit.WaitUntil(t, 5*time.Second, "both streams flowing", func() bool {
		return streams[0].got.Load() > 0 && streams[1].got.Load() > 0
	})
	release := holdLock(t, path)

	// For a second and more (dozens of write-back intervals), every new connection is
	// served at once and the streams never pause for long.
	start := time.Now()
	var moved int64
	shorts := 0
	for i := 0; time.Since(start) < 1200*time.Millisecond; i++ {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", pf.addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		testkit.RoundTrip(t, c, uint64(i), 1000)
		c.Close()
		moved += 2000
		shorts++
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("connection %d took %v while the host file was locked", i, d)
		}
	}
	for i, s := range streams {
		if gap := time.Duration(s.maxGap.Load()); gap > time.Second {
			t.Errorf("stream %d paused for %v while the host file was locked", i, gap)
		}
	}
	pf.log.WaitFor(t, `host file .* is locked by another process`, 1, 2*time.Second)

	// Once free, the counts are written and it is said once; the episode was logged once.
	release()
	pf.log.WaitFor(t, `wrote counts to .* after it was locked for `, 1, 5*time.Second)
	if n := pf.log.Count(`is locked by another process`); n != 1 {
		t.Errorf("%d lines about the lock, want 1 for the episode:\n%s", n, pf.log.String())
	}
	for _, s := range streams {
		s.stopped.Store(true)
	}
	for i, s := range streams {
		<-s.done
		if s.err != nil {
			t.Fatalf("stream %d: %v", i, s.err)
		}
		moved += s.sent.Load() + s.got.Load()
	}
	pf.log.WaitFor(t, `close #`, shorts+2, 5*time.Second)
	if err := pf.stop(); err != nil {
		t.Fatal(err)
	}
	f, _, err := hostfile.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, e := range f.Entries() {
		total += e.Bytes
	}
	if total != uint64(moved) {
		t.Errorf("file counts add up to %d, want %d bytes moved", total, moved)
	}
}

// A write-back that fails interval after interval (the host file replaced by a directory)
// is one episode: it is logged once, not at every -i, the counts are kept, and once a
// write works again it is said once with the count of failed writes, and every byte moved
// is in the file.
func TestFailingWriteBackLoggedOnce(t *testing.T) {
	t.Parallel()
	a := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	path := writeFile(t, fmt.Sprintf("%s 0\n", a.Addr()))
	pf := startServer(t, "[::1]:0", Config{HostFile: path, Port: 9, Interval: 10 * time.Millisecond, Grace: -1})
	var moved uint64
	trip := func(i int) {
		c := testkit.Dial(t, pf.addr)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		testkit.RoundTrip(t, c, uint64(i), 1000)
		c.Close()
		moved += 2000
	}
	trip(0)
	pf.log.WaitFor(t, `close #`, 1, 5*time.Second)
	// The first trip's counts written before the file goes: a write-back of them across
	// the swap below would fail for another reason first ("file exists"), a second line.
	testkit.WaitUntil(t, 5*time.Second, "the first trip's counts written", func() bool {
		f, _, err := hostfile.Read(path)
		return err == nil && len(f.Entries()) == 1 && f.Entries()[0].Bytes == moved
	})

	aside := path + ".aside"
	if err := os.Rename(path, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	trip(1) // counts pending while the writes fail
	pf.log.WaitFor(t, `close #`, 2, 5*time.Second)
	pf.log.WaitFor(t, `writing counts to .*is a directory`, 1, 5*time.Second)
	// Dozens of intervals with the write failing: still one line.
	testkit.WaitUntil(t, 5*time.Second, "20 failed write-backs", func() bool { return pf.failedWrites.Load() >= 20 })
	if n := pf.log.Count(`writing counts to `); n != 1 {
		t.Errorf("%d lines about the failing write-back, want 1 for the episode:\n%s", n, pf.log.String())
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(aside, path); err != nil {
		t.Fatal(err)
	}
	pf.log.WaitFor(t, `wrote counts to .* after \d+ failed writes`, 1, 5*time.Second)
	if err := pf.stop(); err != nil {
		t.Fatal(err)
	}
	f, _, err := hostfile.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if e := f.Entries(); len(e) != 1 || e[0].Bytes != moved {
		t.Errorf("file entries %v, want %d bytes moved", e, moved)
	}
}

// A round with no counts to write only rereads the host file: when that read fails (the
// file moved away a moment, as an editor or a deploy does), it is a reread that failed,
// said once as one, not a write-back that failed and kept counts there were none of.
func TestRoundWithNothingToWriteIsAReread(t *testing.T) {
	t.Parallel()
	a := testkit.StartBackend(t, "[::1]:0", testkit.Echo)
	path := writeFile(t, fmt.Sprintf("%s 0\n", a.Addr()))
	pf := startServer(t, "[::1]:0", Config{HostFile: path, Port: 9, Interval: 10 * time.Millisecond, Grace: -1})
	// A round done: the keeper follows the file (it starts the watch before its rounds).
	testkit.WaitUntil(t, 5*time.Second, "the keeper's first round", func() bool { return pf.rounds.Load() >= 1 })
	aside := path + ".aside"
	if err := os.Rename(path, aside); err != nil {
		t.Fatal(err)
	}
	pf.log.WaitFor(t, `rereading .*no such file`, 1, 5*time.Second)
	from := pf.rounds.Load()
	testkit.WaitUntil(t, 5*time.Second, "20 rounds with the file away", func() bool { return pf.rounds.Load() >= from+20 })
	if err := os.Rename(aside, path); err != nil {
		t.Fatal(err)
	}
	c := testkit.Dial(t, pf.addr)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	testkit.RoundTrip(t, c, 1, 1000)
	c.Close()
	testkit.WaitUntil(t, 5*time.Second, "the trip's counts written", func() bool {
		f, _, err := hostfile.Read(path)
		return err == nil && len(f.Entries()) == 1 && f.Entries()[0].Bytes == 2000
	})
	if n := pf.log.Count(`rereading `); n != 1 {
		t.Errorf("%d lines about the failed reread, want 1:\n%s", n, pf.log.String())
	}
	if n := pf.log.Count(`writing counts to |failed writes`); n != 0 || pf.failedWrites.Load() != 0 {
		t.Errorf("%d failed write-backs counted, %d lines about them, want none (nothing was to be written):\n%s", pf.failedWrites.Load(), n, pf.log.String())
	}
	// Nor is the stop a failed write when every count is in the file already and the file
	// is away: nothing is lost, so no error (tcp-pf would exit 1).
	if err := os.Rename(path, aside); err != nil {
		t.Fatal(err)
	}
	if err := pf.stop(); err != nil {
		t.Errorf("Serve with every count written and the file away: %v", err)
	}
	if !strings.Contains(pf.log.String(), "nothing more to write") {
		t.Errorf("no line at the stop saying the counts were up to date:\n%s", pf.log.String())
	}
}
