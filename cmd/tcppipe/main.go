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

const help = `Usage: tcppipe [OPTIONS] SOURCE DESTINATION

Move bytes one way, from SOURCE to DESTINATION, until SOURCE ends. Each is one of:
  -              stdin as SOURCE, stdout as DESTINATION
  :PORT          listen on PORT, accept one connection and use it
  HOST PORT      connect to HOST (name, IPv4 or IPv6 literal) on PORT;
                 HOST "." is the host with the fewest bytes in the -n file
SOURCE and DESTINATION cannot both be network ends. "- -" copies stdin to stdout
(but, as cat, refuses to copy a regular file onto itself: "- - < f >> f").

Options:
  -b, --bind-file FILE     use the entry of FILE with the fewest bytes as the local
                           address of the socket; the bytes moved are added to it
  -n, --network-file FILE  the host file for HOST "."; if a host refuses or times out,
                           the next-fewest is tried; the bytes moved are added to it
  -i, --interval SECS      write host-file counts back every SECS while the transfer
                           runs (default 512), and always at the end
      --insert FILE        send FILE's content to DESTINATION before any SOURCE byte
                           (its bytes count against -l like any other)
  -l, --limit RATE         at most RATE bytes per second, fractions allowed; K, M, G,
                           T (or KiB ... TiB), either case, multiply by 1024, 1024^2,
                           ... as in pv: 1.5M is 1572864, 10m is 10485760
  -p, --progress           print throughput on stderr once a second and a summary
  -w, --wait SECS          after accepting a connection, wait SECS (fractions allowed)
                           before using it
  -h, --help               print this help and exit
  -v, --version            print the version and exit

Host files hold one "HOST BYTES" entry a line (HOST may be HOST:PORT or [V6]:PORT);
# starts a comment. They are updated under a lock (FILE.lock) and replaced atomically.

Environment:
  INADDR_DEFAULT   local address (IP or name) for every socket, unless -b is given;
                   a link-local IPv6 address takes its zone (fe80::1%eth0); a HOST
                   of the other IP family is refused at start

When SOURCE ends, a socket DESTINATION gets a FIN and tcppipe waits until its peer has
acknowledged every byte before it closes (it gives up after 10 s without progress). A
transfer cut short (a signal, a reset, an error) resets the connection, so that its peer
never takes a partial stream for a complete one.

Exit status: 0 all bytes delivered; 1 a runtime failure (connect, bind, read a file,
transfer cut short or not acknowledged: stderr says which end failed and how many bytes
went through); 2 a usage error.
SIGINT, SIGTERM and SIGHUP cut a transfer short: the counts of what went through are
written to the host files, stderr says how many bytes that was, and the exit status is 1.

Examples:
  tcppipe :9000 - > backup.tar                 receive on port 9000 into a file
  tar c dir | tcppipe -p - host.example 9000   send a stream, showing progress
  tcppipe -l 10M - ::1 9000 < big.iso          send over IPv6 at 10 MiB/s
  tcppipe -n hosts - . 9000 < big.iso          send to the least-used host of "hosts"
`

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
