package main

import (
	"crypto/sha256"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

// TestAttackInsertFIFO: --insert names a FIFO, as `--insert <(command)` does. One that no
// process writes, and one whose writer wrote and never closes, hold tcp-pf before it
// listens, which must say what it waits for (once, after a second), and the first SIGINT or SIGTERM must end it at once
// (exit 0, one line saying it stopped before listening); a blocking open(2) or read(2)
// held it until a third signal killed it. A FIFO whose writer closes is the insert of
// every connection.
func TestAttackInsertFIFO(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		writer bool // a writer that writes and never closes
		sig    syscall.Signal
	}{
		{"no writer, SIGTERM", false, syscall.SIGTERM},
		{"no writer, SIGINT", false, syscall.SIGINT},
		{"writer never closes, SIGTERM", true, syscall.SIGTERM},
		{"writer never closes, SIGINT", true, syscall.SIGINT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fifo := filepath.Join(t.TempDir(), "fifo")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			addr := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1")) // tcp-pf rejects port 0
			p := testkit.Start(t, "tcp-pf", "-s", addr, "-d", "[::1]:9", "--insert", fifo)
			if tc.writer {
				w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // returns once tcp-pf opened it
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				if _, err := w.Write([]byte("never ends")); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			for p.Log.Count(`waiting for --insert `) == 0 && time.Now().Before(deadline) && !p.Exited() {
				time.Sleep(5 * time.Millisecond) // a poll, with a deadline
			}
			if n := p.Log.Count(`waiting for --insert .*fifo: `); n != 1 {
				t.Errorf("%d lines say what tcp-pf waits for, want 1", n)
			}
			p.Signal(t, tc.sig)
			select {
			case <-p.Done():
			case <-time.After(2 * time.Second):
				t.Fatalf("tcp-pf still running 2s after the first %v, waiting on its --insert FIFO", tc.sig)
			}
			code, _ := p.Exit(t, time.Second)
			if code != 0 {
				t.Errorf("exit status %d after %v, want 0", code, tc.sig)
			}
			if n := p.Log.Count(`stopped before listening: --insert .*fifo`); n != 1 {
				t.Errorf("%d lines say tcp-pf stopped before listening, want 1", n)
			}
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				t.Errorf("something listens on %s: tcp-pf must not listen without its --insert", addr)
			}
		})
	}
	t.Run("writer closes", func(t *testing.T) {
		t.Parallel()
		fifo := filepath.Join(t.TempDir(), "fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		head := []byte("HEAD from a FIFO\n")
		got := make(chan [32]byte, 1)
		b := testkit.StartBackend(t, "[::1]:0", func(c *net.TCPConn) {
			data, _ := io.ReadAll(c)
			got <- sha256.Sum256(data)
		})
		go func() {
			w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
			if err == nil {
				w.Write(head)
				w.Close()
			}
		}()
		p := startPF(t, "127.0.0.1", "", "-d", b.Addr(), "--insert", fifo)
		c := testkit.Dial(t, p.addr)
		body := make([]byte, 1<<20)
		for i := range body {
			body[i] = byte(i * 7)
		}
		if _, err := c.Write(body); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
		select {
		case sum := <-got:
			if want := sha256.Sum256(append(head, body...)); sum != want {
				t.Errorf("the destination got other bytes than the FIFO's and the client's")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the destination got no end within 5s")
		}
		p.Stop(t, syscall.SIGTERM, 5*time.Second)
	})
}
