// Package least is the engine of tcppipe-least: it reads host files to name the hosts
// with the fewest bytes, and edits their counts for shell scripts, with the same locking and
// atomic replacement as the tools that account bytes in them. The command line is
// cmd/tcppipe-least's.
package least

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"shd-tcp-tools/internal/hostfile"
)

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

// Config is what to do: a validated command line.
type Config struct {
	Mode  Mode
	N     int    // ModeLeast: how many hosts to print, at least 1
	Host  string // ModeAdd, ModeSet, ModeRemove: a valid HOST field
	Bytes uint64 // ModeAdd, ModeSet
	File  string
}

// Run carries out cfg: results go to stdout. warnings are the file's malformed lines
// (file:line), which take no part and are kept; they come also with an error. An edit
// waits for the file's lock until ctx ends (a signal); then it returns an error that says
// so, and the file is not changed. waiting, when not nil, is called once with the lock
// file's path when an edit has waited hostfile.LockPatience for a lock that another
// process holds.
func Run(ctx context.Context, cfg Config, stdout io.Writer, waiting func(lock string)) (warnings []error, err error) {
	warn := func(ws []error) { warnings = append(warnings, ws...) }
	switch cfg.Mode {
	case ModeLeast, ModeList:
		f, warns, err := hostfile.Read(cfg.File)
		if err != nil {
			return nil, err
		}
		warn(warns)
		es := f.Least()
		if len(es) == 0 {
			return warnings, fmt.Errorf("%s: no usable entries", cfg.File)
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
			return warnings, fmt.Errorf("writing the output: %w", err)
		}
		return warnings, nil
	case ModeAdd, ModeSet, ModeRemove:
		err := hostfile.UpdateContext(ctx, cfg.File, cfg.Mode != ModeRemove, func(f *hostfile.File) error {
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
		}, waiting)
		if errors.Is(err, hostfile.ErrLocked) && ctx.Err() != nil {
			err = fmt.Errorf("interrupted by signal while waiting for the lock on %s, held by another process: %s not changed", hostfile.LockPath(cfg.File), cfg.File)
		}
		return warnings, err
	}
	return nil, fmt.Errorf("unknown mode %d", cfg.Mode)
}
