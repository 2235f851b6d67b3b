// Package meter counts and reports bytes moved: IEC 60027-2 formatting of sizes and rates
// (B, KiB, MiB, GiB, TiB in steps of 1024) and a progress reporter that prints throughput
// while a transfer runs and a summary when it ends.
package meter

import (
	"fmt"
	"time"
)

var units = []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// Size formats n bytes with an IEC unit: "512 B", "1.50 KiB", "3.20 GiB".
func Size(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.2f %s", v, units[i])
}

// Rate formats the average rate of n bytes over d as "12.34 MiB/s". A zero or negative
// duration gives the rate as if d were one nanosecond, never a division by zero.
func Rate(n uint64, d time.Duration) string {
	if d <= 0 {
		d = time.Nanosecond
	}
	bps := float64(n) / d.Seconds()
	if bps < 1024 {
		return fmt.Sprintf("%.0f B/s", bps)
	}
	v, i := bps, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.2f %s/s", v, units[i])
}
