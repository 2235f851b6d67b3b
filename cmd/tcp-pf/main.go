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
	"time"

	"shd-tcp-tools/internal/allow"
	"shd-tcp-tools/internal/cli"
	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/forward"
	"shd-tcp-tools/internal/metrics"
	"shd-tcp-tools/internal/patherr"
	"shd-tcp-tools/internal/regfile"
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
	if stopped, ok := errors.AsType[*allow.StoppedError](err); ok {
		fmt.Fprintf(stderr, "%s: stopped before listening: looking up -a %s\n", tool, stopped.Name)
		return nil
	}
	if err != nil {
		return err
	}

	cfg.Hurry = hurry // a second SIGINT or SIGTERM ends --grace
	cfg.Log = connlog.NewWith(stderr, o.log.Options())
	defer cfg.Log.Drain() // the last lines, and any count of dropped ones, before the exit
	// Files next (exit 1), still before any socket.
	if o.insert != "" {
		data, err := readInsert(ctx, o.insert, cfg.Log)
		if ctx.Err() != nil {
			// A signal while a FIFO's writer was awaited: nothing was served, nothing lost.
			cfg.Log.Printf("stopped before listening: --insert %s was not read to its end (%d bytes came)", o.insert, len(data))
			return nil
		}
		if err != nil {
			return err
		}
		cfg.Insert = data
	}
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

// readInsert reads the --insert file, refusing one larger than maxInsert. A FIFO (such as
// `--insert <(command)`) is read until its writer closes it; when that takes more than
// insertPatience, tcp-pf says once what it waits for. The waits end with ctx (a signal),
// returning what was read.
func readInsert(ctx context.Context, path string, log *connlog.Logger) ([]byte, error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		slow := time.AfterFunc(insertPatience, func() {
			log.Printf("waiting for --insert %s: a FIFO not yet at its end; tcp-pf listens once it has read it to its end (its writer closed it)", path)
		})
		defer slow.Stop()
	}
	f, err := regfile.OpenStream(ctx, path)
	if err != nil {
		return nil, patherr.Wrap("--insert", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxInsert+1))
	if err != nil {
		return data, patherr.Wrap("--insert", path, err)
	}
	if len(data) > maxInsert {
		return nil, fmt.Errorf("--insert %s: larger than %d MiB; tcp-pf keeps it in memory for every connection", path, maxInsert>>20)
	}
	return data, nil
}

// insertPatience is how long reading --insert may take before tcp-pf says it waits.
const insertPatience = time.Second
