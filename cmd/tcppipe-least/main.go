// Command tcppipe-least reads and edits host files from shell scripts: it names the hosts
// with the fewest bytes and adds, sets or removes counts. Run it with --help for usage.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"shd-tcp-tools/internal/cli"
	"shd-tcp-tools/internal/hostfile"
	"shd-tcp-tools/internal/least"
)

const tool = "tcppipe-least"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs tcppipe-least with args (without the program name) and returns its exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parse(args, stdout)
	if err == nil {
		ctx := context.Background()
		if cfg.Mode != least.ModeLeast && cfg.Mode != least.ModeList {
			// SIGINT, SIGTERM or SIGHUP ends an edit's wait for a lock that another
			// process holds. (The reading forms take no lock.)
			var stop context.CancelFunc
			ctx, stop = cli.SignalContext(ctx)
			defer stop()
		}
		waiting := func(lock string) {
			fmt.Fprintf(stderr, "%s: waiting for the lock on %s: another process holds it (SIGINT or SIGTERM gives up, changing nothing)\n", tool, lock)
		}
		var warns []error
		warns, err = least.Run(ctx, cfg, stdout, waiting)
		for _, w := range warns {
			fmt.Fprintf(stderr, "%s: %v\n", tool, w)
		}
	}
	return cli.Report(stderr, tool, err)
}

// parse reads a command line into a least.Config. It returns cli.ErrHelp after printing
// the help or the version to stdout, and a *cli.UsageError for anything wrong with args.
func parse(args []string, stdout io.Writer) (least.Config, error) {
	fs := cli.NewFlagSet(tool, help, stdout)
	number := fs.StringP("number", "n", "1", "how many hosts to print")
	list := fs.Bool("list", false, "print every entry")
	add := fs.Bool("add", false, "add BYTES to HOST")
	set := fs.Bool("set", false, "set HOST's count")
	remove := fs.Bool("remove", false, "remove HOST")
	if err := fs.Parse(args); err != nil {
		return least.Config{}, err
	}

	var cfg least.Config
	var modes []string
	for _, m := range []struct {
		on   bool
		mode least.Mode
		name string
	}{{*list, least.ModeList, "--list"}, {*add, least.ModeAdd, "--add"}, {*set, least.ModeSet, "--set"}, {*remove, least.ModeRemove, "--remove"}} {
		if m.on {
			cfg.Mode = m.mode
			modes = append(modes, m.name)
		}
	}
	if len(modes) > 1 {
		return least.Config{}, cli.Usagef("%s cannot be used together (one form at a time)", strings.Join(modes, " and "))
	}
	if fs.Changed("number") {
		if cfg.Mode != least.ModeLeast {
			return least.Config{}, cli.Usagef("-n cannot be used with %s", modes[0])
		}
	}
	n, err := strconv.Atoi(*number)
	if err != nil || n < 1 {
		return least.Config{}, cli.Usagef("-n %s: not a positive number of hosts", *number)
	}
	cfg.N = n

	pos := fs.Args()
	want := map[least.Mode]struct {
		n     int
		usage string
	}{
		least.ModeLeast:  {1, "[-n N] FILE"},
		least.ModeList:   {1, "--list FILE"},
		least.ModeAdd:    {3, "--add HOST BYTES FILE"},
		least.ModeSet:    {3, "--set HOST BYTES FILE"},
		least.ModeRemove: {2, "--remove HOST FILE"},
	}[cfg.Mode]
	if len(pos) != want.n {
		what := "missing arguments"
		if len(pos) > want.n {
			what = fmt.Sprintf("unexpected argument %q", pos[want.n])
		}
		return least.Config{}, cli.Usagef("%s: usage is %s %s (see --help)", what, tool, want.usage)
	}
	cfg.File = pos[len(pos)-1]
	if cfg.File == "" {
		return least.Config{}, cli.Usagef("empty FILE name")
	}
	if cfg.Mode == least.ModeAdd || cfg.Mode == least.ModeSet || cfg.Mode == least.ModeRemove {
		cfg.Host = pos[0]
		if _, _, err := hostfile.ParseHost(cfg.Host); err != nil {
			return least.Config{}, cli.AsUsage(err)
		}
	}
	if cfg.Mode == least.ModeAdd || cfg.Mode == least.ModeSet {
		b, err := strconv.ParseUint(pos[1], 10, 64)
		if err != nil {
			return least.Config{}, cli.Usagef("BYTES %q: not an unsigned 64-bit decimal number", pos[1])
		}
		cfg.Bytes = b
	}
	return cfg, nil
}
