package tunnel

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"shd-tcp-tools/internal/tlslink"
)

// newTLSServer makes a relay identity from a fresh key file in the test's directory.
func newTLSServer(t testing.TB) *tlslink.Server {
	t.Helper()
	s, err := tlslink.LoadServer("", filepath.Join(t.TempDir(), "relay.key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pinned(t testing.TB, pins ...string) *tlslink.Client {
	t.Helper()
	c, err := tlslink.NewPinned(pins)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// appearances counts the 8-byte words of data (at offsets that are multiples of 8) that
// occur anywhere in seen.
func appearances(data, seen []byte) int {
	words := make(map[uint64]struct{}, len(data)/8)
	for i := 0; i+8 <= len(data); i += 8 {
		words[binary.LittleEndian.Uint64(data[i:])] = struct{}{}
	}
	found := make(map[uint64]struct{})
	for i := 0; i+8 <= len(seen); i++ {
		w := binary.LittleEndian.Uint64(seen[i:])
		if _, ok := words[w]; ok {
			found[w] = struct{}{}
		}
	}
	return len(found)
}

// TestTLSHidesClientBytes sends a client's 1 MiB of random bytes through the tunnel with a
// tap on the link, over IPv4 and IPv6: with TLS none of them appears in the link's bytes
// (either way), without TLS they all do.
func TestTLSHidesClientBytes(t *testing.T) {
	for _, tc := range []struct {
		host string
		tls  bool
	}{{"127.0.0.1", true}, {"::1", true}, {"127.0.0.1", false}} {
		t.Run(fmt.Sprintf("%s tls=%v", tc.host, tc.tls), func(t *testing.T) {
			const size = 1 << 20
			svc := startService(t, tc.host, echoMode)
			var tn tunnel
			rc := RelayConfig{Hello: true, Wait: testTimeout}
			ac := AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1}
			if tc.tls {
				srv := newTLSServer(t)
				rc.TLS, ac.TLS = srv, pinned(t, srv.Pin)
			}
			startRelay(t, tc.host, rc, &tn)
			tp := startTap(t, tn.links.Addr().String())
			ac.Relay = epOf(t, tp.ln.Addr())
			startAgent(t, ac, &tn)
			tn.waitPools(t, 1, 1)

			c := dial(t, tn.clients)
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			data := make([]byte, size)
			_, _ = rand.Read(data)
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(data)
				if err == nil {
					err = c.CloseWrite()
				}
				werr <- err
			}()
			back, err := io.ReadAll(c)
			if err != nil || <-werr != nil || !bytes.Equal(back, data) {
				t.Fatalf("echo: %d bytes back (equal %v), read %v", len(back), bytes.Equal(back, data), err)
			}
			tn.relayLog.wait(`close #1 `)
			tp.mu.Lock()
			link := tp.conns[0]
			tp.mu.Unlock()
			link.mu.Lock()
			toAgent, toRelay := bytes.Clone(link.toAgent), bytes.Clone(link.toRelay)
			link.mu.Unlock()
			if len(toAgent) < size || len(toRelay) < size {
				t.Fatalf("the tap saw %d bytes to the agent and %d back, want at least %d each", len(toAgent), len(toRelay), size)
			}
			n := appearances(data, toAgent) + appearances(data, toRelay)
			t.Logf("tls=%v: %d of %d words of the client's data seen on the link", tc.tls, n, 2*size/8)
			switch {
			case tc.tls && n != 0:
				t.Errorf("with TLS, %d words of the client's data crossed the link in the clear", n)
			case !tc.tls && n < 2*size/8*99/100:
				t.Errorf("without TLS only %d words of the client's data seen on the link: the tap sees nothing?", n)
			}
		})
	}
}

// TestTLSPins runs links against pins that are right, wrong, and two for a rotation: a
// wrong pin is logged on both sides in words and no client is paired with the link.
func TestTLSPins(t *testing.T) {
	srv, other := newTLSServer(t), newTLSServer(t)
	for _, tc := range []struct {
		name string
		pins []string
		ok   bool
	}{
		{"right", []string{srv.Pin}, true},
		{"rotated old first", []string{other.Pin, srv.Pin}, true},
		{"rotated new first", []string{srv.Pin, other.Pin}, true},
		{"wrong", []string{other.Pin}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := startService(t, "127.0.0.1", echoMode)
			var tn tunnel
			startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: 200 * time.Millisecond, TLS: srv}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 2, TLS: pinned(t, tc.pins...),
				BackoffBase: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}, &tn)
			if tc.ok {
				tn.waitPools(t, 2, 2)
				if _, err := roundTrip(dial(t, tn.clients), 100<<10, 0); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := "relay presents " + srv.Pin + ", expected " + strings.Join(tc.pins, " or ")
			tn.agentLog.waitCount(`link #\d+ to .* failed: `+quoteRe(want)+`; retry \d+ in`, 3)
			tn.relayLog.waitCount(`link #\d+ refused 127\.0\.0\.1:\d+: connecttwo refused this relay's certificate \(tls: bad certificate\): check that its --tls-pin is this relay's `+quoteRe(srv.Pin), 3)
			if tn.relay.IdleLinks() != 0 || tn.agent.IdleLinks() != 0 {
				t.Errorf("a link with a wrong pin joined a pool: relay %d, agent %d", tn.relay.IdleLinks(), tn.agent.IdleLinks())
			}
			expectClosed(t, dial(t, tn.clients))
			tn.relayLog.wait(`failed #1 .* no idle link`)
			if svc.accepted.Load() != 0 {
				t.Error("a client was served through a link with a wrong pin")
			}
		})
	}
}

func quoteRe(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// startMITM runs a relay in the middle on loopback: it terminates each link's TLS with its
// own key (mitm) and passes the plaintext on to target, over TLS checked against
// targetPin when that is set, in the clear otherwise. seen collects what agents sent it.
func startMITM(t testing.TB, mitm *tlslink.Server, target, targetPin string) (ln *net.TCPListener, seen *bytes.Buffer) {
	t.Helper()
	ln = listen(t, "127.0.0.1")
	seen = new(bytes.Buffer)
	var mu sync.Mutex
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testTimeout))
				front := tls.Server(c, mitm.Config())
				if front.Handshake() != nil {
					return
				}
				raw, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer raw.Close()
				_ = raw.SetDeadline(time.Now().Add(testTimeout))
				var back net.Conn = raw
				if targetPin != "" {
					tc := tls.Client(raw, pinned(t, targetPin).Config())
					if tc.Handshake() != nil {
						return
					}
					back = tc
				}
				done := make(chan struct{})
				go func() {
					defer close(done)
					_, _ = io.Copy(back, io.TeeReader(front, lockedWriter{&mu, seen}))
				}()
				_, _ = io.Copy(front, back)
				c.Close()
				raw.Close()
				<-done
			}()
		}
	}()
	return ln, seen
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestTLSManInTheMiddle: a relay in the middle with its own key is refused by its pin; one
// that connecttwo trusts (its pin given by mistake, a CA that issued it a certificate) and
// that passes the link handshake on to the real relay over a TLS session of its own cannot
// pass the agent's proof of the secret on: the proofs are bound to the TLS session.
func TestTLSManInTheMiddle(t *testing.T) {
	srv, mitm := newTLSServer(t), newTLSServer(t)
	secret := []byte("correct horse")
	for _, tc := range []struct {
		name       string
		agentPin   string
		relayLog   string
		agentLog   string
		withSecret bool
	}{
		{name: "own key", agentPin: srv.Pin,
			agentLog: `failed: relay presents ` + quoteRe(mitm.Pin) + `, expected ` + quoteRe(srv.Pin)},
		{name: "trusted, proof passed on", agentPin: mitm.Pin, withSecret: true,
			relayLog: `link #\d+ refused 127\.0\.0\.1:\d+: authentication failed: wrong secret, replayed exchange, or a proof made in another TLS session`,
			agentLog: `failed: relay refused the link: authentication failed: wrong secret, replayed exchange, or a proof made in another TLS session`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := startService(t, "127.0.0.1", echoMode)
			var tn tunnel
			rc := RelayConfig{Hello: true, Wait: 200 * time.Millisecond, TLS: srv}
			ac := AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1, TLS: pinned(t, tc.agentPin),
				BackoffBase: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
			if tc.withSecret {
				rc.Secret, ac.Secret = secret, secret
			}
			startRelay(t, "127.0.0.1", rc, &tn)
			ln, _ := startMITM(t, mitm, tn.links.Addr().String(), srv.Pin)
			ac.Relay = epOf(t, ln.Addr())
			startAgent(t, ac, &tn)
			tn.agentLog.waitCount(`link #\d+ to .* `+tc.agentLog, 3)
			if tc.relayLog != "" {
				tn.relayLog.waitCount(tc.relayLog, 3)
			}
			if tn.relay.IdleLinks() != 0 || tn.agent.IdleLinks() != 0 {
				t.Errorf("a link through the man in the middle joined a pool: relay %d, agent %d", tn.relay.IdleLinks(), tn.agent.IdleLinks())
			}
			expectClosed(t, dial(t, tn.clients))
			if svc.accepted.Load() != 0 {
				t.Error("a client was served through the man in the middle")
			}
		})
	}
}

// TestTLSOneSided: TLS on one side only fails every link, logged on both sides in words.
func TestTLSOneSided(t *testing.T) {
	srv := newTLSServer(t)
	for _, tc := range []struct {
		name               string
		relay              *tlslink.Server
		agent              *tlslink.Client
		relayLog, agentLog string
	}{
		{"relay only", srv, nil,
			`refused 127\.0\.0\.1:\d+: connecttwo does not use TLS \(no --tls-pin or --tls-ca\), listentwo does \(--tls-key\)`,
			`failed: relay refused the link: listentwo uses TLS \(--tls-key\), connecttwo does not: give connecttwo --tls-pin`},
		{"agent only", nil, pinned(t, srv.Pin),
			`refused 127\.0\.0\.1:\d+: connecttwo uses TLS \(--tls-pin or --tls-ca\), listentwo does not \(no --tls-key\)`,
			`failed: relay answered without TLS: connecttwo uses TLS \(--tls-pin or --tls-ca\), listentwo does not \(no --tls-key\)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := startService(t, "127.0.0.1", echoMode)
			var tn tunnel
			startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: 200 * time.Millisecond, TLS: tc.relay}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1, TLS: tc.agent,
				BackoffBase: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}, &tn)
			tn.relayLog.waitCount(`link #\d+ `+tc.relayLog, 3)
			tn.agentLog.waitCount(`link #\d+ to .* `+tc.agentLog+`.*; retry \d+ in`, 3)
			if tn.relay.IdleLinks() != 0 || tn.agent.IdleLinks() != 0 {
				t.Errorf("a one-sided link joined a pool: relay %d, agent %d", tn.relay.IdleLinks(), tn.agent.IdleLinks())
			}
			expectClosed(t, dial(t, tn.clients))
			if svc.accepted.Load() != 0 {
				t.Error("a client was served through a one-sided link")
			}
		})
	}
}

// recorder keeps what is written through it.
type recorder struct {
	net.Conn
	written bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.written.Write(p)
	return r.Conn.Write(p)
}

// TestTLSSecret runs --secret-file inside TLS: links come up and serve, and an exchange
// recorded in one TLS session (the reply with its proof) is refused when replayed in
// another.
func TestTLSSecret(t *testing.T) {
	srv := newTLSServer(t)
	secret := []byte("correct horse")
	svc := startService(t, "127.0.0.1", echoMode)
	var tn tunnel
	startRelay(t, "127.0.0.1", RelayConfig{Hello: true, Wait: testTimeout, TLS: srv, Secret: secret}, &tn)
	startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 2, TLS: pinned(t, srv.Pin), Secret: secret}, &tn)
	tn.waitPools(t, 2, 2)
	if _, err := roundTrip(dial(t, tn.clients), 100<<10, 0); err != nil {
		t.Fatal(err)
	}
	// The link comes back from its session, one more than the pool, until it is trimmed.
	tn.agentLog.wait(`link #\d+ down .*: not needed`)
	tn.waitPools(t, 2, 2)

	// A link of our own, recorded: it proves the secret and joins the pool.
	session := func() *tls.Conn {
		c := dial(t, tn.links)
		tc := tls.Client(c, pinned(t, srv.Pin).Config())
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return tc
	}
	tc := session()
	binding, err := tlslink.Exporter(tc.ConnectionState())
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Conn: tc}
	if _, err := clientHandshake(rec, linkParams{hello: true, secret: secret, rand: rand.Reader, timeout: testTimeout, binding: binding, frames: true}); err != nil {
		t.Fatalf("recorded exchange: %v", err)
	}
	tn.waitPools(t, 2, 3)
	reply := rec.written.Bytes()[len(opening):]

	// The same reply in a new session.
	tc2 := session()
	_ = tc2.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.WriteString(tc2, opening); err != nil {
		t.Fatal(err)
	}
	if g, err := readLineConn(tc2); err != nil || !strings.HasPrefix(g, protoName+" hello=proxy auth=hmac-sha256 ") {
		t.Fatalf("greeting %q, %v", g, err)
	}
	if _, err := tc2.Write(reply); err != nil {
		t.Fatal(err)
	}
	v, _ := readLineConn(tc2)
	if !strings.HasPrefix(v, "ERR authentication failed") {
		t.Errorf("replayed exchange: verdict %q, want ERR authentication failed", v)
	}
	tn.relayLog.wait(`link #\d+ refused 127\.0\.0\.1:\d+: authentication failed`)
	if n := tn.relay.IdleLinks(); n != 3 {
		t.Errorf("relay has %d idle links after the replay, want 3", n)
	}
}

// testCA writes, in dir, a CA certificate (ca.pem) and for each name a certificate the CA
// issued for it (NAME.crt, NAME.key), valid from notBefore to notAfter.
func testCA(t *testing.T, dir string, certs map[string][2]time.Time) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", "CERTIFICATE", caDER)
	serial := int64(2)
	for name, valid := range certs {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			DNSNames: []string{name}, NotBefore: valid[0], NotAfter: valid[1],
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		serial++
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".crt", "CERTIFICATE", der)
		kd, _ := x509.MarshalPKCS8PrivateKey(key)
		write(name+".key", "PRIVATE KEY", kd)
	}
}

// TestTLSCA checks connecttwo --tls-ca --tls-name against certificates from a test CA:
// the right name is served; another name, an expired certificate and a certificate from
// another CA are refused, in words on both sides, and no client is paired.
func TestTLSCA(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	now := time.Now()
	valid, expired := [2]time.Time{now.Add(-time.Hour), now.Add(time.Hour)}, [2]time.Time{now.Add(-2 * time.Hour), now.Add(-time.Hour)}
	testCA(t, dir, map[string][2]time.Time{"relay.test": valid, "old.test": expired})
	testCA(t, other, map[string][2]time.Time{"relay.test": valid})
	for _, tc := range []struct {
		name, certDir, cert, tlsName string
		agentLog                     string // "" means served
	}{
		{"right name", dir, "relay.test", "relay.test", ""},
		{"other name", dir, "relay.test", "elsewhere.test", `relay's certificate refused: x509: certificate is valid for relay\.test, not elsewhere\.test`},
		{"expired", dir, "old.test", "old.test", `relay's certificate refused: x509: certificate has expired or is not yet valid`},
		{"other CA", other, "relay.test", "relay.test", `relay's certificate refused: x509: certificate signed by unknown authority`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := tlslink.LoadServer(filepath.Join(tc.certDir, tc.cert+".crt"), filepath.Join(tc.certDir, tc.cert+".key"))
			if err != nil {
				t.Fatal(err)
			}
			client, err := tlslink.NewCA(filepath.Join(dir, "ca.pem"), tc.tlsName)
			if err != nil {
				t.Fatal(err)
			}
			svc := startService(t, "::1", echoMode)
			var tn tunnel
			startRelay(t, "::1", RelayConfig{Hello: true, Wait: 200 * time.Millisecond, TLS: srv}, &tn)
			startAgent(t, AgentConfig{Service: svc.ep(t), Hello: true, Pool: 1, TLS: client,
				BackoffBase: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}, &tn)
			if tc.agentLog == "" {
				tn.waitPools(t, 1, 1)
				if _, err := roundTrip(dial(t, tn.clients), 100<<10, 0); err != nil {
					t.Fatal(err)
				}
				return
			}
			tn.agentLog.waitCount(`link #\d+ to .* failed: `+tc.agentLog, 2)
			tn.relayLog.waitCount(`link #\d+ refused \[::1\]:\d+: connecttwo refused this relay's certificate \(tls: [a-z ]+\)`, 2)
			expectClosed(t, dial(t, tn.clients))
			if svc.accepted.Load() != 0 || tn.relay.IdleLinks() != 0 {
				t.Error("a client was served through a refused certificate")
			}
		})
	}
}
