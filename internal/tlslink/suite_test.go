package tlslink

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"net"
	"testing"

	"golang.org/x/sys/cpu"

	"shd-tcp-tools/internal/testkit"
)

// TestLinkSuite: on a CPU with AES hardware (x86's AES-NI and carry-less multiply) a link
// negotiates AES-128-GCM, the cheapest of TLS 1.3's suites there (crypto/tls chooses;
// tls.Config cannot order TLS 1.3 suites).
func TestLinkSuite(t *testing.T) {
	srv, cli, ln := pinnedOnLoopback(t)
	errc := make(chan error, 1)
	go func() {
		a, err := ln.Accept()
		if err == nil {
			defer a.Close()
			s := tls.Server(a, srv.Config())
			err = s.Handshake()
			_, _ = s.Read(make([]byte, 1)) // until the client closes
		}
		errc <- err
	}()
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(b, cli.Config())
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	got := c.ConnectionState().CipherSuite
	t.Logf("negotiated %s", tls.CipherSuiteName(got))
	if cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ && got != tls.TLS_AES_128_GCM_SHA256 {
		t.Errorf("with AES hardware the link negotiated %s, want TLS_AES_128_GCM_SHA256 (the cheapest here, BenchmarkSeal)", tls.CipherSuiteName(got))
	}
}

// BenchmarkSeal seals 16 KiB records with the AEADs of TLS 1.3's AES suites: what
// encrypting a GiB costs here (ChaCha20-Poly1305 is chosen only without AES hardware).
func BenchmarkSeal(b *testing.B) {
	key := make([]byte, 32)
	nonce := make([]byte, 12)
	rec := make([]byte, 16<<10)
	out := make([]byte, 0, len(rec)+64)
	gcm := func(n int) cipher.AEAD {
		blk, _ := aes.NewCipher(key[:n])
		a, _ := cipher.NewGCM(blk)
		return a
	}
	for _, s := range []struct {
		name string
		aead cipher.AEAD
	}{{"AES-128-GCM", gcm(16)}, {"AES-256-GCM", gcm(32)}} {
		b.Run(s.name, func(b *testing.B) {
			b.SetBytes(int64(len(rec)))
			before := testkit.CPUTime()
			for b.Loop() {
				out = s.aead.Seal(out[:0], nonce, rec, nil)
			}
			b.ReportMetric((testkit.CPUTime()-before).Seconds()/(float64(b.N)*float64(len(rec))/(1<<30)), "cpu-s/GiB")
		})
	}
}
