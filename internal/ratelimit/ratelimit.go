// Package ratelimit parses byte rates and holds the one rate bucket that caps a copy's
// bandwidth in every engine (Bucket). The token bucket itself is golang.org/x/time/rate;
// this package chooses its burst so that the spec's window bounds hold, and copies are
// done in steps of at most one burst.
//
// A bucket as small as one step loses the time a busy machine holds the copy up: tokens
// beyond a full bucket are dropped, and the average falls below the rate. A Bucket whose
// copy has started grows to Slack, so it catches up, while its steps stay small.
package ratelimit

import (
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strings"

	"golang.org/x/time/rate"
)

// suffixes maps the accepted suffixes, in lower case, to their multipliers: powers of
// 1024, as pv's -L takes them ("k" is 1024 there too, never 1000).
var suffixes = map[string]int64{
	"":  1,
	"k": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tib": 1 << 40,
}

// number is a rate as typed: digits, an optional decimal fraction, an optional suffix.
var number = regexp.MustCompile(`^([0-9]+)(?:\.([0-9]+))?([A-Za-z]*)$`)

// Parse reads a rate in bytes per second: a positive decimal number, fractions allowed
// ("1.5"), optionally followed by K/KiB, M/MiB, G/GiB or T/TiB in either case (powers of
// 1024: "1.5M" is 1572864). The value is computed exactly and rounded down to a whole
// byte. Zero, a rate below one byte per second, negative numbers, exponents, unknown
// suffixes (SI "KB" included) and values that overflow int64 are errors.
func Parse(s string) (int64, error) {
	m := number.FindStringSubmatch(s)
	var mult int64
	if m != nil {
		mult = suffixes[strings.ToLower(m[3])]
	}
	if mult == 0 {
		return 0, fmt.Errorf("rate %q: want a positive number of bytes per second (fractions allowed), optionally with K, M, G or T (KiB, MiB, GiB, TiB: powers of 1024, either case)", s)
	}
	// (whole.frac) x mult, exactly: (whole x 10^len(frac) + frac) x mult / 10^len(frac).
	v, _ := new(big.Int).SetString(m[1]+m[2], 10)
	v.Mul(v, big.NewInt(mult))
	v.Quo(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(m[2]))), nil))
	switch {
	case !v.IsInt64():
		return 0, fmt.Errorf("rate %q: too large", s)
	case v.Sign() == 0 && strings.Trim(m[1]+m[2], "0") != "":
		return 0, fmt.Errorf("rate %q: less than 1 byte per second", s)
	case v.Sign() == 0:
		return 0, fmt.Errorf("rate %q: must be more than zero", s)
	}
	return v.Int64(), nil
}

// Burst returns the bucket size used for a rate: 1/64 of a second's worth of bytes, at least
// 4 KiB (or the whole rate when that is smaller) and at most 16 MiB. A full bucket plus one
// second of refill stays under 1.05 x rate + 64 KiB, and any 100 ms window carries at most
// about 1.16 x its share. A copy moves one burst per step: the cap keeps steps large enough
// that a limit above the link's speed costs nothing (each step is a system call of its own).
func Burst(bytesPerSecond int64) int {
	b := bytesPerSecond / 64
	if floor := min(bytesPerSecond, 4<<10); b < floor {
		b = floor
	}
	return int(min(b, 16<<20))
}

// New returns a limiter for bytesPerSecond with the burst chosen by Burst, or nil when
// bytesPerSecond is zero (unlimited). Each direction of each connection gets its own.
func New(bytesPerSecond int64) *rate.Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSecond), Burst(bytesPerSecond))
}

// Slack returns how many bytes a widened bucket holds (see Bucket): 1/32 of a second's worth
// plus 32 KiB, and never less than Burst. Any window of w seconds then carries at most
// Slack + w x rate bytes: for one second, 1.032 x rate + 32 KiB, within the spec's
// 1.05 x rate + 64 KiB with room for the network's jitter. A copy held up for up to
// Slack/rate seconds (31 ms plus 32 KiB's worth) loses nothing of its average.
func Slack(bytesPerSecond int64) int {
	s := bytesPerSecond/32 + 32<<10
	if s < 0 { // overflow: no rate is that high
		s = math.MaxInt64
	}
	return int(max(s, int64(Burst(bytesPerSecond))))
}
