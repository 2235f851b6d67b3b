package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSSHThroughTunnel runs OpenSSH through the tunnel, with and without hellos, over
// IPv4 and IPv6: a real sshd of the test's own on loopback (its own host key and
// authorized key), a real ssh client that sends 1 MiB on stdin to `sha256sum` on the far
// side and reads the checksum back. sshd speaks first, but OpenSSH's client sends its own
// version line as soon as it connects, without waiting for the server's, so without
// hellos the client's first bytes take the link and ssh works all the same
// (docs/tunnel.md).
func TestSSHThroughTunnel(t *testing.T) {
	sshd := sshdPath(t)
	ssh := needTool(t, "ssh", "openssh-client")
	dir := t.TempDir()
	keygen := needTool(t, "ssh-keygen", "openssh-client")
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfg := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
AuthorizedKeysFile %s
PidFile %s
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
`, port, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sshdLog := newSink(t, "sshd")
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = sshdLog, sshdLog
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sshd: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // by pid: the sshd this test started
		<-exited
	})
	waitListening(t, "127.0.0.1:"+strconv.Itoa(port), exited)

	data := make([]byte, 1<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	for _, hello := range []bool{false, true} {
		for _, host := range []string{"127.0.0.1", "::1"} {
			t.Run(fmt.Sprintf("hello=%v/%s", hello, host), func(t *testing.T) {
				var tn tunnel
				startRelay(t, host, RelayConfig{Hello: hello, Wait: testTimeout}, &tn)
				startAgent(t, AgentConfig{Service: hep(port), Hello: hello, Pool: 1}, &tn)
				tn.waitPools(t, 1, 1)
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				defer cancel()
				c := exec.CommandContext(ctx, ssh, "-F", "/dev/null", "-p", strconv.Itoa(epOf(t, tn.clients.Addr()).Port),
					"-i", filepath.Join(dir, "user"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
					"-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR",
					"-l", me.Username, host, "sha256sum")
				c.Stdin = bytes.NewReader(data)
				var stderr bytes.Buffer
				c.Stderr = &stderr
				start := time.Now()
				out, err := c.Output()
				if err != nil {
					t.Fatalf("ssh through the tunnel: %v\nssh: %s\nsshd:\n%s\nlistentwo:\n%s\nconnecttwo:\n%s", err, stderr.String(), sshdLog, tn.relayLog, tn.agentLog)
				}
				if got, _, _ := strings.Cut(string(out), " "); got != want {
					t.Fatalf("sha256sum on the far side printed %q, want %s", out, want)
				}
				t.Logf("1 MiB up through ssh and the tunnel, checksum back, in %v", time.Since(start).Round(time.Millisecond))
				tn.relayLog.wait(`close #1 .* end="(client|server) closed"$`)
			})
		}
	}
}

// sshdPath returns OpenSSH's server, which Debian installs outside a user's PATH, and
// makes sure of the directory its privilege separation needs (systemd's unit creates it).
func sshdPath(t *testing.T) string {
	t.Helper()
	p := "/usr/sbin/sshd"
	if _, err := os.Stat(p); err != nil {
		p = needTool(t, "sshd", "openssh-server")
	}
	if os.Geteuid() != 0 {
		t.Skip("sshd needs root here, for its privilege separation")
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshd's privilege separation directory: %v", err)
	}
	return p
}
