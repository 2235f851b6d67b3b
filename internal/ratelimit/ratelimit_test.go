package ratelimit

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"1", 1},
		{"1024", 1024},
		{"007", 7},
		{"1K", 1 << 10},
		{"1KiB", 1 << 10},
		{"10K", 10 << 10},
		{"2M", 2 << 20},
		{"3MiB", 3 << 20},
		{"1G", 1 << 30},
		{"5GiB", 5 << 30},
		{"9223372036854775807", math.MaxInt64},
		{"8589934591G", 8589934591 << 30}, // the largest G count that fits in an int64
		{"8796093022207M", 8796093022207 << 20},
		{"9007199254740991K", 9007199254740991 << 10},
		// Lower case, as pv takes it: k is 1024 here too, never 1000.
		{"1k", 1 << 10},
		{"10m", 10 << 20},
		{"2g", 2 << 30},
		{"3kib", 3 << 10},
		{"4Mib", 4 << 20},
		{"1T", 1 << 40},
		{"2tib", 2 << 40},
		// Decimals, exact (no binary floating point) and rounded down to a whole byte.
		{"1.5M", 3 << 19},
		{"1.5m", 3 << 19},
		{"0.5K", 512},
		{"0.25GiB", 1 << 28},
		{"1.1M", 1153433}, // 1153433.6
		{"2.5", 2},
		{"1.0", 1},
		{"007.50k", 7680},
		{"7.9999999999G", 8589934591}, // 8589934591.89...
		{"8589934591.999999999G", 9223372036854775806},         // just below 2^63
		{"8388607.99999999999999999999T", 9223372036854775807}, // a thin slice below 2^63 rounds down to MaxInt64
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in, msg string
	}{
		{"", "want a positive number"},
		{"0", "must be more than zero"},
		{"0K", "must be more than zero"},
		{"000", "must be more than zero"},
		{"-5", "want a positive number"},
		{"+5", "want a positive number"},
		{"1X", "want a positive number"},
		{"1KB", "want a positive number"},
		{"1mb", "want a positive number"},
		{"1.", "want a positive number"},
		{".5M", "want a positive number"},
		{"1.2.3", "want a positive number"},
		{"1,5M", "want a positive number"},
		{"0.5", "less than 1 byte per second"},
		{"0.0001K", "less than 1 byte per second"},
		{"0.0", "must be more than zero"},
		{"8589934592.0G", "too large"},
		{"8388608T", "too large"},
		{"8388608.0000000001T", "too large"},
		{"1 K", "want a positive number"},
		{" 1", "want a positive number"},
		{"1e6", "want a positive number"},
		{"0x10", "want a positive number"},
		{"K", "want a positive number"},
		{"MiB", "want a positive number"},
		{"1KK", "want a positive number"},
		{"1MiBK", "want a positive number"},
		{"٣", "want a positive number"}, // a digit, but not an ASCII one
		{"99999999999G", "too large"},
		{"8589934592G", "too large"},
		{"8796093022208M", "too large"},
		{"9223372036854775808", "too large"},
		{"99999999999999999999999", "too large"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q) = %d, nil; want an error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), strconv.Quote(tt.in)) {
			t.Errorf("Parse(%q) error %q; want it to quote the input and say %q", tt.in, err, tt.msg)
		}
	}
}

// FuzzParse checks that Parse never panics, that what it accepts is a positive rate that
// reads back the same when written as a plain number, that a whole number with a suffix
// is a whole multiple of it, and that neither the case of the suffix nor a trailing zero
// in the fraction changes the value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"1", "1K", "1KiB", "2M", "3MiB", "4G", "5GiB", "0", "-1", "1X",
		"99999999999G", "8589934591G", "9223372036854775807", "", "K", "1.5M", "٣", "10m",
		"0.5", "1.1M", "8388607.99999999999999999999T", "1e6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("Parse(%q) = %d with error %v; want 0", s, n, err)
			}
			return
		}
		if n <= 0 {
			t.Fatalf("Parse(%q) = %d; want a positive rate", s, n)
		}
		m := number.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("Parse(%q) = %d; accepted more than a number and a suffix", s, n)
		}
		mult := suffixes[strings.ToLower(m[3])]
		if m[2] == "" && n%mult != 0 {
			t.Fatalf("Parse(%q) = %d, not a multiple of %d", s, n, mult)
		}
		plain := strconv.FormatInt(n, 10)
		if again, err := Parse(plain); err != nil || again != n {
			t.Fatalf("Parse(%q) = %d, but Parse(%q) = %d, %v", s, n, plain, again, err)
		}
		for _, same := range []string{
			m[1] + "." + m[2] + "0" + m[3],
			m[1] + "." + m[2] + "0" + strings.ToUpper(m[3]),
			m[1] + "." + m[2] + "0" + strings.ToLower(m[3]),
		} {
			if again, err := Parse(same); err != nil || again != n {
				t.Fatalf("Parse(%q) = %d, but Parse(%q) = %d, %v", s, n, same, again, err)
			}
		}
	})
}

func TestBurst(t *testing.T) {
	tests := []struct {
		rate int64
		want int
	}{
		{1, 1},
		{100, 100},
		{4096, 4096},
		{10_000, 4096},
		{64 * 4096, 4096},
		{1 << 20, 16 << 10},
		{32 << 20, 512 << 10},
		{256 << 20, 4 << 20},
		{1 << 30, 16 << 20},
		{math.MaxInt64, 16 << 20},
	}
	for _, tt := range tests {
		if got := Burst(tt.rate); got != tt.want {
			t.Errorf("Burst(%d) = %d; want %d", tt.rate, got, tt.want)
		}
	}
}

// TestBurstWindowBound checks the spec's bound for every rate: a full bucket plus one second
// of refill, the most a 1-second window can carry, stays within 1.05 x rate + 64 KiB.
func TestBurstWindowBound(t *testing.T) {
	check := func(r int64) {
		b := Burst(r)
		if b < 1 || int64(b) > r {
			t.Fatalf("Burst(%d) = %d; want 1..rate", r, b)
		}
		if most, bound := float64(r)+float64(b), 1.05*float64(r)+64<<10; most > bound {
			t.Fatalf("rate %d: burst %d lets a 1 s window carry %.0f bytes, over %.0f", r, b, most, bound)
		}
	}
	for r := int64(1); r < 1<<20; r += 97 {
		check(r)
	}
	for r := int64(1 << 20); r > 0 && r < math.MaxInt64/3; r = r*3/2 + 1 {
		check(r)
	}
	check(math.MaxInt64)
}

func TestNew(t *testing.T) {
	for _, r := range []int64{0, -1, math.MinInt64} {
		if l := New(r); l != nil {
			t.Errorf("New(%d) = %v; want nil (unlimited)", r, l)
		}
	}
	for _, r := range []int64{1, 4096, 1 << 20, 5 << 30} {
		l := New(r)
		if l == nil {
			t.Fatalf("New(%d) = nil", r)
		}
		if float64(l.Limit()) != float64(r) || l.Burst() != Burst(r) {
			t.Errorf("New(%d): limit %v burst %d; want %d, %d", r, l.Limit(), l.Burst(), r, Burst(r))
		}
	}
}

func TestSlack(t *testing.T) {
	tests := []struct {
		rate int64
		want int
	}{
		{1, 32 << 10},
		{1000, 32<<10 + 31},
		{1 << 20, 32<<10 + 32<<10},
		{32 << 20, 32<<10 + 1<<20},
		{math.MaxInt64, math.MaxInt64/32 + 32<<10},
	}
	for _, tt := range tests {
		if got := Slack(tt.rate); got != tt.want {
			t.Errorf("Slack(%d) = %d; want %d", tt.rate, got, tt.want)
		}
	}
}

// TestSlackWindowBound checks that a widened bucket keeps the spec's 1-second bound with
// room to spare (at least 1.8% of the rate plus 32 KiB), and holds at least one chunk.
func TestSlackWindowBound(t *testing.T) {
	check := func(r int64) {
		s := Slack(r)
		if s < Burst(r) {
			t.Fatalf("Slack(%d) = %d, less than a chunk, %d", r, s, Burst(r))
		}
		if most, bound := float64(r)+float64(s), 1.032*float64(r)+32<<10+1; most > bound {
			t.Fatalf("rate %d: slack %d lets a 1 s window carry %.0f bytes, over %.0f", r, s, most, bound)
		}
	}
	for r := int64(1); r < 1<<20; r += 97 {
		check(r)
	}
	for r := int64(1 << 20); r > 0 && r < math.MaxInt64/3; r = r*3/2 + 1 {
		check(r)
	}
}
