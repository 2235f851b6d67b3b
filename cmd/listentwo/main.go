// Command listentwo is the relay end of a reverse tunnel: it serves clients that connect to
// -s through links that connecttwo, on a machine that cannot accept connections, opens to
// -d. See docs/tunnel.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/cli"
	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/metrics"
	"shd-tcp-tools/internal/systemd"
	"shd-tcp-tools/internal/tlslink"
	"shd-tcp-tools/internal/tunnel"
)

const tool = "listentwo"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	// The stop cuts every relay at once: a second SIGINT or SIGTERM has nothing to hurry.
	ctx, _, reload, cancel := cli.ServiceContext(context.Background())
	defer cancel()
	var metricsAt endpoint.Endpoint
	cfg, err := parse(ctx, args, stdout, stderr, &metricsAt)
	if errors.Is(err, errPrinted) {
		return cli.ExitOK
	}
	if err != nil {
		return report(stderr, err)
	}
	cfg.Loops = runtime.GOMAXPROCS(0) // one event loop per CPU, and spare Ps beside them
	runtime.GOMAXPROCS(cfg.Loops + tunnel.SpareProcs)
	r, err := tunnel.NewRelay(cfg)
	if err != nil {
		return report(stderr, err)
	}
	ms, err := metrics.Listen(ctx, metricsAt, cfg.Local)
	if err != nil {
		return report(stderr, fmt.Errorf("--metrics: %w", err))
	}
	defer ms.Close()
	ms.Serve(metrics.Relay(r), cfg.Log)
	go cli.OnReload(ctx, reload, r.Reload)
	err = r.ListenAndServe(ctx)
	cfg.Log.Drain() // the last lines, and any count of dropped ones, before the exit
	return report(stderr, err)
}

// report prints err and returns the exit status: 2 for a usage error, also for what
// systemd passed when it disagrees with the command line.
func report(stderr io.Writer, err error) int {
	if _, ok := errors.AsType[*systemd.SetupError](err); ok {
		err = cli.AsUsage(err)
	}
	return cli.Report(stderr, tool, err)
}

// parse turns the command line into a checked configuration, and --metrics into
// metricsAt; nothing is opened yet.
func parse(ctx context.Context, args []string, stdout, stderr io.Writer, metricsAt *endpoint.Endpoint) (tunnel.RelayConfig, error) {
	var cfg tunnel.RelayConfig
	fs := cli.NewFlagSet(tool, help, stdout)
	clients := fs.StringP("clients", "s", "", "")
	links := fs.StringP("links", "d", "", "")
	fs.BoolVar(&cfg.Hello, "hello-dst", false, "")
	allowed := fs.StringArrayP("allow", "a", nil, "")
	wait := cli.Seconds{D: tunnel.DefaultWait}
	fs.Var(&wait, "wait", "")
	secretFile := fs.String("secret-file", "", "")
	fs.IntVar(&cfg.MaxLinks, "max-links", tunnel.DefaultMaxLinks, "")
	tlsKey := fs.String("tls-key", "", "")
	tlsCert := fs.String("tls-cert", "", "")
	printPin := fs.Bool("print-pin", false, "")
	logFlags := fs.LogFlags()
	metricsFlag := fs.String("metrics", "", "")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case fs.Changed("tls-cert") && !fs.Changed("tls-key"):
		return cfg, cli.Usagef("--tls-cert needs --tls-key, the certificate's private key")
	case *printPin && !fs.Changed("tls-key"):
		return cfg, cli.Usagef("--print-pin prints the pin of --tls-key FILE: give it")
	case fs.Changed("tls-key") && *tlsKey == "", fs.Changed("tls-cert") && *tlsCert == "":
		return cfg, cli.Usagef("--tls-key and --tls-cert need a file name")
	case *printPin && fs.NArg() > 0:
		return cfg, cli.Usagef("unexpected argument %q; see --help", fs.Arg(0))
	case *printPin:
		srv, err := loadTLS(*tlsCert, *tlsKey)
		if err != nil {
			return cfg, err
		}
		if srv.Created {
			cli.Printf(stderr, "%s: created --tls-key %s (mode 0600) with a new key\n", tool, *tlsKey)
		}
		fmt.Fprintln(stdout, srv.Pin)
		return cfg, errPrinted
	}
	svc, err := systemd.New(ctx, systemd.Socket{Flag: "-s", Name: "clients"}, systemd.Socket{Flag: "-d", Name: "links"})
	if err != nil {
		return cfg, err
	}
	*clients, *links = svc.Default("clients", *clients), svc.Default("links", *links) // socket-activated: may be left out
	cfg.Listen, cfg.Ready, cfg.Stopped = svc.Listen, svc.Ready, svc.Close
	if err := fs.NoArgs(cli.Address{Flag: "clients", Form: "[ADDR:]PORT"}, cli.Address{Flag: "links", Form: "[ADDR:]PORT"}); err != nil {
		return cfg, err
	}
	if *clients == "" {
		return cfg, cli.Usagef("missing -s [ADDR:]PORT, where clients connect")
	}
	if *links == "" {
		return cfg, cli.Usagef("missing -d [ADDR:]PORT, where connecttwo's links connect")
	}
	if cfg.Clients, err = endpoint.ParseListen(*clients); err != nil {
		return cfg, cli.Usagef("-s: %v", err)
	}
	if cfg.Links, err = endpoint.ParseListen(*links); err != nil {
		return cfg, cli.Usagef("-d: %v", err)
	}
	if cfg.Clients == cfg.Links {
		return cfg, cli.Usagef("-s and -d are the same address %s", cfg.Clients)
	}
	if cfg.MaxLinks < 1 {
		return cfg, cli.Usagef("--max-links %d: must be at least 1", cfg.MaxLinks)
	}
	if fs.Changed("metrics") {
		if *metricsAt, err = endpoint.ParseListen(*metricsFlag); err != nil {
			return cfg, cli.Usagef("--metrics: %v", err)
		}
	}
	cfg.Wait = wait.D
	if cfg.Allow, err = allow.Parse(ctx, nil, *allowed); err != nil {
		if stopped, ok := errors.AsType[*allow.StoppedError](err); ok {
			// A signal while a name was looked up: a stop, not a usage error.
			cli.Printf(stderr, "%s: stopped before listening: looking up -a %s\n", tool, stopped.Name)
			return cfg, errPrinted
		}
		return cfg, cli.Usagef("-a: %v", err)
	}
	if cfg.Local, err = endpoint.ResolveLocal(ctx, os.Getenv(endpoint.EnvLocal)); err != nil {
		return cfg, cli.AsUsage(err)
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
	cfg.Log = connlog.NewWith(stderr, logFlags.Options())
	if fs.Changed("tls-key") {
		srv, err := loadTLS(*tlsCert, *tlsKey)
		if err != nil {
			return cfg, err
		}
		cli.Warn(stderr, tool, srv.Warning)
		if srv.Created {
			cfg.Log.Printf("created --tls-key %s (mode 0600) with a new key", *tlsKey)
		}
		cfg.Log.Printf("tls pin %s", srv.Pin)
		cfg.TLS = srv
	}
	return cfg, nil
}

// loadTLS reads the relay's TLS identity from --tls-key (and --tls-cert), its error and
// its warning naming the file by the flag that gave it.
func loadTLS(certFile, keyFile string) (*tlslink.Server, error) {
	srv, err := tlslink.LoadServer(certFile, keyFile)
	if err != nil {
		err = cli.FileError("--tls-key", keyFile, cli.FileError("--tls-cert", certFile, err))
		if errors.Is(err, tlslink.ErrKeyType) && certFile == "" {
			err = fmt.Errorf("%w (or give a CA-issued certificate with --tls-cert)", err)
		}
		return nil, err
	}
	srv.Warning = cli.FileError("--tls-key", keyFile, srv.Warning)
	return srv, nil
}

// errPrinted ends a run that did what was asked by printing (--print-pin): exit 0.
var errPrinted = errors.New("printed")
