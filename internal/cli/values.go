package cli

import (
	"fmt"
	"math"
	"strconv"
	"time"

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
