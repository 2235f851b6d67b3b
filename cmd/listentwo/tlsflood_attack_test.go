package main

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shd-tcp-tools/internal/metrics/metricstest"
	"shd-tcp-tools/internal/testkit"
	"shd-tcp-tools/internal/tunnel/tunneltest"
)

// clientHello returns the first TLS record a TLS 1.3 client sends: a whole ClientHello, with
// its key shares. Sent again and again on new connections it costs its sender nothing, and
// the relay a full handshake each time (key exchange and the certificate's signature).
func clientHello(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		_ = tls.Client(a, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}).Handshake()
	}()
	_ = b.SetReadDeadline(time.Now().Add(testkit.Timeout))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, 5+int(binary.BigEndian.Uint16(hdr[3:])))
	copy(rec, hdr)
	if _, err := io.ReadFull(b, rec[5:]); err != nil {
		t.Fatal(err)
	}
	return rec
}

// printPin runs listentwo --print-pin on key (made if missing) and returns the pin.
func printPin(t *testing.T, bin, key string) string {
	t.Helper()
	out, err := exec.Command(bin, "--print-pin", "--tls-key", key).Output()
	pin := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(pin, "sha256/") {
		t.Fatalf("listentwo --print-pin: %q, %v", out, err)
	}
	return pin
}

// TestAttackClientHelloFlood: strangers replay one ClientHello on listentwo's TLS link port,
// so that every connection costs listentwo a full TLS handshake (key exchange and the
// certificate's signature) and costs its sender none: "held", 300 connections at once from
// the agents' own source (127.0.0.1), each left hanging after the relay's flight and
// reopened as soon as listentwo closes it (the room of 256 pushes them out); "hit and
// run", 64 workers from 127.0.0.2 that connect, send the ClientHello and close, as fast as
// they can. During the flood a client's session on a link that was up before keeps
// moving, a second connecttwo started during it must have its two links up within 3 s,
// and 5 clients must be served (64 KiB each way, by SHA-256) with their first byte back
// within 2 s. The test logs what the flood cost listentwo: handshakes, CPU time per
// handshake.
func TestAttackClientHelloFlood(t *testing.T) {
	bins := tunneltest.Build(t)
	key := filepath.Join(t.TempDir(), "relay.key")
	pin := printPin(t, bins["listentwo"], key)
	hello := clientHello(t)
	for _, tc := range []struct {
		name, from string
		hitAndRun  bool
	}{
		{"held", "127.0.0.1", false},
		{"hit and run", "127.0.0.2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
			metricsAt := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t, "127.0.0.1"))
			relay, clients, links := startRelay(t, bins["listentwo"], "--tls-key", key, "--hello-dst", "--wait", "5", "--metrics", metricsAt)
			agentArgs := []string{"-s", links, "-d", svc.Addr(), "--hello-from-src", "--pool", "2", "--tls-pin", pin}
			first := testkit.Start(t, bins["connecttwo"], agentArgs...)
			first.WaitLog(t, `link #\d+ up `, 2, testkit.Timeout)
			// A session that runs through the flood: bytes echoed in small steps.
			long := testkit.Dial(t, clients)
			testkit.RoundTrip(t, long, 1000, 1<<10)

			before := metricstest.Get(t, metricsAt).Sum("listentwo_handshakes_refused_total")
			cpu0, t0 := relay.CPU(t), time.Now()
			var flood *tunneltest.Flood
			if tc.hitAndRun {
				flood = tunneltest.StartHitAndRun(t, tc.from, links, 64, 50000, hello)
			} else {
				flood = tunneltest.StartFlood(t, tc.from, links, 300, 50000, hello)
			}
			testkit.WaitUntil(t, testkit.Timeout, "the flood to churn", func() bool {
				return flood.Dials.Load() >= 600
			})

			start := time.Now()
			second := testkit.Start(t, bins["connecttwo"], agentArgs...)
			second.WaitLog(t, `link #\d+ up `, 2, testkit.Timeout)
			joined := time.Since(start)
			var slowest time.Duration
			for i := range 5 {
				slowest = max(slowest, clientThrough(t, "127.0.0.1", clients, uint64(i), 64<<10))
				testkit.RoundTrip(t, long, uint64(2000+i), 16<<10)
			}
			dials, held := flood.Dials.Load(), flood.MaxHeld.Load()
			cpu, wall := relay.CPU(t)-cpu0, time.Since(t0)
			refused := metricstest.Get(t, metricsAt).Sum("listentwo_handshakes_refused_total") - before
			flood.Stop()
			long.Close()
			perHandshake := time.Duration(0)
			if refused > 0 {
				perHandshake = cpu / time.Duration(refused)
			}
			t.Logf("flood: %d connects in %v, at most %d open at once; listentwo refused %.0f handshakes, used %v CPU (%.0f%% of one core, %v per handshake); second agent's links up in %v; slowest first byte of 5 clients %v",
				dials, wall.Round(time.Millisecond), held, refused, cpu, 100*cpu.Seconds()/wall.Seconds(), perHandshake.Round(time.Microsecond), joined.Round(time.Millisecond), slowest.Round(time.Millisecond))
			if joined > 3*time.Second {
				t.Errorf("a connecttwo started during the flood had its links up after %v, want within 3s", joined)
			}
			if slowest > 2*time.Second {
				t.Errorf("the slowest client's first byte came back after %v during the flood, want within 2s", slowest)
			}
			relay.Stop(t, syscall.SIGTERM, 5*time.Second)
			first.Stop(t, syscall.SIGTERM, 5*time.Second)
			second.Stop(t, syscall.SIGTERM, 5*time.Second)
		})
	}
}
