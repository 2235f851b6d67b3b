// Command tcppipe moves bytes one way between stdin/stdout and a TCP connection, with
// optional rate limiting, throughput reports and host-file accounting.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/cli"
	"shd-tcp-tools/internal/endpoint"
	"shd-tcp-tools/internal/pipe"
)

const tool = "tcppipe"

func main() {
	// A closed stdout is a write error like any other: report the bytes that went through
	// and exit 1, rather than die of SIGPIPE on some copy paths (write) and not on others
	// (splice).
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

func run(ctx context.Context, args []string, stdin, stdout *os.File, stderr io.Writer, getenv func(string) string) int {
	cfg, err := parse(ctx, args, stdout, getenv)
	if err != nil {
		return cli.Report(stderr, tool, err)
	}
	cfg.Stdin, cfg.Stdout, cfg.Stderr = stdin, stdout, stderr
	cfg.Terminal = isTerminal(stderr)
	ctx, stop := cli.SignalContext(ctx)
	defer stop()
	return cli.Report(stderr, tool, fileFlags(cfg, pipe.Run(ctx, cfg)))
}

// fileFlags names a file in err, an error of pipe.Run about one of its files, by the flag
// that gave it: "--insert FILE: no such file or directory".
func fileFlags(cfg pipe.Config, err error) error {
	err = cli.FileError("--insert", cfg.InsertFile, err)
	err = cli.FileError("-b", cfg.BindFile, err)
	return cli.FileError("-n", cfg.NetworkFile, err)
}

// parse turns the command line into a pipe.Config; every usage error is found here,
// before any file or socket is touched.
func parse(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) (pipe.Config, error) {
	var cfg pipe.Config
	fs := cli.NewFlagSet(tool, help, stdout)
	fs.StringVarP(&cfg.BindFile, "bind-file", "b", "", "")
	fs.StringVarP(&cfg.NetworkFile, "network-file", "n", "", "")
	interval := cli.Seconds{D: pipe.DefaultInterval}
	fs.VarP(&interval, "interval", "i", "")
	fs.StringVar(&cfg.InsertFile, "insert", "", "")
	var rate cli.Rate
	fs.VarP(&rate, "limit", "l", "")
	fs.BoolVarP(&cfg.Progress, "progress", "p", false, "")
	var wait cli.Seconds
	fs.VarP(&wait, "wait", "w", "")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if interval.D <= 0 {
		return cfg, cli.Usagef("-i %s: the interval must be more than zero seconds", fs.Lookup("interval").Value)
	}
	src, dst, err := pipe.ParseEnds(fs.Args())
	if err != nil {
		return cfg, cli.AsUsage(err)
	}
	cfg.Source, cfg.Destination = src, dst
	if (src.Least || dst.Least) && cfg.NetworkFile == "" {
		return cfg, cli.Usagef("host \".\" needs a network file: give -n FILE")
	}
	if cfg.NetworkFile != "" && !src.Least && !dst.Least {
		return cfg, cli.Usagef("-n %s is only used with host \".\"", cfg.NetworkFile)
	}
	if cfg.BindFile != "" && !src.Network() && !dst.Network() {
		return cfg, cli.Usagef("-b %s needs a network SOURCE or DESTINATION", cfg.BindFile)
	}
	if cfg.Wait = wait.D; cfg.Wait > 0 && src.Kind != pipe.Listen && dst.Kind != pipe.Listen {
		return cfg, cli.Usagef("-w is only used with a :PORT end")
	}
	cfg.Interval, cfg.Rate = interval.D, rate.BytesPerSecond
	if cfg.Local, err = endpoint.ResolveLocal(ctx, getenv(endpoint.EnvLocal)); err != nil {
		return cfg, cli.AsUsage(err)
	}
	for _, e := range []pipe.End{src, dst} {
		if e.Kind == pipe.Connect && !e.Least && cfg.BindFile == "" { // -b overrides INADDR_DEFAULT
			if err := endpoint.CheckFamily(endpoint.EnvLocal, cfg.Local, e.Endpoint.Host); err != nil {
				return cfg, cli.AsUsage(err)
			}
		}
	}
	return cfg, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
