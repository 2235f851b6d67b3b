package connlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"shd-tcp-tools/internal/meter"
)

// oddNames are names and error texts with bytes a JSON writer must escape or replace.
var oddNames = []string{
	"192.0.2.9:51234",
	"[2001:db8::1]:443",
	`quote " and backslash \ and slash /`,
	`just "quotes"`,
	"new\nline, cr\r, tab\t, nul\x00, bell\x07, esc\x1b, del\x7f",
	"not UTF-8: \xff\xfe and a cut rune \xe2\x82",
	"line separators \u2028 \u2029, html <a href='x'>&amp;</a>",
	"héllo wörld ☃ 🙂",
	"",
}

// fixedClock is a Logger clock at one instant.
func fixedClock(l *Logger, t time.Time) { l.now = func() time.Time { return t } }

// oldLine is each event's text line as the fmt-based formatting before it wrote it: the
// shape that users and tests parse, which the appending formatting must keep byte for byte.
func oldLine(t time.Time, event string, id uint64, client, dest string, up, down uint64, d time.Duration, end string, err error) string {
	stamp := t.UTC().Format("2006-01-02T15:04:05.000Z")
	var msg string
	switch event {
	case "open":
		msg = fmt.Sprintf("open #%d %s -> %s", id, client, dest)
	case "close":
		msg = fmt.Sprintf("close #%d %s -> %s up=%d (%s, %s) down=%d (%s, %s) time=%.3fs end=%q",
			id, client, dest, up, meter.Size(up), meter.Rate(up, d), down, meter.Size(down), meter.Rate(down, d), d.Seconds(), end)
	case "refused":
		msg = fmt.Sprintf("refused %s: %s", client, end)
	case "failed":
		msg = fmt.Sprintf("failed #%d %s -> %s: %v", id, client, dest, err)
	}
	return fmt.Sprintf("%s %s\n", stamp, msg)
}

// The text lines are byte for byte what fmt and time.Format wrote, over random times,
// counts, durations and odd names.
func TestTextLinesAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	l := New(&b)
	base := time.Date(2026, 11, 26, 5, 39, 10, 0, time.UTC)
	for i := range 3000 {
		at := base.Add(time.Duration(rng.Int64N(int64(400 * 24 * time.Hour))))
		if i%3 == 0 {
			at = at.Truncate(time.Millisecond) // the same millisecond as the stamp before, often
		}
		fixedClock(l, at)
		id := rng.Uint64() >> rng.IntN(64)
		client, dest := oddNames[rng.IntN(len(oddNames))], oddNames[rng.IntN(len(oddNames))]
		up, down := rng.Uint64()>>rng.IntN(64), rng.Uint64()>>rng.IntN(64)
		d := time.Duration(rng.Int64N(int64(100*time.Hour))) >> rng.IntN(40)
		if i%50 == 0 {
			d = 0
		}
		end := oddNames[rng.IntN(len(oddNames))]
		var err error = errors.New(oddNames[rng.IntN(len(oddNames))])
		if i%100 == 0 {
			err = nil
		}
		for _, event := range []string{"open", "close", "refused", "failed"} {
			b.Reset()
			switch event {
			case "open":
				l.Open(id, client, dest)
			case "close":
				l.Close(id, client, dest, up, down, d, end)
			case "refused":
				l.Refused(client, end)
			case "failed":
				l.Failed(id, client, dest, err)
			}
			l.Drain()
			if want := oldLine(at, event, id, client, dest, up, down, d, end, err); b.String() != want {
				t.Fatalf("%s line\n got %q\nwant %q", event, b.String(), want)
			}
		}
	}
}

// decodeLines parses every line of out as one JSON object, failing the test on any that
// is not valid JSON.
func decodeLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for line := range strings.Lines(out) {
		if !strings.HasSuffix(line, "\n") || !json.Valid([]byte(line)) {
			t.Fatalf("not one JSON object a line: %q", line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		objs = append(objs, m)
	}
	return objs
}

// asJSON is what encoding/json makes of s: the value a reader of the JSON lines gets.
func asJSON(s string) string {
	b, _ := json.Marshal(s)
	var back string
	_ = json.Unmarshal(b, &back)
	return back
}

// Every event is one JSON object with the text line's fields under stable names, and odd
// bytes in names and error texts still give valid JSON that reads back as encoding/json
// would have written it.
func TestJSONLines(t *testing.T) {
	at := time.Date(2026, 11, 26, 5, 39, 10, 123e6, time.UTC)
	for _, odd := range oddNames {
		var b bytes.Buffer
		l := NewWith(&b, Options{Format: JSON})
		fixedClock(l, at)
		l.Open(7, odd, "127.0.0.1:22")
		l.Close(7, odd, odd, 1<<20, 2048, 2*time.Second, odd)
		l.Refused(odd, odd)
		l.Failed(8, "192.0.2.9:1", odd, errors.New(odd))
		l.Warnf("warning: %s", odd)
		l.Printf("listening on %s", odd)
		l.Drain()
		got := decodeLines(t, b.String())
		s := asJSON(odd)
		head := map[string]any{"time": "2026-11-26T05:39:10.123Z", "level": "info"}
		with := func(level string, kv ...any) map[string]any {
			m := map[string]any{"time": head["time"], "level": level}
			for i := 0; i < len(kv); i += 2 {
				m[kv[i].(string)] = kv[i+1]
			}
			return m
		}
		want := []map[string]any{
			with("info", "event", "open", "id", 7.0, "client", s, "dest", "127.0.0.1:22"),
			with("info", "event", "close", "id", 7.0, "client", s, "dest", s, "up", float64(1<<20), "up_rate", float64(1<<19),
				"down", 2048.0, "down_rate", 1024.0, "seconds", 2.0, "end", s),
			with("info", "event", "refused", "client", s, "reason", s),
			with("error", "event", "failed", "id", 8.0, "client", "192.0.2.9:1", "dest", s, "error", s),
			with("warning", "event", "message", "msg", asJSON("warning: "+odd)),
			with("info", "event", "message", "msg", asJSON("listening on "+odd)),
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("name %q:\n got %v\nwant %v", odd, got, want)
		}
	}
}

// The JSON string writer gives valid JSON for any bytes, read back as encoding/json's own.
func FuzzJSONString(f *testing.F) {
	for _, s := range oddNames {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		if !json.Valid(b) {
			t.Fatalf("%q gives invalid JSON %q", s, b)
		}
		var back string
		if err := json.Unmarshal(b, &back); err != nil || back != asJSON(s) {
			t.Fatalf("%q gives %q, read back as %q (%v), want %q", s, b, back, err, asJSON(s))
		}
	})
}

// The cached stamp is time.Format's, across milliseconds, days, years and time zones.
func TestStamp(t *testing.T) {
	var c stampCache
	rng := rand.New(rand.NewPCG(3, 4))
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	at := time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	for i := range 20000 {
		switch i % 4 {
		case 0:
			at = at.Add(time.Duration(rng.Int64N(int64(time.Hour))))
		case 1:
			at = at.Add(time.Duration(rng.Int64N(int64(time.Millisecond)))) // often the same ms
		case 2:
			at = at.In(zone)
		case 3:
			at = at.AddDate(0, 0, rng.IntN(400))
		}
		if got, want := string(c.append(nil, at)), at.UTC().Format("2006-01-02T15:04:05.000Z"); got != want {
			t.Fatalf("%v: stamp %q, want %q", at, got, want)
		}
	}
}

// A loop's Buffer formats its lines without allocating, in text and in JSON.
func TestNoAllocationsPerLine(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	refused := errors.New("connection refused")
	for _, o := range []Options{{}, {Format: JSON}, {Quiet: true}} {
		now := time.Now()
		l := NewWith(null, o).BufferAt(func() time.Time { return now })
		i := uint64(0)
		allocs := testing.AllocsPerRun(1000, func() {
			i++
			l.Open(i, "192.0.2.9:51234", "127.0.0.1:22")
			l.Close(i, "192.0.2.9:51234", "127.0.0.1:22", 1<<20, 2048, 2*time.Second, "client closed")
			l.Refused("198.51.100.7:40000", "not in the allow list")
			l.Failed(i, "[2001:db8::9]:1", "127.0.0.1:23", refused)
			if i%16 == 0 {
				l.Flush()
				now = now.Add(time.Millisecond)
			}
		})
		if allocs != 0 {
			t.Errorf("options %+v: %v allocations per four lines, want 0", o, allocs)
		}
	}
}

// A quiet Logger writes warnings and errors only; its Summary neither writes nor counts
// Info events.
func TestQuiet(t *testing.T) {
	var b bytes.Buffer
	l := NewWith(&b, Options{Quiet: true})
	fixedClock(l, time.Date(2026, 11, 26, 5, 39, 10, 0, time.UTC))
	l.Printf("listening on %s", "127.0.0.1:1")
	l.Open(1, "a", "b")
	l.Close(1, "a", "b", 1, 2, time.Second, "client closed")
	l.Refused("c", "not in the allow list")
	l.Warnf("warning: %s", "something")
	l.Failed(2, "a", "b", errors.New("connection refused"))
	s := l.Summarise(1, time.Hour)
	for range 3 {
		s.Event("refused", Info, "allow", netip.MustParsePrefix("192.0.2.0/24"), "refused x")
	}
	s.Flush()
	l.Drain()
	want := "2026-11-26T05:39:10.000Z warning: something\n2026-11-26T05:39:10.000Z failed #2 a -> b: connection refused\n"
	if b.String() != want {
		t.Errorf("quiet log:\n%s\nwant:\n%s", b.String(), want)
	}
	if l.Enabled(Info) || !l.Enabled(Warning) || !l.Enabled(Error) || New(nil).Enabled(Info) == false {
		t.Error("Enabled does not follow Quiet")
	}
	var none *Logger
	if none.Enabled(Error) {
		t.Error("a nil Logger is enabled")
	}
}

// The count of dropped lines is a JSON object too when the log is JSON.
func TestDroppedLineJSON(t *testing.T) {
	at := time.Date(2026, 11, 26, 5, 39, 10, 0, time.UTC)
	got := decodeLines(t, string(appendDropped(nil, JSON, at, 42)))
	want := []map[string]any{{"time": "2026-11-26T05:39:10.000Z", "level": "warning", "event": "dropped", "count": 42.0,
		"reason": "stderr could not take them (not read, or a write failed)"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if text := string(appendDropped(nil, Text, at, 42)); text != "2026-11-26T05:39:10.000Z dropped 42 log lines: stderr could not take them (not read, or a write failed)\n" {
		t.Errorf("text: %q", text)
	}
}

func TestParseFormat(t *testing.T) {
	for s, want := range map[string]Format{"text": Text, "json": JSON} {
		if f, err := ParseFormat(s); err != nil || f != want {
			t.Errorf("ParseFormat(%q) = %v, %v", s, f, err)
		}
	}
	if _, err := ParseFormat("JSON"); err == nil || err.Error() != `log format "JSON": want text or json` {
		t.Errorf("ParseFormat(JSON): %v", err)
	}
}
