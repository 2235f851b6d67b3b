// Command tcppipe-least reads and edits host files from shell scripts: it names the hosts
// with the fewest bytes and adds, sets or removes counts. Run it with --help for usage.
package main

import (
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

const help = `Usage:
  tcppipe-least [-n N] FILE            print the N hosts with the fewest bytes (default 1)
  tcppipe-least --list FILE            print every entry as "HOST BYTES"
  tcppipe-least --add HOST BYTES FILE  add BYTES to HOST's count
  tcppipe-least --set HOST BYTES FILE  set HOST's count to BYTES
  tcppipe-least --remove HOST FILE     delete HOST's entry

Reads and edits the host files of tcppipe and tcp-pf, for shell scripts.

Forms:
  -n, --number N  print the N entries with the fewest bytes, fewest first, one HOST a
                  line (all of them if the file has fewer). Entries with equal counts
                  keep their file order.
      --list      print every entry as "HOST BYTES", fewest first.
      --add       add BYTES to the count of HOST's entry (saturating at 2^64-1); an
                  absent HOST is appended to the file. A missing FILE is created.
      --set       set HOST's count to BYTES, appending HOST if absent. A missing FILE is
                  created.
      --remove    delete the line of HOST's entry; exit 1 if there is none.
  -h, --help      print this help and exit
  -v, --version   print the version and exit

The host file:
  One entry a line: HOST BYTES, separated by spaces or tabs. HOST is a host name, an
  IPv4 address, a bare IPv6 address (::1), or one of these with its own port:
  host:8080, 192.0.2.1:8080, [2001:db8::1]:22. BYTES is an unsigned 64-bit decimal
  count; a missing count is 0. Lines starting with # are comments; blank lines are
  allowed. A malformed line (more than two fields, a bad count or HOST) is warned about
  on stderr with its line number (the first ten; then one line counts the rest),
  ignored, and kept as it is. FILE must be a regular file (or a link to one) of at most
  16 MiB. HOST arguments are matched
  against the HOST field exactly as written, and the first matching entry is used.

Locking and safety:
  Edits take an exclusive lock on FILE.lock, a file created beside FILE and left there,
  so concurrent editors (this tool, tcppipe, tcp-pf) lose no counts. The new text is
  written to a temporary file and renamed over FILE: readers and crashes see the old or
  the new file, never a partial one. Comments, blank lines, malformed lines and the order
  of entries are kept; only the edited line changes.

Exit status:
  0 success; 1 a failure (FILE unreadable or not writable, no usable entries, HOST absent
  for --remove); 2 a usage error (nothing is read or changed).

Examples:
  # copy a backup to the least used of several mirrors, then account for it
  host=$(tcppipe-least ~/.stt/mirrors) || exit 1
  scp backup.tar "$host:" &&
      tcppipe-least --add "$host" "$(stat -c %s backup.tar)" ~/.stt/mirrors

  # the three least used hosts, and a reset of one count
  tcppipe-least -n 3 pool.txt
  tcppipe-least --set 192.0.2.7 0 pool.txt
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs tcppipe-least with args (without the program name) and returns its exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parse(args, stdout)
	if err == nil {
		var warns []error
		warns, err = least.Run(cfg, stdout)
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
