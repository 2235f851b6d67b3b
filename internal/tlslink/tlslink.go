// Package tlslink holds the TLS 1.3 side of the tunnel's links: listentwo's key file (created
// with a self-signed certificate when missing) or CA-issued certificate, connecttwo's check of
// the relay's key against pins or of its certificate against a CA and a name, the pin's
// spelling (sha256/BASE64 of the SubjectPublicKeyInfo), and the exporter value that binds the
// link handshake's proofs to one TLS session.
package tlslink

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"shd-tcp-tools/internal/patherr"
	"shd-tcp-tools/internal/regfile"
)

// PinPrefix starts every pin: the hash function, as HTTP public-key pinning spelled it.
const PinPrefix = "sha256/"

// exporterLabel names the keying material the link handshake mixes into its proofs
// (RFC 5705, RFC 8446 section 7.5).
const exporterLabel = "EXPORTER-shd-tcp-tools-link"

// ExporterLen is the length of Exporter's value.
const ExporterLen = 32

// PinOf returns the pin of cert's public key: "sha256/" and the standard base64 of the
// SHA-256 of its SubjectPublicKeyInfo.
func PinOf(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return PinPrefix + base64.StdEncoding.EncodeToString(sum[:])
}

// ParsePin checks that s is a pin as PinOf spells it and returns it unchanged. Its error
// is a *BadPinError.
func ParsePin(s string) (string, error) {
	b64, ok := strings.CutPrefix(s, PinPrefix)
	if !ok {
		return "", &BadPinError{Pin: clip(s), Err: fmt.Errorf("a pin starts with %q (what listentwo --print-pin prints)", PinPrefix)}
	}
	sum, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(sum) != sha256.Size {
		return "", &BadPinError{Pin: clip(s), Err: fmt.Errorf("not %s and the base64 of 32 bytes (44 characters)", PinPrefix)}
	}
	return s, nil
}

// BadPinError is a pin ParsePin refuses: the pin as given (its first 64 bytes and "..."
// when longer), and what is wrong with it. cmd/connecttwo names it by its flag.
type BadPinError struct {
	Pin string
	Err error
}

func (e *BadPinError) Error() string { return fmt.Sprintf("pin %q: %v", e.Pin, e.Err) }

// Unwrap returns e.Err.
func (e *BadPinError) Unwrap() error { return e.Err }

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Server is listentwo's TLS identity: a certificate with its key, and the key's pin.
type Server struct {
	Cert tls.Certificate
	// Pin is the pin of the certificate's key (PinOf).
	Pin string
	// Created tells that the key file did not exist and was made now.
	Created bool
	// Warning is non-nil when the key file can be read by other users.
	Warning error
}

// ErrKeyType is wrapped by LoadServer's error for a key of a type a self-signed
// certificate is not made for (RSA, say): a CA-issued certificate can still carry it.
var ErrKeyType = errors.New("want an ECDSA P-256 or Ed25519 key")

// The words for the two files in LoadServer's errors and warning (*fs.PathError, as
// patherr.Wrap makes them), which cmd/listentwo names by its flags.
const (
	keyWhat  = "key file"
	certWhat = "certificate file"
)

// LoadServer reads listentwo's identity. Without certFile, keyFile holds an ECDSA P-256 or
// Ed25519 private key (PKCS#8 or SEC1 PEM), made (mode 0600, P-256) when it does not exist,
// and a self-signed certificate for it is made in memory: connecttwo checks the key's pin,
// not the certificate. With certFile, the two files are a CA-issued certificate chain and
// its key, as tls.LoadX509KeyPair reads them. An error names the file it is about, as
// "key file PATH: reason" or "certificate file PATH: reason".
func LoadServer(certFile, keyFile string) (*Server, error) {
	s := &Server{}
	if certFile != "" {
		cert, err := loadPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		s.Cert = cert
	} else {
		key, created, err := loadOrCreateKey(keyFile)
		if err != nil {
			return nil, err
		}
		s.Created = created
		cert, err := selfSigned(key)
		if err != nil {
			return nil, patherr.Wrap(keyWhat, keyFile, fmt.Errorf("making a self-signed certificate: %w", err))
		}
		s.Cert = cert
	}
	leaf, err := x509.ParseCertificate(s.Cert.Certificate[0])
	if err != nil {
		return nil, patherr.Wrap(certWhat, certFile, err)
	}
	s.Cert.Leaf = leaf
	s.Pin = PinOf(leaf)
	if st, err := os.Stat(keyFile); err == nil && st.Mode().Perm()&0o077 != 0 {
		s.Warning = patherr.Wrap(keyWhat, keyFile, errors.New("can be read by other users; chmod 600 it"))
	}
	return s, nil
}

// maxPEM bounds a key, certificate or CA file: a CA bundle of a few hundred certificates
// fits many times over.
const maxPEM = 16 << 20

// readPEM reads a key, certificate or CA file, which must be a regular file: a FIFO that
// nobody writes would hold the start in open(2), where a signal cannot end it.
func readPEM(path string) ([]byte, error) {
	return regfile.ReadFile(path, maxPEM)
}

// loadPair is tls.LoadX509KeyPair, with each error naming the file it is about.
func loadPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readPEM(certFile)
	if err != nil {
		return tls.Certificate{}, patherr.Wrap(certWhat, certFile, err)
	}
	keyPEM, err := readPEM(keyFile)
	if err != nil {
		return tls.Certificate{}, patherr.Wrap(keyWhat, keyFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, patherr.Wrap(certWhat, certFile, fmt.Errorf("with key file %s: %w", keyFile, err))
	}
	return cert, nil
}

// Config returns the relay's TLS configuration: TLS 1.3 only, no client certificates.
// Session tickets are on: connecttwo opens a link for every client, and a resumed
// handshake skips the certificate's signature and its check. The relay sends a ticket
// right after its handshake messages, so connecttwo has read it before the link is idle,
// and an idle link stays silent.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{s.Cert},
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
	}
}

// loadOrCreateKey reads the private key in path, or makes a P-256 key there when path does
// not exist. The new file appears complete or not at all (written beside it, then linked
// into place, so that two processes starting at once share one key).
func loadOrCreateKey(path string) (crypto.Signer, bool, error) {
	data, err := readPEM(path)
	if err == nil {
		key, err := parseKey(data)
		if err != nil {
			return nil, false, patherr.Wrap(keyWhat, path, err)
		}
		return key, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, patherr.Wrap(keyWhat, path, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, patherr.Wrap(keyWhat, path, fmt.Errorf("making a key: %w", err))
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, patherr.Wrap(keyWhat, path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new*")
	if err != nil {
		return nil, false, patherr.Wrap(keyWhat, path, fmt.Errorf("creating it: %w", patherr.Strip(err)))
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		err = pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if errors.Is(err, os.ErrExist) {
		return loadOrCreateKey(path) // another process made it first: use that one
	}
	if err != nil {
		return nil, false, patherr.Wrap(keyWhat, path, fmt.Errorf("creating it: %w", patherr.Strip(err)))
	}
	return key, true, nil
}

// parseKey reads the first private key PEM block of data: PKCS#8 or SEC1, ECDSA P-256 or
// Ed25519.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key in the file (want an ECDSA P-256 or Ed25519 key; a missing file is created)")
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading the private key: %w", err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			if k.Curve != elliptic.P256() {
				return nil, fmt.Errorf("an ECDSA key on %s; want P-256 or Ed25519", k.Curve.Params().Name)
			}
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("a %T: %w", key, ErrKeyType)
		}
	}
}

// selfSigned makes a certificate for key, signed by itself. Its fields carry no meaning to
// connecttwo, which checks only the key's pin; it is valid from an hour ago for 100 years so
// that clocks set wrong do not matter either.
func selfSigned(key crypto.Signer) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "listentwo"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(100, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Client is how connecttwo checks the relay: its key against pins, or its certificate
// against CA roots and a name.
type Client struct {
	pins  []string
	roots *x509.CertPool
	name  string
	// sessions keeps the relay's session tickets, so that the next link resumes.
	sessions tls.ClientSessionCache
}

// NewPinned returns a Client that accepts a relay whose key has one of pins (each checked
// with ParsePin), whatever its certificate says otherwise.
func NewPinned(pins []string) (*Client, error) {
	if len(pins) == 0 {
		return nil, errors.New("no pin to check the relay's key against")
	}
	c := &Client{sessions: tls.NewLRUClientSessionCache(sessionCache)}
	for _, p := range pins {
		p, err := ParsePin(p)
		if err != nil {
			return nil, err
		}
		c.pins = append(c.pins, p)
	}
	return c, nil
}

// NewCA returns a Client that accepts a relay whose certificate chains to one of the PEM
// certificates in caFile and names name (a DNS name or an IP address). An error about the
// file names it as "CA file PATH: reason" (an *fs.PathError).
func NewCA(caFile, name string) (*Client, error) {
	data, err := readPEM(caFile)
	if err != nil {
		return nil, patherr.Wrap("CA file", caFile, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data) {
		return nil, patherr.Wrap("CA file", caFile, errors.New("no PEM certificate in the file"))
	}
	if name == "" {
		return nil, errors.New("a CA check needs the name the relay's certificate must carry")
	}
	return &Client{roots: roots, name: name, sessions: tls.NewLRUClientSessionCache(sessionCache)}, nil
}

// sessionCache is how many relays' session tickets a Client keeps: one relay, with room.
const sessionCache = 4

// Config returns connecttwo's TLS configuration: TLS 1.3 only, and the relay checked as c
// says. Links resume the session of an earlier link when the relay allows it (a ticket
// from this process's memory, never stored): the relay's key was checked in the full
// handshake the ticket came from, and the pin is checked again on every link (Go keeps
// the certificates with the session); the key exchange and the exporter are new on every
// link.
func (c *Client) Config() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13, ClientSessionCache: c.sessions}
	if c.roots != nil {
		cfg.RootCAs, cfg.ServerName = c.roots, c.name
		return cfg
	}
	// The pin replaces the chain check: the certificate is self-signed.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("relay presents no certificate")
		}
		got := PinOf(cs.PeerCertificates[0])
		for _, p := range c.pins {
			if p == got {
				return nil
			}
		}
		return &PinError{Got: got, Want: c.pins}
	}
	return cfg
}

// PinError is a relay whose key has none of the pins connecttwo was given.
type PinError struct {
	Got  string
	Want []string
}

func (e *PinError) Error() string {
	return fmt.Sprintf("relay presents %s, expected %s", e.Got, strings.Join(e.Want, " or "))
}

// Exporter returns the keying material of cs's session that the link handshake mixes into
// its proofs (RFC 5705 and RFC 9266's use of it): both ends of one TLS session compute the
// same value, and two sessions (as a relay in the middle that terminates TLS has) never
// do, so a proof made in one session proves nothing in another.
func Exporter(cs tls.ConnectionState) ([]byte, error) {
	b, err := cs.ExportKeyingMaterial(exporterLabel, nil, ExporterLen)
	if err != nil {
		return nil, fmt.Errorf("TLS exporter: %w", err)
	}
	return b, nil
}
