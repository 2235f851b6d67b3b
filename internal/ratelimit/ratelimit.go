// Package ratelimit parses byte rates and builds the token buckets that cap a copy's
// bandwidth. The bucket itself is golang.org/x/time/rate; this package chooses its burst so
// that the spec's window bounds hold, and copies are done in chunks of at most one burst.
package ratelimit

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"golang.org/x/time/rate"
)

// suffixes maps the accepted IEC suffixes to their multipliers (powers of 1024).
var suffixes = []struct {
	name string
	mult int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30},
}

// Parse reads a rate in bytes per second: a positive decimal integer, optionally followed by
// K/KiB, M/MiB or G/GiB (powers of 1024). Zero, negative numbers, fractions, unknown
// suffixes and values that overflow int64 are errors.
func Parse(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, suf := range suffixes {
		if strings.HasSuffix(s, suf.name) {
			num, mult = strings.TrimSuffix(s, suf.name), suf.mult
			break
		}
	}
	if num == "" || strings.IndexFunc(num, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, fmt.Errorf("rate %q: want a positive whole number of bytes per second, optionally with K, M or G (KiB, MiB, GiB)", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("rate %q: too large", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("rate %q: must be more than zero", s)
	}
	return n * mult, nil
}

// Burst returns the bucket size used for a rate: 1/64 of a second's worth of bytes, at least
// 4 KiB (or the whole rate when that is smaller) and at most 4 MiB. A full bucket plus one
// second of refill stays under 1.05 x rate + 64 KiB, and any 100 ms window carries at most
// about 1.16 x its share.
func Burst(bytesPerSecond int64) int {
	b := bytesPerSecond / 64
	if floor := min(bytesPerSecond, 4<<10); b < floor {
		b = floor
	}
	return int(min(b, 4<<20))
}

// New returns a limiter for bytesPerSecond with the burst chosen by Burst, or nil when
// bytesPerSecond is zero (unlimited). Each direction of each connection gets its own.
func New(bytesPerSecond int64) *rate.Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSecond), Burst(bytesPerSecond))
}
