package meter

import (
	"math"
	"testing"
	"time"
)

func TestSize(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{1024, "1.00 KiB"},
		{1536, "1.50 KiB"},
		{10 << 10, "10.00 KiB"},
		{1<<20 - 1, "1.00 MiB"}, // 1023.999 KiB rounds to the next unit, never "1024.00 KiB"
		{1<<20 - 6, "1023.99 KiB"},
		{1 << 20, "1.00 MiB"},
		{3<<20 + 1<<19, "3.50 MiB"},
		{1 << 30, "1.00 GiB"},
		{1<<30 - 1, "1.00 GiB"},
		{5 << 40, "5.00 TiB"},
		{1 << 50, "1.00 PiB"},
		{math.MaxUint64, "16.00 EiB"},
	}
	for _, tt := range tests {
		if got := Size(tt.n); got != tt.want {
			t.Errorf("Size(%d) = %q; want %q", tt.n, got, tt.want)
		}
	}
}

func TestRate(t *testing.T) {
	tests := []struct {
		n    uint64
		d    time.Duration
		want string
	}{
		{0, time.Second, "0 B/s"},
		{512, time.Second, "512 B/s"},
		{1023, time.Second, "1023 B/s"},
		{2047, 2 * time.Second, "1.00 KiB/s"}, // 1023.5 B/s would print as "1024 B/s"
		{1024, time.Second, "1.00 KiB/s"},
		{1 << 20, time.Second, "1.00 MiB/s"},
		{10 << 20, 4 * time.Second, "2.50 MiB/s"},
		{1 << 20, 500 * time.Millisecond, "2.00 MiB/s"},
		{1<<30 - 1, time.Second, "1.00 GiB/s"},
		{3 << 40, time.Second, "3.00 TiB/s"},
		{1, 0, "953.67 MiB/s"},                                    // as if over one nanosecond
		{1, -time.Second, "953.67 MiB/s"},                         // likewise
		{math.MaxUint64, time.Nanosecond, "16000000000.00 EiB/s"}, // the largest unit is kept
	}
	for _, tt := range tests {
		if got := Rate(tt.n, tt.d); got != tt.want {
			t.Errorf("Rate(%d, %v) = %q; want %q", tt.n, tt.d, got, tt.want)
		}
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "no connections", 1: "1 connection", 2: "2 connections", 1024: "1024 connections"} {
		if got := Count(n, "connection"); got != want {
			t.Errorf("Count(%d) = %q, want %q", n, got, want)
		}
	}
}
