package connlog

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// The formatting of lines by appending to a byte slice: no fmt, no time.Format, nothing
// allocated once the slice has room. A line is formatted by a Logger under its lock into
// its own buffer, which is reused from line to line.

// stampLen is the length of a timestamp: 2026-11-26T05:39:10.123Z.
const stampLen = len("2006-01-02T15:04:05.000Z")

// stampCache keeps the text of the last millisecond stamped: the lines of one event-loop
// round, which share its time, cost one copy each.
type stampCache struct {
	ms   int64
	ok   bool
	text [stampLen]byte
}

// append appends t in UTC to the millisecond, as time.Format("2006-01-02T15:04:05.000Z")
// would (the milliseconds truncated, not rounded).
func (c *stampCache) append(b []byte, t time.Time) []byte {
	if ms := t.UnixMilli(); !c.ok || ms != c.ms {
		c.ms, c.ok = ms, true
		c.fill(t.UTC())
	}
	return append(b, c.text[:]...)
}

func (c *stampCache) fill(t time.Time) {
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	b := c.text[:0]
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, minute, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond()/1e6, 3)
	_ = append(b, 'Z')
}

// appendDigits appends v (0 <= v < 10^width) in width decimal digits, zero-padded.
func appendDigits(b []byte, v, width int) []byte {
	var d [4]byte
	for i := width - 1; i >= 0; i-- {
		d[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, d[:width]...)
}

// appendQuote appends s quoted as strconv.AppendQuote (and fmt's %q) does, without its
// rune-by-rune walk for the common case of printable ASCII with nothing to escape.
func appendQuote(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return strconv.AppendQuote(b, s)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}

const hex = "0123456789abcdef"

// appendJSONString appends s as a JSON string: quoted, with '"', '\\' and the control
// characters escaped, and every byte that is not valid UTF-8 replaced by U+FFFD, as
// encoding/json does, so that any name or error text gives valid JSON.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' { // valid JSON, but not in JavaScript strings
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// The fields of a JSON line, each appended with the comma before it (the line starts with
// its "time" field).

func jsonKey(b []byte, k string) []byte {
	b = append(append(b, ',', '"'), k...)
	return append(b, '"', ':')
}

func jsonStr(b []byte, k, v string) []byte { return appendJSONString(jsonKey(b, k), v) }

func jsonUint(b []byte, k string, v uint64) []byte {
	return strconv.AppendUint(jsonKey(b, k), v, 10)
}

// jsonFloat appends v with prec decimals; JSON has no infinities or NaN: they are 0.
func jsonFloat(b []byte, k string, v float64, prec int) []byte {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		v = 0
	}
	return strconv.AppendFloat(jsonKey(b, k), v, 'f', prec, 64)
}
