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
	"shd-tcp-tools/internal/metrics"
	"shd-tcp-tools/internal/tlslink"
	"shd-tcp-tools/internal/tunnel"
)

const tool = "connecttwo"

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
	cfg.Loops = runtime.GOMAXPROCS(0) // one event loop per CPU, and spare Ps beside them
	runtime.GOMAXPROCS(cfg.Loops + tunnel.SpareProcs)
	a, err := tunnel.NewAgent(cfg)
	if err != nil {
		return cli.Report(stderr, tool, err)
	}
	ms, err := metrics.Listen(ctx, metricsAt, cfg.Local)
	if err != nil {
		return cli.Report(stderr, tool, fmt.Errorf("--metrics: %w", err))
	}
	defer ms.Close()
	ms.Serve(metrics.Agent(a), cfg.Log)
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
