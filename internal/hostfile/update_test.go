package hostfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

func writeFile(t *testing.T, path, text string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dirNames lists dir, to check that no temporary file is left behind.
func dirNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, e := range ents {
		s = append(s, e.Name())
	}
	return strings.Join(s, " ")
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "a 1\nb x\n", 0o644)
	f, warns, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 || !strings.HasPrefix(warns[0].Error(), path+":2: malformed entry") {
		t.Errorf("warnings = %q", warns)
	}
	if got := names(f.Entries()); got != "a" {
		t.Errorf("entries = %s", got)
	}

	_, _, err = Read(filepath.Join(dir, "missing"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read(missing) = %v, want ErrNotExist", err)
	}
	if want := "reading " + filepath.Join(dir, "missing") + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("Read(missing) error = %q, want %q", err, want)
	}
}

// TestReadNotRegular: a FIFO that nobody writes, a device and a directory are refused at
// once by Read and Update, which neither wait nor read without end, and Update leaves
// them as they are.
func TestReadNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, why string }{
		{fifo, "not a regular file"},
		{"/dev/zero", "not a regular file"},
		{dir, "is a directory"},
	} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			want := "reading " + tc.path + ": " + tc.why
			if _, _, err := Read(tc.path); err == nil || err.Error() != want {
				t.Errorf("Read(%s) = %v, want %q", tc.path, err, want)
			}
			err := Update(tc.path, true, func(f *File) error { f.Add("a", 1); return nil })
			if err == nil || err.Error() != want {
				t.Errorf("Update(%s) = %v, want %q", tc.path, err, want)
			}
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("reading %s still waits after 5s", tc.path)
		}
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode().Type() != fs.ModeNamedPipe {
		t.Errorf("the FIFO after Update: %v, %v", fi, err)
	}
}

// TestReadTooLarge: a file larger than MaxSize is refused by Read and Update without being
// read, and Update leaves it as it was.
func TestReadTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("a 1\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxSize + 1); err != nil { // sparse
		t.Fatal(err)
	}
	f.Close()
	want := "reading " + path + ": larger than 16 MiB, too large for a host file"
	if _, _, err := Read(path); !errors.Is(err, ErrTooLarge) || err.Error() != want {
		t.Errorf("Read = %v, want %q", err, want)
	}
	if err := Update(path, false, func(f *File) error { f.Add("a", 1); return nil }); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Update = %v, want ErrTooLarge", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != MaxSize+1 {
		t.Errorf("the file after Update: %v, %v", fi, err)
	}
}

func TestUpdateKeepsTextAndMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	const in = "# pool\r\n\r\na 1\r\nbad 1 2\r\n  b\t2  \r\n# end"
	writeFile(t, path, in, 0o640)

	err := Update(path, false, func(f *File) error {
		f.Add("b", 3)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(t, path), "# pool\r\n\r\na 1\r\nbad 1 2\r\n  b\t5  \r\n# end"; got != want {
		t.Errorf("file = %q, want %q", got, want)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640", st.Mode().Perm())
	}
	if got, want := dirNames(t, dir), "hosts hosts.lock"; got != want {
		t.Errorf("directory holds %q, want %q", got, want)
	}
}

func TestUpdateReplacesInode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "a 1\n", 0o600)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// A reader holding the old file keeps seeing the complete old version.
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := Update(path, false, func(f *File) error { f.Set("a", 2); return nil }); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Error("Update rewrote the file in place instead of replacing it")
	}
	if after.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", after.Mode().Perm())
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(old); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "a 1\n" {
		t.Errorf("old file now reads %q", buf.String())
	}
	if got := readFile(t, path); got != "a 2\n" {
		t.Errorf("file = %q", got)
	}
}

func TestUpdateErrorLeavesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "a 1\n", 0o644)
	before, _ := os.Stat(path)
	boom := errors.New("boom")
	err := Update(path, false, func(f *File) error {
		f.Set("a", 9)
		f.Add("b", 1)
		return boom
	})
	if err != boom {
		t.Fatalf("Update = %v, want the callback's error", err)
	}
	after, _ := os.Stat(path)
	if got := readFile(t, path); got != "a 1\n" || !os.SameFile(before, after) {
		t.Errorf("file after a failed callback = %q (same file %v)", got, os.SameFile(before, after))
	}
}

func TestUpdateUnchangedDoesNotWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "a 007\n", 0o644)
	before, _ := os.Stat(path)
	if err := Update(path, false, func(f *File) error { f.Set("a", 7); return nil }); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) || readFile(t, path) != "a 007\n" {
		t.Error("an Update that changed nothing replaced the file")
	}
}

func TestUpdateCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	err := Update(path, false, func(f *File) error { f.Add("a", 1); return nil })
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Update(create=false) of a missing file = %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file was created: %v", err)
	}

	if err := Update(path, true, func(f *File) error { f.Add("a", 1); return nil }); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "a 1\n" {
		t.Errorf("created file = %q", got)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("new file's mode = %v, want 0644", st.Mode().Perm())
	}

	err = Update(filepath.Join(dir, "nodir", "hosts"), true, func(f *File) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "nodir") {
		t.Errorf("Update in a missing directory = %v", err)
	}
}

func TestUpdateFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	link := filepath.Join(dir, "link")
	writeFile(t, real, "a 1\n", 0o644)
	if err := os.Symlink("real", link); err != nil {
		t.Skip(err)
	}
	if err := Update(link, false, func(f *File) error { f.Add("a", 1); return nil }); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v %v", fi, err)
	}
	if got := readFile(t, real); got != "a 2\n" {
		t.Errorf("target = %q", got)
	}
}

func TestUpdateRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "a 1\n", 0o644)
	stale := filepath.Join(dir, ".hosts.tmp-123")
	other := filepath.Join(dir, ".other.tmp-123")
	writeFile(t, stale, "a 1", 0o644)
	writeFile(t, other, "x", 0o644)
	if err := Update(path, false, func(f *File) error { f.Add("a", 1); return nil }); err != nil {
		t.Fatal(err)
	}
	if got, want := dirNames(t, dir), ".other.tmp-123 hosts hosts.lock"; got != want {
		t.Errorf("directory holds %q, want %q", got, want)
	}
}

func TestUpdateLockIsHeld(t *testing.T) {
	// While an Update runs its callback, the sidecar lock is held: no other descriptor can
	// take it, so no other process (or goroutine) can be inside an Update of the file.
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, "a 0\n", 0o644)
	err := Update(path, false, func(f *File) error {
		other := flock.New(path + LockSuffix)
		defer other.Close()
		ok, err := other.TryLock()
		if err != nil {
			return err
		}
		if ok {
			t.Error("the lock file was not locked during the callback")
		}
		f.Add("a", 1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	other := flock.New(path + LockSuffix)
	defer other.Close()
	if ok, err := other.TryLock(); !ok || err != nil {
		t.Errorf("the lock was not released after Update: %v %v", ok, err)
	}
}

// helperCmd returns a command that runs this test binary as the helper mode.
func helperCmd(t *testing.T, mode string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode,
		// A -race binary otherwise waits a second before exiting.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

func TestConcurrentProcesses(t *testing.T) {
	const procs, rounds = 8, 50
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	const head = "# shared by several writers\nbad line here\n\n"
	writeFile(t, path, head+"shared 0\n", 0o644)

	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := range procs {
		cmd := helperCmd(t, "add",
			"HELPER_PATH="+path,
			"HELPER_NAME="+fmt.Sprintf("w%d", i),
			"HELPER_ROUNDS="+strconv.Itoa(rounds),
			"HELPER_AMOUNT="+strconv.Itoa(i+1))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
		outs = append(outs, &out)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("writer %d: %v: %s", i, err, outs[i])
		}
	}
	f, warns, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 {
		t.Errorf("warnings = %q", warns)
	}
	if !strings.HasPrefix(string(f.Format()), head+"shared ") {
		t.Errorf("the head of the file changed:\n%s", f.Format())
	}
	got := map[string]uint64{}
	for _, e := range f.Entries() {
		if _, dup := got[e.Name]; dup {
			t.Errorf("entry %s appears twice", e.Name)
		}
		got[e.Name] = e.Bytes
	}
	if got["shared"] != procs*rounds {
		t.Errorf("shared = %d, want %d", got["shared"], procs*rounds)
	}
	for i := range procs {
		if n := got[fmt.Sprintf("w%d", i)]; n != uint64(rounds*(i+1)) {
			t.Errorf("w%d = %d, want %d", i, n, rounds*(i+1))
		}
	}
	if len(got) != procs+1 {
		t.Errorf("entries = %v", got)
	}
}

// crashFile is the text of the crash test's host file at version v: many lines, with
// comments, blank lines and malformed lines, and the version in its first and last entry.
func crashFile(v uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# crash test\n\nversion-head %d\n", v)
	for i := range 10000 {
		switch {
		case i%500 == 0:
			fmt.Fprintf(&b, "# section %d\r\n", i/500)
		case i%1250 == 1:
			fmt.Fprintf(&b, "malformed %d line\n", i)
		}
		fmt.Fprintf(&b, "host-%05d.example\t%d\n", i, i)
	}
	fmt.Fprintf(&b, "version-tail %d\n# end, no final newline", v)
	return b.String()
}

// fileState is what tells one version of a file from the next without reading it.
type fileState struct {
	ino, size int64
	mtime     time.Time
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		// Never missing: a writer that replaced the file in place would show it truncated.
		t.Fatalf("stat during the crash test: %v", err)
	}
	st := fileState{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = int64(sys.Ino)
	}
	return st
}

// hasTemp reports whether dir holds a writer's temporary file.
func hasTemp(t *testing.T, dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".hosts.tmp-") {
			return true
		}
	}
	return false
}

// TestCrashSafety kills writers at varied moments of an Update and checks that the file is
// always a complete version, old or new: every line in place, both version lines equal.
func TestCrashSafety(t *testing.T) {
	kills := 30
	if testing.Short() {
		kills = 6
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	writeFile(t, path, crashFile(0), 0o644)
	var last uint64 // the version in the file
	sawTemp := false

	for k := range kills {
		cmd := helperCmd(t, "rewrite", "HELPER_PATH="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		reports := make(chan uint64)
		go func() {
			defer close(reports)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				v, err := strconv.ParseUint(sc.Text(), 10, 64)
				if err != nil {
					return
				}
				reports <- v
			}
		}()
		kill := func() {
			cmd.Process.Signal(syscall.SIGKILL)
			for range reports { // drain, so the reader goroutine ends
			}
			cmd.Wait()
		}
		deadline := time.Now().Add(30 * time.Second)
		timeout := time.After(time.Until(deadline))

		// Let the writer replace the file at least once, so it is past its start-up.
		var seen uint64
		select {
		case v, ok := <-reports:
			if !ok {
				cmd.Wait()
				t.Fatalf("writer %d ended early: %s", k, stderr.String())
			}
			seen = v
		case <-timeout:
			kill()
			t.Fatalf("writer %d reported no version in 30 s", k)
		}
		// Then kill it at one of three moments of its next Update: at once (while it
		// locks, reads and parses); as soon as it is writing (a temporary file exists, or
		// the file changes); or as soon as the file has changed (after the rename).
		before := stateOf(t, path)
		switch k % 3 {
		case 1:
			for !hasTemp(t, dir) && stateOf(t, path) == before && time.Now().Before(deadline) {
			}
			sawTemp = sawTemp || hasTemp(t, dir)
		case 2:
			for stateOf(t, path) == before && time.Now().Before(deadline) {
			}
		}
		if time.Now().After(deadline) {
			kill()
			t.Fatalf("writer %d did not start a second Update in 30 s", k)
		}
		kill()

		data := readFile(t, path)
		f, warns := Parse(path, []byte(data))
		es := f.Entries()
		if len(es) != 10002 || len(warns) != 8 {
			t.Fatalf("after kill %d: %d entries, %d warnings", k, len(es), len(warns))
		}
		v := es[0].Bytes
		if v < seen || v <= last {
			t.Fatalf("after kill %d: version %d, but the writer had reported %d (previous %d)", k, v, seen, last)
		}
		if data != crashFile(v) {
			t.Fatalf("after kill %d: the file is not a complete version %d", k, v)
		}
		last = v
	}
	if !sawTemp && !testing.Short() {
		t.Log("no kill landed while a temporary file existed")
	}

	// Leftover temporary files of the killed writers go with the next Update.
	if err := Update(path, false, func(f *File) error { f.Add("version-head", 1); return nil }); err != nil {
		t.Fatal(err)
	}
	if got, want := dirNames(t, dir), "hosts hosts.lock"; got != want {
		t.Errorf("directory holds %q, want %q", got, want)
	}
}

// TestUpdateCreateHonoursUmask: a new host file, and its lock file, get 0666 less the
// umask, as any file a shell command creates: 0600 under umask 077, not 0644. Not
// parallel: the umask is the process's.
func TestUpdateCreateHonoursUmask(t *testing.T) {
	for _, mask := range []int{0o077, 0o022, 0o002} {
		old := syscall.Umask(mask)
		path := filepath.Join(t.TempDir(), "hosts")
		err := Update(path, true, func(f *File) error { f.Add("a", 1); return nil })
		syscall.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		want := fs.FileMode(0o666 &^ mask)
		for _, p := range []string{path, path + LockSuffix} {
			if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
				t.Errorf("umask %03o: %s: %v %v; want mode %v", mask, p, st.Mode().Perm(), err, want)
			}
		}
	}
}

// TestUpdateCreatesDanglingLinkTarget: a host file given as a symbolic link whose target
// does not exist yet gets the target created; the link stays a link, through a chain of
// links too.
func TestUpdateCreatesDanglingLinkTarget(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")   // -> sub/hosts, which does not exist
	chain := filepath.Join(dir, "chain") // -> link
	if err := os.Symlink(filepath.Join("sub", "hosts"), link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("link", chain); err != nil {
		t.Fatal(err)
	}
	for i, p := range []string{chain, link} {
		if err := Update(p, true, func(f *File) error { f.Add("a", 1); return nil }); err != nil {
			t.Fatal(err)
		}
		for _, l := range []string{chain, link} {
			if fi, err := os.Lstat(l); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				t.Errorf("Update(%s): %s is no longer a link: %v %v", p, l, fi, err)
			}
		}
		if got, want := readFile(t, filepath.Join(dir, "sub", "hosts")), fmt.Sprintf("a %d\n", i+1); got != want {
			t.Errorf("Update(%s): target = %q; want %q", p, got, want)
		}
	}
}
