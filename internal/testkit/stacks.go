package testkit

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

// Goroutine is one goroutine of this process as a heap dump shows it: the functions on its
// stack, innermost first, and the size of the stack it holds (what the runtime allocated
// for it, not the part in use), in bytes.
type Goroutine struct {
	Funcs []string
	Stack uint64
}

// Calls reports whether a function whose name contains name is on g's stack.
func (g Goroutine) Calls(name string) bool {
	for _, f := range g.Funcs {
		if strings.Contains(f, name) {
			return true
		}
	}
	return false
}

// Goroutines returns every goroutine of this process, with the stack each
// holds. The runtime tells no goroutine's stack size but in a heap dump
// (debug.WriteHeapDump, which stops the world while it writes): a goroutine's record names
// its g, the g is a heap object of the dump, and a g starts with its stack's bounds (lo,
// hi; runtime/cgo and the assembly rely on that offset). A process's StackInuse is no such
// measure: it counts whole spans of stacks, also those of goroutines that ended, kept
// with their G for the next one, and what new goroutines start with follows the average
// stack the last collection saw.
func Goroutines(t testing.TB) []Goroutine {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "heap.dump"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	debug.WriteHeapDump(f.Fd())
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	gs, err := readHeapDump(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		t.Fatalf("reading the heap dump: %v", err)
	}
	return gs
}

// The records of a heap dump (runtime/heapdump.go, format "go1.7 heap dump").
const (
	tagEOF             = 0
	tagObject          = 1
	tagOtherRoot       = 2
	tagType            = 3
	tagGoroutine       = 4
	tagStackFrame      = 5
	tagParams          = 6
	tagFinalizer       = 7
	tagItab            = 8
	tagOSThread        = 9
	tagMemStats        = 10
	tagQueuedFinalizer = 11
	tagData            = 12
	tagBSS             = 13
	tagDefer           = 14
	tagPanic           = 15
	tagMemProf         = 16
	tagAllocSample     = 17
)

// dumpReader reads a heap dump's values: unsigned varints and length-prefixed bytes.
type dumpReader struct {
	r   *bufio.Reader
	err error
}

func (d *dumpReader) int() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(d.r)
	if err != nil {
		d.err = err
	}
	return v
}

func (d *dumpReader) ints(n int) {
	for range n {
		d.int()
	}
}

// bytes reads a length-prefixed string and returns its first keep bytes.
func (d *dumpReader) bytes(keep int) []byte {
	n := d.int()
	if d.err != nil {
		return nil
	}
	k := min(uint64(keep), n)
	b := make([]byte, k)
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.err = err
		return nil
	}
	if _, err := d.r.Discard(int(n - k)); err != nil {
		d.err = err
	}
	return b
}

// fields skips a list of pointer fields, which ends with a 0 kind.
func (d *dumpReader) fields() {
	for d.err == nil && d.int() != 0 {
		d.int()
	}
}

func readHeapDump(r *bufio.Reader) ([]Goroutine, error) {
	const header = "go1.7 heap dump\n"
	h := make([]byte, len(header))
	if _, err := io.ReadFull(r, h); err != nil || string(h) != header {
		return nil, fmt.Errorf("not a heap dump of the expected version: %q", h)
	}
	d := &dumpReader{r: r}
	starts := map[uint64][]byte{} // object address: its first two words
	type gRec struct {
		g     uint64
		funcs []string
	}
	var grs []gRec
	for d.err == nil {
		tag := d.int()
		switch tag {
		case tagEOF:
			gs := make([]Goroutine, 0, len(grs))
			for _, gr := range grs {
				b, ok := starts[gr.g]
				if !ok || len(b) < 16 {
					return nil, fmt.Errorf("goroutine's g %#x not among the objects", gr.g)
				}
				lo, hi := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
				gs = append(gs, Goroutine{Funcs: gr.funcs, Stack: hi - lo})
			}
			return gs, nil
		case tagObject:
			addr := d.int()
			starts[addr] = d.bytes(16)
			d.fields()
		case tagOtherRoot:
			d.bytes(0)
			d.int()
		case tagType:
			d.ints(2)
			d.bytes(0)
			d.int()
		case tagGoroutine:
			g := d.int()
			d.ints(7) // sp, goid, gopc, status, system, background, waitsince
			d.bytes(0)
			d.ints(4) // ctxt, m, defer, panic
			grs = append(grs, gRec{g: g})
		case tagStackFrame:
			d.ints(3)
			d.bytes(0)
			d.ints(3)
			name := string(d.bytes(1 << 10))
			d.fields()
			if len(grs) == 0 {
				return nil, errors.New("a stack frame before any goroutine")
			}
			grs[len(grs)-1].funcs = append(grs[len(grs)-1].funcs, name)
		case tagParams:
			d.ints(4)
			d.bytes(0)
			d.bytes(0)
			d.int()
		case tagFinalizer, tagQueuedFinalizer:
			d.ints(5)
		case tagItab, tagAllocSample:
			d.ints(2)
		case tagOSThread:
			d.ints(3)
		case tagMemStats:
			d.ints(24 + 256 + 1)
		case tagData, tagBSS:
			d.int()
			d.bytes(0)
			d.fields()
		case tagDefer:
			d.ints(7)
		case tagPanic:
			d.ints(6)
		case tagMemProf:
			d.int()
			d.int()
			n := d.int()
			for i := uint64(0); i < n && d.err == nil; i++ {
				d.bytes(0)
				d.bytes(0)
				d.int()
			}
			d.ints(2)
		default:
			if d.err == nil {
				return nil, fmt.Errorf("unknown record %d", tag)
			}
		}
	}
	return nil, d.err
}

// childEnv names the test that a child process started by InChild runs.
const childEnv = "SHD_TESTKIT_CHILD"

// InChild runs the calling test again in a child process of this test binary, with env
// added to its environment (such as a GODEBUG setting the runtime reads only at start),
// and reports whether this process is that child: the child runs the test's body, the
// parent returns false at once after the child passed (its log lines are logged), and
// fails the test when the child failed.
func InChild(t *testing.T, env ...string) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name(),
		// A -race binary otherwise waits a second before exiting.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "=== ") {
			t.Log(s)
		}
	}
	if err != nil {
		t.Fatalf("the test in a child process (%s): %v", strings.Join(env, " "), err)
	}
	return false
}
