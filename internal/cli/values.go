package cli

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/ratelimit"
)

// Seconds is a flag value for a duration given in seconds, fractions allowed
// ("0.25"). Negative, NaN and infinite values are rejected; whether zero is allowed is
// up to the caller. A value too small to be a whole nanosecond ("1e-10") sets D to zero;
// String then gives the text as typed, so an error message names what the user wrote.
type Seconds struct {
	D    time.Duration
	text string // as given to Set; "" for a value never set
}

// Set implements pflag.Value.
func (s *Seconds) Set(v string) error {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%q is not a number of seconds", v)
	}
	if f < 0 {
		return fmt.Errorf("%q: seconds must not be negative", v)
	}
	if f > float64(math.MaxInt64)/float64(time.Second) {
		return fmt.Errorf("%q: too many seconds", v)
	}
	s.D, s.text = time.Duration(f*float64(time.Second)), v
	return nil
}

// String implements pflag.Value: the text given to Set, or the duration in seconds.
func (s *Seconds) String() string {
	if s.text != "" {
		return s.text
	}
	return strconv.FormatFloat(s.D.Seconds(), 'f', -1, 64)
}

// Type implements pflag.Value.
func (s *Seconds) Type() string { return "secs" }

// Rate is a flag value for bytes per second with optional IEC suffixes (see ratelimit.Parse).
// Zero means unset.
type Rate struct{ BytesPerSecond int64 }

// Set implements pflag.Value.
func (r *Rate) Set(v string) error {
	n, err := ratelimit.Parse(v)
	if err != nil {
		return err
	}
	r.BytesPerSecond = n
	return nil
}

// String implements pflag.Value.
func (r *Rate) String() string { return strconv.FormatInt(r.BytesPerSecond, 10) }

// Type implements pflag.Value.
func (r *Rate) Type() string { return "rate" }

// LogFlags holds -q/--quiet and --log-format, the log options of the tools that log
// events (tcp-pf, listentwo, connecttwo). Define them with FlagSet.LogFlags.
type LogFlags struct{ opts connlog.Options }

// LogFlags defines -q/--quiet and --log-format on f.
func (f *FlagSet) LogFlags() *LogFlags {
	l := &LogFlags{}
	f.BoolVarP(&l.opts.Quiet, "quiet", "q", false, "")
	f.Var((*logFormat)(&l.opts.Format), "log-format", "")
	return l
}

// Options returns the log options the flags gave.
func (l *LogFlags) Options() connlog.Options { return l.opts }

// logFormat is the flag value of --log-format: text or json.
type logFormat connlog.Format

// Set implements pflag.Value.
func (v *logFormat) Set(s string) error {
	f, err := connlog.ParseFormat(s)
	if err != nil {
		return errors.New("want text or json")
	}
	*v = logFormat(f)
	return nil
}

// String implements pflag.Value.
func (v *logFormat) String() string { return connlog.Format(*v).String() }

// Type implements pflag.Value.
func (v *logFormat) Type() string { return "format" }
