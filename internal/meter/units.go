// Package meter counts and reports bytes moved: IEC 60027-2 formatting of sizes and rates
// (B, KiB, MiB, GiB, TiB in steps of 1024) and a progress reporter that prints throughput
// while a transfer runs and a summary when it ends.
package meter

import (
	"strconv"
	"time"
)

var units = []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// Count writes n with its noun, which is given in the singular and takes an s in the
// plural: "no connections", "1 connection", "3 links".
func Count(n int, noun string) string {
	switch n {
	case 0:
		return "no " + noun + "s"
	case 1:
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// Size formats n bytes with an IEC unit: "512 B", "1.50 KiB", "3.20 GiB". A value that
// would round up to 1024.00 of one unit is written as 1.00 of the next.
func Size(n uint64) string { return string(AppendSize(nil, n)) }

// AppendSize appends Size(n) to b, allocating nothing when b has room.
func AppendSize(b []byte, n uint64) []byte {
	if n < 1024 {
		return append(strconv.AppendUint(b, n, 10), " B"...)
	}
	v, u := scale(float64(n) / 1024)
	return append(append(strconv.AppendFloat(b, v, 'f', 2, 64), ' '), u...)
}

// Rate formats the average rate of n bytes over d as "12.34 MiB/s". A zero or negative
// duration gives the rate as if d were one nanosecond, never a division by zero.
func Rate(n uint64, d time.Duration) string { return string(AppendRate(nil, n, d)) }

// AppendRate appends Rate(n, d) to b, allocating nothing when b has room.
func AppendRate(b []byte, n uint64, d time.Duration) []byte {
	bps := BytesPerSecond(n, d)
	if bps < 1023.5 { // "%.0f" would print 1024 from here on
		return append(strconv.AppendFloat(b, bps, 'f', 0, 64), " B/s"...)
	}
	v, u := scale(bps / 1024)
	return append(append(append(strconv.AppendFloat(b, v, 'f', 2, 64), ' '), u...), "/s"...)
}

// BytesPerSecond is the average rate of n bytes over d, as Rate prints it: a zero or
// negative d counts as one nanosecond.
func BytesPerSecond(n uint64, d time.Duration) float64 {
	if d <= 0 {
		d = time.Nanosecond
	}
	return float64(n) / d.Seconds()
}

// scale takes v KiB and divides it by 1024 until it prints with two decimals below 1024,
// and returns it with its unit. Rounding is accounted for: 1048575 B is 1.00 MiB, not
// 1024.00 KiB.
func scale(v float64) (float64, string) {
	i := 1
	for v >= 1023.995 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return v, units[i]
}
