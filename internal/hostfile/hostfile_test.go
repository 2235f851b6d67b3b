package hostfile

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		field string
		host  string
		port  int
		bad   string // substring of the error, "" when valid
	}{
		{field: "host", host: "host"},
		{field: "a.example.org", host: "a.example.org"},
		{field: "a.example.org.", host: "a.example.org."},
		{field: "under_score-1.example", host: "under_score-1.example"},
		{field: "192.0.2.1", host: "192.0.2.1"},
		{field: "::1", host: "::1"},
		{field: "2001:db8::1", host: "2001:db8::1"},
		{field: "::ffff:192.0.2.1", host: "::ffff:192.0.2.1"},
		{field: "fe80::1%eth0", host: "fe80::1%eth0"},
		{field: "host:8080", host: "host", port: 8080},
		{field: "192.0.2.1:1", host: "192.0.2.1", port: 1},
		{field: "h:65535", host: "h", port: 65535},
		{field: "[2001:db8::1]:22", host: "2001:db8::1", port: 22},
		{field: "[::1]:65535", host: "::1", port: 65535},

		{field: "", bad: "empty"},
		{field: "host:0", bad: "out of range"},
		{field: "host:65536", bad: "out of range"},
		{field: "host:99999999999999999999", bad: "out of range"},
		{field: "host:", bad: "not a decimal number"},
		{field: "host:ssh", bad: "not a decimal number"},
		{field: "host:+22", bad: "not a decimal number"},
		{field: "host:-1", bad: "not a decimal number"},
		{field: ":22", bad: "missing host"},
		{field: "[::1]", bad: "followed by :PORT"},
		{field: "[::1]22", bad: "followed by :PORT"},
		{field: "[::1]:", bad: "not a decimal number"},
		{field: "[::1]:0", bad: "out of range"},
		{field: "[::1", bad: "followed by :PORT"},
		{field: "[192.0.2.1]:22", bad: "IPv6"},
		{field: "[host]:22", bad: "IPv6"},
		{field: "2001:db8::1:22:33:44:55:66", bad: "IPv6"},
		{field: "a:b:c", bad: "IPv6"},
		{field: "::1]:22", bad: "IPv6"},
		{field: "192.0.2.300", bad: "IPv4"},
		{field: "1.2.3", bad: "IPv4"},
		{field: "10", bad: "IPv4"},
		{field: "-host", bad: "'-'"},
		{field: "host-", bad: "'-'"},
		{field: "a..b", bad: "host name"},
		{field: ".", bad: "host name"},
		{field: "ho/st", bad: "character"},
		{field: "hö", bad: "character"},
		{field: "host#1", bad: "character"},
		{field: strings.Repeat("a", 64) + ".example", bad: "host name"},
		{field: strings.Repeat("a.", 127) + "ab", bad: "host name"},
	}
	for _, tt := range tests {
		host, port, err := ParseHost(tt.field)
		if tt.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tt.bad) {
				t.Errorf("ParseHost(%q) = %q, %d, %v; want error containing %q", tt.field, host, port, err, tt.bad)
			}
			continue
		}
		if err != nil || host != tt.host || port != tt.port {
			t.Errorf("ParseHost(%q) = %q, %d, %v; want %q, %d", tt.field, host, port, err, tt.host, tt.port)
		}
	}
}

func TestParseLines(t *testing.T) {
	type want struct {
		entries []Entry
		warns   []string // substrings of the warnings, in order
	}
	tests := []struct {
		name string
		in   string
		want want
	}{
		{"empty", "", want{}},
		{"name", "host 5\n", want{entries: []Entry{{Name: "host", Host: "host", Bytes: 5, Line: 1}}}},
		{"v4", "192.0.2.1 7\n", want{entries: []Entry{{Name: "192.0.2.1", Host: "192.0.2.1", Bytes: 7, Line: 1}}}},
		{"bare v6", "2001:db8::1 9\n", want{entries: []Entry{{Name: "2001:db8::1", Host: "2001:db8::1", Bytes: 9, Line: 1}}}},
		{"host:port", "host:8080 1\n", want{entries: []Entry{{Name: "host:8080", Host: "host", Port: 8080, Bytes: 1, Line: 1}}}},
		{"[v6]:port", "[2001:db8::1]:22 3\n", want{entries: []Entry{{Name: "[2001:db8::1]:22", Host: "2001:db8::1", Port: 22, Bytes: 3, Line: 1}}}},
		{"missing count", "host\n", want{entries: []Entry{{Name: "host", Host: "host", Line: 1}}}},
		{"missing count, trailing blanks", "host \t \n", want{entries: []Entry{{Name: "host", Host: "host", Line: 1}}}},
		{"tabs and spaces", "\t host \t 12 \t\n", want{entries: []Entry{{Name: "host", Host: "host", Bytes: 12, Line: 1}}}},
		{"crlf", "a 1\r\nb 2\r\n", want{entries: []Entry{
			{Name: "a", Host: "a", Bytes: 1, Line: 1}, {Name: "b", Host: "b", Bytes: 2, Line: 2}}}},
		{"no final newline", "a 1\nb 2", want{entries: []Entry{
			{Name: "a", Host: "a", Bytes: 1, Line: 1}, {Name: "b", Host: "b", Bytes: 2, Line: 2}}}},
		{"max count", "h 18446744073709551615\n", want{entries: []Entry{{Name: "h", Host: "h", Bytes: math.MaxUint64, Line: 1}}}},
		{"leading zeros", "h 007\n", want{entries: []Entry{{Name: "h", Host: "h", Bytes: 7, Line: 1}}}},
		{"comments and blanks", "# hosts for the pool, a b c\n\n   \n  # indented 1 2 3\n#\nh 1\n", want{entries: []Entry{{Name: "h", Host: "h", Bytes: 1, Line: 6}}}},
		{"comment glued to text", "#h 1\n", want{}},

		{"three fields", "h 1 2\n", want{warns: []string{"f:1: malformed entry: more than two fields"}}},
		{"trailing comment", "h 1 # note\n", want{warns: []string{"f:1: malformed entry: more than two fields"}}},
		{"overflow", "h 18446744073709551616\n", want{warns: []string{`f:1: malformed entry: count "18446744073709551616" is not`}}},
		{"negative", "h -1\n", want{warns: []string{`f:1: malformed entry: count "-1"`}}},
		{"plus sign", "h +1\n", want{warns: []string{`count "+1"`}}},
		{"not a number", "h 1k\n", want{warns: []string{`count "1k"`}}},
		{"hex", "h 0x10\n", want{warns: []string{`count "0x10"`}}},
		{"underscore", "h 1_000\n", want{warns: []string{`count "1_000"`}}},
		{"bad port", "h:0 1\n", want{warns: []string{`f:1: malformed entry: host "h:0": port 0 is out of range`}}},
		{"port too big", "h:70000 1\n", want{warns: []string{"out of range"}}},
		{"bracket without port", "[::1] 1\n", want{warns: []string{`host "[::1]"`}}},
		{"v6 with port unbracketed", "::1:22:x 1\n", want{warns: []string{"IPv6"}}},
		{"stray CR inside", "h 1\r\r\n", want{warns: []string{`count "1\r"`}}},
		{"line numbers", "# c\na 1\nbad 1 2\n\nb x\nc 3\n", want{
			entries: []Entry{{Name: "a", Host: "a", Bytes: 1, Line: 2}, {Name: "c", Host: "c", Bytes: 3, Line: 6}},
			warns:   []string{"f:3: malformed entry", "f:5: malformed entry"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, warns := Parse("f", []byte(tt.in))
			got := f.Entries()
			if len(got) != len(tt.want.entries) {
				t.Fatalf("entries = %+v, want %+v", got, tt.want.entries)
			}
			for i := range got {
				if got[i] != tt.want.entries[i] {
					t.Errorf("entry %d = %+v, want %+v", i, got[i], tt.want.entries[i])
				}
			}
			if len(warns) != len(tt.want.warns) {
				t.Fatalf("warnings = %q, want %d matching %q", warns, len(tt.want.warns), tt.want.warns)
			}
			for i, w := range warns {
				if !strings.Contains(w.Error(), tt.want.warns[i]) {
					t.Errorf("warning %d = %q, want it to contain %q", i, w, tt.want.warns[i])
				}
				var me *MalformedError
				if !errors.As(w, &me) {
					t.Errorf("warning %d is %T, want *MalformedError", i, w)
				}
			}
			if out := string(f.Format()); out != tt.in {
				t.Errorf("Format() = %q, want %q", out, tt.in)
			}
		})
	}
}

func names(es []Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Name)
	}
	return strings.Join(s, " ")
}

// TestParseWarningsBounded: a file of malformed lines (a log moved over a host file) draws
// MaxWarnings warnings naming their lines and one that counts the rest; every line is
// still kept for the write-back.
func TestParseWarningsBounded(t *testing.T) {
	var text strings.Builder
	text.WriteString("a 1\n")
	for i := range 1000 {
		fmt.Fprintf(&text, "Dec  1 sshd[%d]: Connection closed\n", i)
	}
	f, warns := Parse("log", []byte(text.String()))
	if len(warns) != MaxWarnings+1 {
		t.Fatalf("%d warnings, want %d", len(warns), MaxWarnings+1)
	}
	if got, want := warns[0].Error(), "log:2: malformed entry: more than two fields"; got != want {
		t.Errorf("first warning %q, want %q", got, want)
	}
	if got, want := warns[MaxWarnings].Error(), "log: 990 more malformed lines"; got != want {
		t.Errorf("last warning %q, want %q", got, want)
	}
	if got := string(f.Format()); got != text.String() {
		t.Errorf("Format changed the text")
	}
	if _, warns := Parse("x", []byte("a b c\n")); len(warns) != 1 {
		t.Errorf("one malformed line: %d warnings, want 1", len(warns))
	}
}

func TestLeast(t *testing.T) {
	f, _ := Parse("f", []byte("# pool\nc 30\na 10\nbad x\nb 10\nd\ne 18446744073709551615\nf 0\n"))
	if got, want := names(f.Least()), "d f a b c e"; got != want {
		t.Errorf("Least() = %s, want %s", got, want)
	}
	if got, want := names(f.Entries()), "c a b d e f"; got != want {
		t.Errorf("Entries() = %s, want %s", got, want)
	}
	// Entries returns copies.
	es := f.Entries()
	es[0].Bytes = 1
	if f.Entries()[0].Bytes != 30 {
		t.Error("changing a returned Entry changed the File")
	}
	if es := (&File{}).Least(); len(es) != 0 {
		t.Errorf("Least of an empty file = %v", es)
	}
}

func TestEdits(t *testing.T) {
	tests := []struct {
		name string
		in   string
		edit func(*File)
		out  string
	}{
		{"add existing", "# c\na 1\nb 2\n", func(f *File) { f.Add("b", 5) }, "# c\na 1\nb 7\n"},
		{"add first match only", "a 1\na 2\n", func(f *File) { f.Add("a", 1) }, "a 2\na 2\n"},
		{"add keeps separator and trailing blanks", "\t a\t\t 1  \n", func(f *File) { f.Add("a", 10) }, "\t a\t\t 11  \n"},
		{"add to missing count", "a\n", func(f *File) { f.Add("a", 3) }, "a 3\n"},
		{"add to missing count with blanks", "  a \t\n", func(f *File) { f.Add("a", 3) }, "  a 3\n"},
		{"add zero leaves line", "a 007\n", func(f *File) { f.Add("a", 0) }, "a 007\n"},
		{"set same value leaves line", "a 007\nb\n", func(f *File) { f.Set("a", 7); f.Set("b", 0) }, "a 007\nb\n"},
		{"add saturates", "a 18446744073709551610\n", func(f *File) { f.Add("a", 100) }, "a 18446744073709551615\n"},
		{"add max to max", "a 18446744073709551615\n", func(f *File) { f.Add("a", math.MaxUint64) }, "a 18446744073709551615\n"},
		{"add appends", "a 1\n", func(f *File) { f.Add("b", 2) }, "a 1\nb 2\n"},
		{"append to empty", "", func(f *File) { f.Add("b", 2) }, "b 2\n"},
		{"append after missing newline", "a 1", func(f *File) { f.Add("b", 2) }, "a 1\nb 2\n"},
		{"append keeps crlf", "a 1\r\nb 1", func(f *File) { f.Set("c", 2) }, "a 1\r\nb 1\r\nc 2\r\n"},
		{"append after bare CR", "a 1\r", func(f *File) { f.Set("c", 2) }, "a 1\nc 2\n"},
		{"crlf rewrite", "a 1\r\nb 2\r\n", func(f *File) { f.Add("a", 1) }, "a 2\r\nb 2\r\n"},
		{"no final newline rewrite", "a 1\nb 2", func(f *File) { f.Add("b", 1) }, "a 1\nb 3"},
		{"malformed name is not matched", "a 1 2\n", func(f *File) { f.Add("a", 1) }, "a 1 2\na 1\n"},
		{"set", "a 1\nb 2\n", func(f *File) { f.Set("a", 0) }, "a 0\nb 2\n"},
		{"v6 names", "::1 1\n[::1]:22 1\n", func(f *File) { f.Add("[::1]:22", 1) }, "::1 1\n[::1]:22 2\n"},
		{"remove", "# c\na 1\n\nb 2\nc 3", func(f *File) { f.Remove("b") }, "# c\na 1\n\nc 3"},
		{"remove first of two", "a 1\na 2\n", func(f *File) { f.Remove("a") }, "a 2\n"},
		{"remove last without newline", "a 1\nb 2", func(f *File) { f.Remove("b") }, "a 1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := Parse("f", []byte(tt.in))
			tt.edit(f)
			if got := string(f.Format()); got != tt.out {
				t.Errorf("got %q, want %q", got, tt.out)
			}
			if f.Changed() != (tt.in != tt.out) {
				t.Errorf("Changed() = %v for %q -> %q", f.Changed(), tt.in, tt.out)
			}
		})
	}
}

func TestEditEntriesAndLines(t *testing.T) {
	f, _ := Parse("f", []byte("# c\na 1\nb 2\nc 3\n"))
	if f.Remove("zz") {
		t.Error("Remove of an absent name returned true")
	}
	if !f.Remove("a") {
		t.Fatal("Remove(a) returned false")
	}
	f.Add("d", 1)
	es := f.Entries()
	want := []Entry{
		{Name: "b", Host: "b", Bytes: 2, Line: 2},
		{Name: "c", Host: "c", Bytes: 3, Line: 3},
		{Name: "d", Host: "d", Bytes: 1, Line: 4},
	}
	if len(es) != len(want) {
		t.Fatalf("Entries() = %+v", es)
	}
	for i := range es {
		if es[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, es[i], want[i])
		}
	}
	if got := names(f.Least()); got != "d b c" {
		t.Errorf("Least() = %s", got)
	}
	f.Add("d:9", 1)
	if e := f.Entries()[3]; e.Host != "d" || e.Port != 9 {
		t.Errorf("appended entry = %+v", e)
	}
}

func TestSaturatingAdd(t *testing.T) {
	tests := []struct{ a, b, want uint64 }{
		{0, 0, 0},
		{1, 2, 3},
		{math.MaxUint64 - 1, 1, math.MaxUint64},
		{math.MaxUint64 - 1, 2, math.MaxUint64},
		{math.MaxUint64, math.MaxUint64, math.MaxUint64},
		{1, math.MaxUint64, math.MaxUint64},
	}
	for _, tt := range tests {
		if got := SaturatingAdd(tt.a, tt.b); got != tt.want {
			t.Errorf("SaturatingAdd(%d, %d) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
