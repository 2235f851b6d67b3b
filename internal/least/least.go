// Package least is the engine of tcppipe-least: it reads host files to name the hosts
// with the fewest bytes, and edits their counts for shell scripts, with the same locking and
// atomic replacement as the tools that account bytes in them.
package least

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"shd-tcp-tools/internal/cli"
	"shd-tcp-tools/internal/hostfile"
)

// Tool is the command's name, used in messages.
const Tool = "tcppipe-least"

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
  on stderr with its line number, ignored, and kept as it is. HOST arguments are matched
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

// Mode is what tcppipe-least does with the file.
type Mode int

// The forms of the command.
const (
	ModeLeast  Mode = iota // print the N hosts with the fewest bytes
	ModeList               // print every entry with its count
	ModeAdd                // add to a count
	ModeSet                // set a count
	ModeRemove             // remove an entry
)

// Config is a validated command line.
type Config struct {
	Mode  Mode
	N     int    // ModeLeast: how many hosts to print, at least 1
	Host  string // ModeAdd, ModeSet, ModeRemove: a valid HOST field
	Bytes uint64 // ModeAdd, ModeSet
	File  string
}

// Main runs tcppipe-least with args (without the program name) and returns its exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	cfg, err := ParseArgs(args, stdout)
	if err == nil {
		err = Run(cfg, stdout, stderr)
	}
	return cli.Report(stderr, Tool, err)
}

// ParseArgs reads a command line into a Config. It returns cli.ErrHelp after printing the
// help or the version to stdout, and a *cli.UsageError for anything wrong with args.
func ParseArgs(args []string, stdout io.Writer) (Config, error) {
	fs := cli.NewFlagSet(Tool, help, stdout)
	number := fs.StringP("number", "n", "1", "how many hosts to print")
	list := fs.Bool("list", false, "print every entry")
	add := fs.Bool("add", false, "add BYTES to HOST")
	set := fs.Bool("set", false, "set HOST's count")
	remove := fs.Bool("remove", false, "remove HOST")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}

	var cfg Config
	var modes []string
	for _, m := range []struct {
		on   bool
		mode Mode
		name string
	}{{*list, ModeList, "--list"}, {*add, ModeAdd, "--add"}, {*set, ModeSet, "--set"}, {*remove, ModeRemove, "--remove"}} {
		if m.on {
			cfg.Mode = m.mode
			modes = append(modes, m.name)
		}
	}
	if len(modes) > 1 {
		return Config{}, cli.Usagef("%s cannot be used together (one form at a time)", strings.Join(modes, " and "))
	}
	if fs.Changed("number") {
		if cfg.Mode != ModeLeast {
			return Config{}, cli.Usagef("-n cannot be used with %s", modes[0])
		}
	}
	n, err := strconv.Atoi(*number)
	if err != nil || n < 1 {
		return Config{}, cli.Usagef("-n %s: not a positive number of hosts", *number)
	}
	cfg.N = n

	pos := fs.Args()
	want := map[Mode]struct {
		n     int
		usage string
	}{
		ModeLeast:  {1, "[-n N] FILE"},
		ModeList:   {1, "--list FILE"},
		ModeAdd:    {3, "--add HOST BYTES FILE"},
		ModeSet:    {3, "--set HOST BYTES FILE"},
		ModeRemove: {2, "--remove HOST FILE"},
	}[cfg.Mode]
	if len(pos) != want.n {
		what := "missing arguments"
		if len(pos) > want.n {
			what = fmt.Sprintf("unexpected argument %q", pos[want.n])
		}
		return Config{}, cli.Usagef("%s: usage is %s %s (see --help)", what, Tool, want.usage)
	}
	cfg.File = pos[len(pos)-1]
	if cfg.File == "" {
		return Config{}, cli.Usagef("empty FILE name")
	}
	if cfg.Mode == ModeAdd || cfg.Mode == ModeSet || cfg.Mode == ModeRemove {
		cfg.Host = pos[0]
		if _, _, err := hostfile.ParseHost(cfg.Host); err != nil {
			return Config{}, cli.AsUsage(err)
		}
	}
	if cfg.Mode == ModeAdd || cfg.Mode == ModeSet {
		b, err := strconv.ParseUint(pos[1], 10, 64)
		if err != nil {
			return Config{}, cli.Usagef("BYTES %q: not an unsigned 64-bit decimal number", pos[1])
		}
		cfg.Bytes = b
	}
	return cfg, nil
}

// Run carries out cfg: results go to stdout, warnings about malformed lines to stderr.
func Run(cfg Config, stdout, stderr io.Writer) error {
	warn := func(ws []error) {
		for _, w := range ws {
			fmt.Fprintf(stderr, "%s: %v\n", Tool, w)
		}
	}
	switch cfg.Mode {
	case ModeLeast, ModeList:
		f, warns, err := hostfile.Read(cfg.File)
		if err != nil {
			return err
		}
		warn(warns)
		es := f.Least()
		if len(es) == 0 {
			return fmt.Errorf("%s: no usable entries", cfg.File)
		}
		var b strings.Builder
		if cfg.Mode == ModeList {
			for _, e := range es {
				fmt.Fprintf(&b, "%s %d\n", e.Name, e.Bytes)
			}
		} else {
			for _, e := range es[:min(cfg.N, len(es))] {
				fmt.Fprintln(&b, e.Name)
			}
		}
		if _, err := io.WriteString(stdout, b.String()); err != nil {
			return fmt.Errorf("writing the output: %w", err)
		}
		return nil
	case ModeAdd, ModeSet, ModeRemove:
		return hostfile.Update(cfg.File, cfg.Mode != ModeRemove, func(f *hostfile.File) error {
			warn(f.Warnings())
			switch cfg.Mode {
			case ModeAdd:
				f.Add(cfg.Host, cfg.Bytes)
			case ModeSet:
				f.Set(cfg.Host, cfg.Bytes)
			case ModeRemove:
				if !f.Remove(cfg.Host) {
					return fmt.Errorf("%s: no entry for %s", cfg.File, cfg.Host)
				}
			}
			return nil
		})
	}
	return fmt.Errorf("unknown mode %d", cfg.Mode)
}
