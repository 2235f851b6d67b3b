// Command tcp-pf is a TCP port forwarder and least-bytes load balancer: it listens on a
// port and relays every connection, both ways, to one destination or to the host of a host
// file that has moved the fewest bytes. See docs/tcp-pf.md.
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
	"shd-tcp-tools/internal/forward"
	"shd-tcp-tools/internal/metrics"
	"shd-tcp-tools/internal/patherr"
	"shd-tcp-tools/internal/systemd"
)

const tool = "tcp-pf"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, hurry, reload, cancel := cli.ServiceContext(context.Background())
	defer cancel()
	err := serve(ctx, hurry, reload, args, stdout, stderr)
	if _, ok := errors.AsType[*systemd.SetupError](err); ok {
		err = cli.AsUsage(err) // the unit and the command line disagree
	}
	code := cli.Report(stderr, tool, err)
	// Counts that could not be written at the stop: ready-to-run lines that add them.
	if uw, ok := errors.AsType[*forward.UnwrittenError](err); ok {
		for _, line := range uw.Commands() {
			fmt.Fprintln(stderr, line)
		}
	}
	return code
}

func serve(ctx context.Context, hurry, reload <-chan struct{}, args []string, stdout, stderr io.Writer) error {
	o, flags, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	svc, err := systemd.New(ctx, systemd.Socket{Flag: "-s", Name: "source"})
	if err != nil {
		return err
	}
	defer svc.Close()
	o.source = svc.Default("source", o.source) // socket-activated: -s may be left out
	listen, cfg, err := configure(ctx, o, flags)
	if err != nil {
		return err
	}

	// Files next (exit 1), still before any socket.
	if o.insert != "" {
		data, err := readInsert(o.insert)
		if err != nil {
			return err
		}
		cfg.Insert = data
	}
	cfg.Hurry = hurry // a second SIGINT or SIGTERM ends --grace
	cfg.Log = connlog.NewWith(stderr, o.log.Options())
	defer cfg.Log.Drain() // the last lines, and any count of dropped ones, before the exit
	// One event loop per CPU, and a spare P beside them.
	cfg.Loops = runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(cfg.Loops + forward.SpareProcs)
	srv, warn, err := forward.New(cfg)
	for _, w := range warn {
		cli.Warn(stderr, tool, w)
	}
	var noPort *forward.NoPortError
	if errors.As(err, &noPort) {
		return cli.AsUsage(err) // a missing -p, found in the file
	}
	if err != nil {
		return err
	}
	ms, err := metrics.Listen(ctx, o.metricsAt, cfg.Local)
	if err != nil {
		return fmt.Errorf("--metrics: %w", err)
	}
	defer ms.Close()
	ln, err := svc.Listen(ctx, "source", listen, cfg.Local)
	if err != nil {
		return err
	}
	ms.Serve(metrics.Forward(srv), cfg.Log)
	// SIGHUP rereads the host file (nothing with -d), also in the grace period after a
	// SIGTERM: it never ends the process, whose counts are not written yet.
	hup, stopHup := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHup()
	go cli.OnReload(hup, reload, srv.Reload)
	cli.Warn(stderr, tool, svc.Ready())
	return srv.Serve(ctx, ln)
}

// maxInsert bounds --insert: the content is kept in memory and sent on every connection,
// and a file without end (/dev/zero, a FIFO that never closes) would otherwise be read
// until the machine runs out of memory.
const maxInsert = 64 << 20

// readInsert reads the --insert file, refusing one larger than maxInsert.
func readInsert(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, patherr.Wrap("--insert", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxInsert+1))
	if err != nil {
		return nil, patherr.Wrap("--insert", path, err)
	}
	if len(data) > maxInsert {
		return nil, fmt.Errorf("--insert %s: larger than %d MiB; tcp-pf keeps it in memory for every connection", path, maxInsert>>20)
	}
	return data, nil
}
