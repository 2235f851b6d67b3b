// Package hostfile reads, edits and atomically rewrites host files: text files of
// "HOST BYTES" lines from which the tools pick the host with the fewest bytes and to which
// they add the bytes they move.
//
// A File keeps every line of the text it was parsed from. Lines that an edit does not touch
// (comments, blank lines, malformed lines, entries whose count did not change) are written
// back byte for byte, line endings included, so Parse(x).Format() reproduces x exactly.
package hostfile

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Entry is one usable line of a host file.
type Entry struct {
	Name  string // the HOST field exactly as written: "host", "192.0.2.1", "::1", "host:8080", "[2001:db8::1]:22"
	Host  string // host part without brackets or port
	Port  int    // the entry's own port, 0 when it names none
	Bytes uint64
	Line  int // 1-based line number in the file
}

// MalformedError describes a line that is not a usable entry. Parse returns one for every
// such line; the line itself stays in the file untouched.
type MalformedError struct {
	File   string // the name given to Parse
	Line   int    // 1-based
	Reason string
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("%s:%d: malformed entry: %s", e.File, e.Line, e.Reason)
}

type lineKind uint8

const (
	kindBlank lineKind = iota
	kindComment
	kindMalformed
	kindEntry
)

// line is one physical line. text excludes the line ending, which is kept in eol:
// "\n", "\r\n", or "" for a last line without one ("\r" when the file ends in a bare CR).
type line struct {
	kind lineKind
	text string
	eol  string

	// For entries only. An entry line is pre + count + post, where pre is the leading
	// blanks, the HOST field and the separator, and post the trailing blanks. When the
	// line has no count field, hasCount is false and pre is the leading blanks and HOST.
	pre, post string
	hasCount  bool
	name      string
	host      string
	port      int
	bytes     uint64
}

// File is a parsed host file. Every line is kept; edits change only the lines they touch.
// A File is not safe for concurrent use.
type File struct {
	name     string
	lines    []line
	warnings []error
	changed  bool
}

// isBlank reports whether c separates fields: a space or a tab.
func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// MaxWarnings is how many malformed lines Parse reports one by one; the rest are counted
// in one more warning. A log file moved over a host file by mistake has a malformed line
// for every line it has, and a warning each would flood stderr (and a tool's memory) at
// every read.
const MaxWarnings = 10

// MoreMalformedError is Parse's last warning when a file has more than MaxWarnings
// malformed lines: how many more there are.
type MoreMalformedError struct {
	File  string // the name given to Parse
	Lines int    // malformed lines beyond the first MaxWarnings
}

func (e *MoreMalformedError) Error() string {
	return fmt.Sprintf("%s: %d more malformed lines", e.File, e.Lines)
}

// Parse reads a host file's text. It never fails: every line that is neither blank, a
// comment nor a usable entry is kept as it is and reported in the returned warnings, one
// *MalformedError per line ("name:LINE: malformed entry: ...") for the first MaxWarnings
// such lines, then one *MoreMalformedError that counts the rest. name is used in warnings
// only.
func Parse(name string, data []byte) (*File, []error) {
	f := &File{name: name}
	more := 0
	s := string(data)
	for len(s) > 0 {
		var text, eol string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			text, eol, s = s[:i], "\n", s[i+1:]
		} else {
			text, s = s, ""
		}
		if strings.HasSuffix(text, "\r") {
			text = text[:len(text)-1]
			eol = "\r" + eol
		}
		l, reason := parseLine(text, eol)
		switch {
		case l.kind != kindMalformed:
		case len(f.warnings) < MaxWarnings:
			f.warnings = append(f.warnings, &MalformedError{File: name, Line: len(f.lines) + 1, Reason: reason})
		default:
			more++
		}
		f.lines = append(f.lines, l)
	}
	if more > 0 {
		f.warnings = append(f.warnings, &MoreMalformedError{File: name, Lines: more})
	}
	return f, slices.Clone(f.warnings)
}

// parseLine classifies one line (without its ending) and, for a malformed one, says why.
func parseLine(text, eol string) (line, string) {
	l := line{kind: kindMalformed, text: text, eol: eol}
	if t := strings.TrimLeft(text, " \t"); t == "" {
		l.kind = kindBlank
		return l, ""
	} else if t[0] == '#' {
		l.kind = kindComment
		return l, ""
	}
	var spans [][2]int // start, end of each field
	for i := 0; i < len(text); {
		if isBlank(text[i]) {
			i++
			continue
		}
		j := i
		for j < len(text) && !isBlank(text[j]) {
			j++
		}
		spans = append(spans, [2]int{i, j})
		if len(spans) > 2 {
			return l, "more than two fields"
		}
		i = j
	}
	l.name = text[spans[0][0]:spans[0][1]]
	host, port, err := ParseHost(l.name)
	if err != nil {
		return l, err.Error()
	}
	l.host, l.port = host, port
	if len(spans) == 2 {
		c := text[spans[1][0]:spans[1][1]]
		n, err := strconv.ParseUint(c, 10, 64)
		if err != nil {
			return l, fmt.Sprintf("count %q is not an unsigned 64-bit decimal number", c)
		}
		l.bytes = n
		l.hasCount = true
		l.pre, l.post = text[:spans[1][0]], text[spans[1][1]:]
	} else {
		l.pre = text[:spans[0][1]]
	}
	l.kind = kindEntry
	return l, ""
}

// Warnings returns the warnings Parse gave when the file was read. Their line numbers are
// those of the file as read, before any edit.
func (f *File) Warnings() []error { return slices.Clone(f.warnings) }

// Changed reports whether an edit changed the file's text since it was parsed.
func (f *File) Changed() bool { return f.changed }

func (l *line) entry(lineNo int) Entry {
	return Entry{Name: l.name, Host: l.host, Port: l.port, Bytes: l.bytes, Line: lineNo}
}

// Entries returns the usable entries in file order.
func (f *File) Entries() []Entry {
	var es []Entry
	for i := range f.lines {
		if f.lines[i].kind == kindEntry {
			es = append(es, f.lines[i].entry(i+1))
		}
	}
	return es
}

// Least returns the usable entries sorted by Bytes, fewest first; entries with equal counts
// keep their file order.
func (f *File) Least() []Entry {
	es := f.Entries()
	slices.SortStableFunc(es, func(a, b Entry) int {
		switch {
		case a.Bytes < b.Bytes:
			return -1
		case a.Bytes > b.Bytes:
			return 1
		}
		return 0
	})
	return es
}

// find returns the index of the first entry line named name, or -1.
func (f *File) find(name string) int {
	for i := range f.lines {
		if f.lines[i].kind == kindEntry && f.lines[i].name == name {
			return i
		}
	}
	return -1
}

// SaturatingAdd returns a+b, or 2^64-1 if the sum does not fit in a uint64.
func SaturatingAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

// Add adds n to the count of the first entry named name (saturating at 2^64-1), or appends
// the line "name n" if there is none. name should be a valid HOST field (see ParseHost);
// an appended invalid name would be a malformed line when the file is read again.
func (f *File) Add(name string, n uint64) {
	if i := f.find(name); i >= 0 {
		f.setCount(i, SaturatingAdd(f.lines[i].bytes, n))
		return
	}
	f.appendEntry(name, n)
}

// Set sets the count of the first entry named name to n, or appends the line "name n" if
// there is none.
func (f *File) Set(name string, n uint64) {
	if i := f.find(name); i >= 0 {
		f.setCount(i, n)
		return
	}
	f.appendEntry(name, n)
}

// Remove removes the line of the first entry named name and reports whether there was one.
func (f *File) Remove(name string) bool {
	i := f.find(name)
	if i < 0 {
		return false
	}
	f.lines = slices.Delete(f.lines, i, i+1)
	f.changed = true
	return true
}

// setCount rewrites line i with count n, keeping its leading blanks, separator and trailing
// blanks. A count equal to the current one leaves the line untouched, even if it was
// written differently ("007", or missing for 0).
func (f *File) setCount(i int, n uint64) {
	l := &f.lines[i]
	if l.bytes == n {
		return
	}
	c := strconv.FormatUint(n, 10)
	if !l.hasCount {
		l.pre += " "
		l.post = ""
		l.hasCount = true
	}
	l.text = l.pre + c + l.post
	l.bytes = n
	f.changed = true
}

// appendEntry adds the line "name n" at the end, with the file's line ending.
func (f *File) appendEntry(name string, n uint64) {
	eol := f.lineEnding()
	if k := len(f.lines); k > 0 && f.lines[k-1].eol != "\n" && f.lines[k-1].eol != "\r\n" {
		f.lines[k-1].eol = eol
	}
	// Parsed like any other line, so an invalid name is what it will be when read again.
	l, _ := parseLine(name+" "+strconv.FormatUint(n, 10), eol)
	f.lines = append(f.lines, l)
	f.changed = true
}

// lineEnding returns the ending of the file's last complete line, "\n" if it has none.
func (f *File) lineEnding() string {
	for i := len(f.lines) - 1; i >= 0; i-- {
		if e := f.lines[i].eol; e == "\n" || e == "\r\n" {
			return e
		}
	}
	return "\n"
}

// Format returns the file's text.
func (f *File) Format() []byte {
	n := 0
	for i := range f.lines {
		n += len(f.lines[i].text) + len(f.lines[i].eol)
	}
	b := make([]byte, 0, n)
	for i := range f.lines {
		b = append(b, f.lines[i].text...)
		b = append(b, f.lines[i].eol...)
	}
	return b
}
