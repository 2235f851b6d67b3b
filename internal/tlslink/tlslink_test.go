package tlslink

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParsePin(t *testing.T) {
	good := "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
	if p, err := ParsePin(good); err != nil || p != good {
		t.Errorf("ParsePin(%q) = %q, %v", good, p, err)
	}
	for _, bad := range []string{"", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "sha1/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		"sha256/AAAA", "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", "sha256/47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="} {
		if _, err := ParsePin(bad); err == nil {
			t.Errorf("ParsePin(%q) accepted", bad)
		}
	}
}

func writeKey(t *testing.T, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestKeyTypes: P-256 (PKCS#8 and SEC1) and Ed25519 keys are taken, with a pin that is
// their public key's; other keys are refused in words.
func TestKeyTypes(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs8 := func(k any) []byte {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sec1, _ := x509.MarshalECPrivateKey(p256)
	for _, tc := range []struct {
		name, typ string
		der       []byte
		pub       any
		err       string
	}{
		{"p256 pkcs8", "PRIVATE KEY", pkcs8(p256), &p256.PublicKey, ""},
		{"p256 sec1", "EC PRIVATE KEY", sec1, &p256.PublicKey, ""},
		{"ed25519", "PRIVATE KEY", pkcs8(ed), ed.Public(), ""},
		{"p384", "PRIVATE KEY", pkcs8(p384), nil, "an ECDSA key on P-384; want P-256 or Ed25519"},
		{"rsa", "PRIVATE KEY", pkcs8(rsaKey), nil, "want an ECDSA P-256 or Ed25519 key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := LoadServer("", writeKey(t, tc.typ, tc.der))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			spki, _ := x509.MarshalPKIXPublicKey(tc.pub)
			if want := PinOf(&x509.Certificate{RawSubjectPublicKeyInfo: spki}); s.Pin != want || s.Created {
				t.Errorf("pin %s created %v, want %s, false", s.Pin, s.Created, want)
			}
		})
	}
}

// TestCreateOnce: processes starting at once with a missing key file share one key.
func TestCreateOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.key")
	var wg sync.WaitGroup
	pins := make([]string, 8)
	created := make([]bool, 8)
	for i := range pins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := LoadServer("", path)
			if err != nil {
				t.Error(err)
				return
			}
			pins[i], created[i] = s.Pin, s.Created
		}()
	}
	wg.Wait()
	n := 0
	for i := range pins {
		if pins[i] != pins[0] {
			t.Errorf("pins differ: %v", pins)
		}
		if created[i] {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d loads say they created the key, want 1", n)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file %v, %v; want mode 0600", st.Mode(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("the directory holds %d files, want only the key: temporary files left", len(entries))
	}
}

// pinnedOnLoopback returns a relay's identity (a new key), an agent's configuration that
// pins it, and a listener on 127.0.0.1 closed when the test ends.
func pinnedOnLoopback(t *testing.T) (*Server, *Client, net.Listener) {
	t.Helper()
	srv, err := LoadServer("", filepath.Join(t.TempDir(), "relay.key"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := NewPinned([]string{srv.Pin})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return srv, cl, ln
}

// TestResumedLinksCheckThePin: a second link resumes the first one's session, and the pin
// is checked on it as on a full handshake.
func TestResumedLinksCheckThePin(t *testing.T) {
	srv, cl, ln := pinnedOnLoopback(t)
	sc := srv.Config()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, sc)
				if tc.Handshake() == nil {
					_, _ = tc.Write([]byte("x")) // after the ticket
					_, _ = io.Copy(io.Discard, tc)
				}
			}()
		}
	}()
	link := func() (tls.ConnectionState, error) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, cl.Config())
		var b [1]byte
		_, err = io.ReadFull(tc, b[:])
		return tc.ConnectionState(), err
	}
	for i, wantResume := range []bool{false, true, true} {
		cs, err := link()
		if err != nil || cs.DidResume != wantResume {
			t.Fatalf("link %d: resumed %v, %v; want resumed %v", i, cs.DidResume, err, wantResume)
		}
	}
	other := "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
	cl.pins = []string{other}
	_, err := link()
	var pe *PinError
	if !errors.As(err, &pe) || pe.Got != srv.Pin {
		t.Fatalf("a resumable link with another pin: %v, want the pin refused", err)
	}
}

// TestFileErrors: LoadServer's and NewCA's errors name the file they are about in plain
// words, as an *fs.PathError for its path (cmd/listentwo and cmd/connecttwo name it by the
// flag), and a key of a type without a self-signed certificate wraps ErrKeyType.
func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	notPEM := filepath.Join(dir, "notpem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "relay.key")
	if _, err := LoadServer("", key); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  func() error
		path string
		want string
	}{
		{"key not PEM", func() error { _, err := LoadServer("", notPEM); return err }, notPEM,
			"key file " + notPEM + ": no PEM private key in the file (want an ECDSA P-256 or Ed25519 key; a missing file is created)"},
		{"key in no directory", func() error { _, err := LoadServer("", filepath.Join(missing, "k")); return err }, filepath.Join(missing, "k"),
			"key file " + filepath.Join(missing, "k") + ": creating it: no such file or directory"},
		{"certificate missing", func() error { _, err := LoadServer(missing, key); return err }, missing,
			"certificate file " + missing + ": no such file or directory"},
		{"key of a certificate missing", func() error { _, err := LoadServer(notPEM, missing); return err }, missing,
			"key file " + missing + ": no such file or directory"},
		{"CA missing", func() error { _, err := NewCA(missing, "relay"); return err }, missing,
			"CA file " + missing + ": no such file or directory"},
		{"CA not PEM", func() error { _, err := NewCA(notPEM, "relay"); return err }, notPEM,
			"CA file " + notPEM + ": no PEM certificate in the file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			pe, ok := err.(*fs.PathError)
			if !ok || pe.Path != tc.path || err.Error() != tc.want {
				t.Errorf("error %#v (%v), want an *fs.PathError for %s: %q", err, err, tc.path, tc.want)
			}
		})
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadServer("", writeKey(t, "PRIVATE KEY", der)); !errors.Is(err, ErrKeyType) {
		t.Errorf("RSA key: %v, want ErrKeyType", err)
	}
}
