// Command connecttwo is the hidden end of a reverse tunnel: on a machine that cannot accept
// connections, it keeps idle links open to listentwo's link port and connects each link a
// client takes to the local service. See docs/tunnel.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"shd-tcp-tools/internal/cli"
	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/meter"
	"shd-tcp-tools/internal/metrics"
	"shd-tcp-tools/internal/tlslink"
	"shd-tcp-tools/internal/tunnel"
)

const tool = "connecttwo"

const help = `Usage: connecttwo -s HOST:PORT -d HOST:PORT [--hello-from-src] [--pool N]
                  [--secret-file FILE] [--send-proxy]
                  [--tls-pin sha256/BASE64]... [--tls-ca FILE [--tls-name NAME]]

Hidden end of a reverse tunnel. Keeps --pool idle links open to listentwo's link port -s;
when a client takes one, connects to the service -d and relays the two both ways, then
opens a replacement link at once. When links are taken as soon as they join the relay's
pool (clients wait there), it opens plain links beyond --pool, up to 32 more. A TLS link
comes back when its client's session ends, so a replacement is opened only while fewer
than --pool links are idle. A link beyond --pool that stays idle 5 s while more than
--pool are idle is closed. If the relay cannot be reached or a link
drops, it reconnects with exponential backoff (up to 30 s, with jitter); a link cut
during its handshake is retried within a second. It never exits for either.

Options:
  -s, --relay HOST:PORT    listentwo's link port (its -d)
  -d, --service HOST:PORT  the service to serve, often on 127.0.0.1
      --hello-from-src     expect a PROXY v1 header naming the client on each taken link,
                           then connect (listentwo must use --hello-dst; both or neither)
      --send-proxy         pass that header on to the service (for servers that read
                           PROXY headers: nginx, HAProxy); needs --hello-from-src
      --pool N             idle links to keep open at least (default 2, at most 1024);
                           they are opened at most 32 at a time; a burst of clients
                           opens up to 32 plain links more
      --secret-file FILE   prove to listentwo, and check that it proves, the first line
                           of FILE (HMAC-SHA256 challenge; listentwo needs the same file)
      --tls-pin sha256/BASE64
                           encrypt every link with TLS 1.3 and accept only a relay whose
                           key has this pin (what listentwo --print-pin prints, and logs
                           as "tls pin ..."); repeatable, to rotate the relay's key
      --tls-ca FILE        encrypt every link with TLS 1.3 and accept only a relay whose
                           certificate chains to a CA certificate in FILE (PEM)
      --tls-name NAME      with --tls-ca: the name the relay's certificate must carry
                           (default: the host of -s)
  -q, --quiet              log warnings and errors only: no link up or down, open or
                           close lines (retries and failures are still logged)
      --log-format FORMAT  text (the default), or json: one JSON object per event with
                           the fields of its text line (man connecttwo)
      --metrics [ADDR:]PORT
                           serve Prometheus metrics on http://ADDR:PORT/metrics: links
                           by state, reconnects, connections to the service by outcome,
                           bytes each way as they move (names prefixed connecttwo_)
  -h, --help               print this help and exit
  -v, --version            print the version and exit

Environment:
  INADDR_DEFAULT   connect from this local address

Example: reach sshd on A, which accepts no connections, from C through B:
  on B:  listentwo -s 1234 -d 1235 --hello-dst
  on A:  connecttwo -s B:1235 -d 127.0.0.1:22 --hello-from-src
  on C:  ssh -p 1234 user@B
Without hellos (leave out both flags) a link is taken by the client's first byte, so only
protocols whose client speaks without waiting for the server work (ssh, HTTP, TLS; not
SMTP, IMAP or MySQL). With the links encrypted: on B,
listentwo --tls-key relay.key --print-pin prints the pin; add --tls-key relay.key on B
and --tls-pin sha256/... (that pin) on A. The TLS handshake is made when a link opens,
not when a client comes; with --secret-file the proofs are bound to the TLS session.

Logs go to stderr: links up and down with the reason, retries, each connection to the
service and its close with bytes and bandwidth each way. If the service cannot be
reached, that client is reset at once (its link closed, or with TLS its session ended)
and logged (beyond 10 per 10 s, counted and summed up in one line). If stderr is not read or is
gone, lines are dropped (never the service) and the count is logged when it can be.

Signals: SIGINT or SIGTERM stops; open relays are cut, their link and service connection
reset, so no one takes a cut transfer for a complete one. SIGHUP rereads --secret-file:
links opened from then on prove the new secret.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	// The stop cuts every relay at once: a second SIGINT or SIGTERM has nothing to hurry.
	ctx, _, reload, cancel := cli.ServiceContext(context.Background())
	defer cancel()
	var metricsAt endpoint.Endpoint
	cfg, err := parse(ctx, args, stdout, stderr, &metricsAt)
	if err != nil {
		return cli.Report(stderr, tool, err)
	}
	// One event loop per CPU relays the paired connections, and the control plane's
	// goroutines (handshakes, accepts) run beside them on spare Ps: while a P is idle, Go's
	// sysmon leaves a loop waiting in epoll_wait alone, where with one spare P, busy with
	// the control plane, it took the loop's P back every round and woke every 20 µs
	// (about a sixth of each process's CPU time per new client; four spare Ps: 10-15%
	// less CPU per client, docs/tunnel.md).
	cfg.Loops = runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(cfg.Loops + 4)
	a, err := tunnel.NewAgent(cfg)
	if err != nil {
		return cli.Report(stderr, tool, err)
	}
	ms, err := metrics.Listen(ctx, metricsAt, cfg.Local)
	if err != nil {
		return cli.Report(stderr, tool, fmt.Errorf("--metrics: %w", err))
	}
	defer ms.Close()
	ms.Serve(metrics.Agent(a))
	if ms != nil {
		cfg.Log.Printf("metrics on http://%s%s", ms.Addr(), metrics.Path)
	}
	cfg.Log.Printf("keeping %s open to %s for %s", meter.Count(cfg.Pool, "link"), cfg.Relay, cfg.Service)
	go cli.OnReload(ctx, reload, a.Reload)
	err = a.Run(ctx)
	cfg.Log.Drain() // the last lines, and any count of dropped ones, before the exit
	return cli.Report(stderr, tool, err)
}

// parse turns the command line into a checked configuration, and --metrics into
// metricsAt; nothing is opened yet.
func parse(ctx context.Context, args []string, stdout, stderr io.Writer, metricsAt *endpoint.Endpoint) (tunnel.AgentConfig, error) {
	var cfg tunnel.AgentConfig
	fs := cli.NewFlagSet(tool, help, stdout)
	relayAddr := fs.StringP("relay", "s", "", "")
	service := fs.StringP("service", "d", "", "")
	fs.BoolVar(&cfg.Hello, "hello-from-src", false, "")
	fs.BoolVar(&cfg.SendProxy, "send-proxy", false, "")
	fs.IntVar(&cfg.Pool, "pool", tunnel.DefaultPool, "")
	secretFile := fs.String("secret-file", "", "")
	pins := fs.StringArray("tls-pin", nil, "")
	caFile := fs.String("tls-ca", "", "")
	tlsName := fs.String("tls-name", "", "")
	logFlags := fs.LogFlags()
	metricsFlag := fs.String("metrics", "", "")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case fs.Changed("tls-pin") && fs.Changed("tls-ca"):
		return cfg, cli.Usagef("give --tls-pin or --tls-ca, not both")
	case fs.Changed("tls-name") && !fs.Changed("tls-ca"):
		return cfg, cli.Usagef("--tls-name is the name --tls-ca checks: it needs --tls-ca")
	case fs.Changed("tls-ca") && *caFile == "":
		return cfg, cli.Usagef("--tls-ca needs a file name")
	}
	if fs.Changed("tls-pin") {
		c, err := tlslink.NewPinned(*pins)
		if bad, ok := errors.AsType[*tlslink.BadPinError](err); ok {
			return cfg, cli.Usagef("--tls-pin %q: %v", bad.Pin, bad.Err)
		}
		if err != nil {
			return cfg, cli.AsUsage(err)
		}
		cfg.TLS = c
	}
	if err := fs.NoArgs(cli.Address{Flag: "relay", Form: "HOST:PORT"}, cli.Address{Flag: "service", Form: "HOST:PORT"}); err != nil {
		return cfg, err
	}
	if *relayAddr == "" {
		return cfg, cli.Usagef("missing -s HOST:PORT, listentwo's link port")
	}
	if *service == "" {
		return cfg, cli.Usagef("missing -d HOST:PORT, the service to serve")
	}
	var err error
	if cfg.Relay, err = endpoint.ParseHostPort(*relayAddr); err != nil {
		return cfg, cli.Usagef("-s: %v", err)
	}
	if cfg.Service, err = endpoint.ParseHostPort(*service); err != nil {
		return cfg, cli.Usagef("-d: %v", err)
	}
	if cfg.Pool < 1 {
		return cfg, cli.Usagef("--pool %d: must be at least 1", cfg.Pool)
	}
	if fs.Changed("metrics") {
		if *metricsAt, err = endpoint.ParseListen(*metricsFlag); err != nil {
			return cfg, cli.Usagef("--metrics: %v", err)
		}
	}
	if cfg.Pool > tunnel.MaxPool {
		return cfg, cli.Usagef("--pool %d: at most %d", cfg.Pool, tunnel.MaxPool)
	}
	if cfg.SendProxy && !cfg.Hello {
		return cfg, cli.Usagef("--send-proxy passes on the hello: it needs --hello-from-src")
	}
	if cfg.Local, err = endpoint.ResolveLocal(ctx, os.Getenv(endpoint.EnvLocal)); err != nil {
		return cfg, cli.AsUsage(err)
	}
	for _, ep := range []endpoint.Endpoint{cfg.Relay, cfg.Service} {
		if err := endpoint.CheckFamily(endpoint.EnvLocal, cfg.Local, ep.Host); err != nil {
			return cfg, cli.AsUsage(err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, cli.AsUsage(err)
	}
	if fs.Changed("secret-file") {
		secret, warning, err := tunnel.LoadSecret(*secretFile)
		if err != nil {
			return cfg, cli.UsageIf(cli.FileError("--secret-file", *secretFile, err), tunnel.ErrEmptySecret)
		}
		cli.Warn(stderr, tool, cli.FileError("--secret-file", *secretFile, warning))
		cfg.Secret, cfg.SecretFile = secret, *secretFile
	}
	if fs.Changed("tls-ca") {
		name := *tlsName
		if name == "" {
			name = cfg.Relay.Host
		}
		c, err := tlslink.NewCA(*caFile, name)
		if err != nil {
			return cfg, cli.FileError("--tls-ca", *caFile, err)
		}
		cfg.TLS = c
	}
	cfg.Log = connlog.NewWith(stderr, logFlags.Options())
	return cfg, nil
}
