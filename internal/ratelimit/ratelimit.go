// Package ratelimit parses byte rates and builds the token buckets that cap a copy's
// bandwidth. The bucket itself is golang.org/x/time/rate; this package chooses its burst so
// that the spec's window bounds hold, and copies are done in chunks of at most one burst.
//
// A bucket as small as one chunk loses the time a busy machine holds the copy up: tokens
// beyond a full bucket are dropped, and the average falls below the rate. Widen lets the
// bucket of a running copy grow to Slack, so it catches up, while its chunks stay small.
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

// Slack returns how many bytes a widened bucket holds (see Widen): 1/32 of a second's worth
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

// Widen raises l's bucket, made by New for bytesPerSecond, from Burst to Slack, keeping
// the tokens it holds. Call it once a copy has taken its chunk size from l.Burst() (for
// relay.Copy: from its first Progress call on): the chunks stay one Burst each, so the
// traffic stays smooth, but a copy that fell behind may now send up to Slack bytes
// back to back to catch up. A nil l is left alone.
func Widen(l *rate.Limiter, bytesPerSecond int64) {
	if l != nil {
		l.SetBurst(Slack(bytesPerSecond))
	}
}
