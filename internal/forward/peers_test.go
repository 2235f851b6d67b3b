package forward

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"shd-tcp-tools/internal/testkit"
)

func writeConfig(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A real HAProxy in front of tcp-pf --accept-proxy, sending version 1 (send-proxy) and
// version 2 (send-proxy-v2) headers: tcp-pf logs the client HAProxy served, over IPv4 and
// IPv6, and the bytes go through both intact.
func TestHAProxyInFront(t *testing.T) {
	haproxy := testkit.NeedProgram(t, "haproxy")
	echo := testkit.StartBackend(t, "127.0.0.1:0", testkit.Echo)
	pf := startServer(t, "127.0.0.1:0", Config{Dest: dest(t, echo.Addr()), AcceptProxy: true})
	type front struct {
		option, host string
		port         int
	}
	var fronts []front
	cfg := `global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 20s
    timeout server 20s
`
	for _, opt := range []string{"send-proxy", "send-proxy-v2"} {
		p4, p6 := testkit.FreePort(t, "127.0.0.1"), testkit.FreePort(t, "::1")
		fronts = append(fronts, front{opt, "127.0.0.1", p4}, front{opt, "::1", p6})
		cfg += fmt.Sprintf("listen %s\n    bind 127.0.0.1:%d\n    bind [::1]:%d\n    server pf %s %s\n", opt, p4, p6, pf.addr, opt)
	}
	hp := testkit.StartProgram(t, haproxy, "-db", "-f", writeConfig(t, "haproxy.cfg", cfg))
	for _, f := range fronts {
		hp.WaitListening(t, f.port)
	}
	for _, f := range fronts {
		t.Run(f.option+"/"+f.host, func(t *testing.T) {
			c := testkit.Dial(t, net.JoinHostPort(f.host, strconv.Itoa(f.port)))
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			testkit.RoundTrip(t, c, 8, 256<<10)
			c.Close()
			// The client is the one HAProxy served, not HAProxy's own socket.
			pf.log.WaitFor(t, `open #\d+ `+regexp.QuoteMeta(c.LocalAddr().String())+` -> `+regexp.QuoteMeta(echo.Addr())+`$`, 1, 10*time.Second)
			pf.log.WaitFor(t, `close #\d+ `+regexp.QuoteMeta(c.LocalAddr().String())+` -> .* up=262144 .* down=262144 `, 1, 10*time.Second)
		})
	}
	if n := pf.log.Count(`refused`); n != 0 {
		t.Errorf("tcp-pf refused %d connections from HAProxy:\n%s", n, pf.log)
	}
}

// A real nginx behind tcp-pf --send-proxy and --send-proxy-v2 (listen ... proxy_protocol):
// its access log's $proxy_protocol_addr and $proxy_protocol_port are the client's, over
// IPv4 and IPv6, and the reply comes back whole.
func TestNginxBehind(t *testing.T) {
	nginx := testkit.NeedProgram(t, "nginx")
	dir := t.TempDir()
	port := testkit.FreePort(t, "127.0.0.1")
	cfg := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
    log_format pp 'seen $proxy_protocol_addr $proxy_protocol_port via $remote_addr';
    access_log /dev/stdout pp;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    server {
        listen 127.0.0.1:%[2]d proxy_protocol;
        location / { return 200 "hello from nginx\n"; }
    }
}
`, dir, port)
	ng := testkit.StartProgram(t, nginx, "-e", "stderr", "-p", dir, "-c", writeConfig(t, "nginx.conf", cfg))
	ng.WaitListening(t, port)
	for _, fam := range []string{"127.0.0.1:0", "[::1]:0"} {
		for _, version := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/v%d", fam, version), func(t *testing.T) {
				pf := startServer(t, fam, Config{Dest: dest(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))), SendProxy: version})
				c := testkit.Dial(t, pf.addr)
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: test\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				reply, err := io.ReadAll(bufio.NewReader(c))
				if err != nil || !regexp.MustCompile(`(?s)^HTTP/1\.1 200 .*\r\n\r\nhello from nginx\n$`).Match(reply) {
					t.Fatalf("reply %q, %v\nnginx:\n%s", reply, err, ng.Log)
				}
				la := c.LocalAddr().(*net.TCPAddr)
				ng.Log.WaitFor(t, `^seen `+regexp.QuoteMeta(la.IP.String())+` `+strconv.Itoa(la.Port)+` via 127\.0\.0\.1$`, 1, 10*time.Second)
			})
		}
	}
}
