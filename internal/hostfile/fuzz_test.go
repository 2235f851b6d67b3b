package hostfile

import (
	"bytes"
	"testing"
)

// FuzzRoundTrip checks that any text survives Parse and Format byte for byte, and that
// adding to an existing entry changes that entry's count and nothing else.
func FuzzRoundTrip(f *testing.F) {
	seeds := []string{
		"",
		"\n",
		"host 5\n",
		"# comment\n\nhost 5\n192.0.2.1 7\n::1 9\nh:80 1\n[::1]:22 2\n",
		"a 1\r\nb 2\r\n",
		"a 1\nb 2",
		"a\n",
		"\t a \t 3 \t\n",
		"a 1 2\nb x\nc -1\nd 18446744073709551616\n",
		"h 18446744073709551615\n",
		"h 18446744073709551614\n",
		"h:0 1\n[::1] 2\n[::1]:x 3\n",
		"a 1\r\r\n\r\n\r",
		"a 1\r",
		"a 007\nb 000\n",
		"\x00\xff 1\n",
		"   # indented comment with words\n# a b c d\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint64(1))
		f.Add([]byte(s), uint64(1<<63))
	}
	f.Fuzz(func(t *testing.T, data []byte, n uint64) {
		file, warns := Parse("f", data)
		if out := file.Format(); !bytes.Equal(out, data) {
			t.Fatalf("Format() = %q, want %q", out, data)
		}
		es := file.Entries()
		for _, e := range es {
			if _, _, err := ParseHost(e.Name); err != nil {
				t.Fatalf("entry %+v has an invalid name: %v", e, err)
			}
		}
		if len(es) == 0 {
			return
		}
		// Add to the last entry that is the first of its name.
		target := es[len(es)-1]
		for _, e := range es {
			if e.Name == target.Name {
				target = e
				break
			}
		}
		file.Add(target.Name, n)
		out := file.Format()

		again, warns2 := Parse("f", out)
		if len(warns2) != len(warns) {
			t.Fatalf("warnings before %q, after %q", warns, warns2)
		}
		es2 := again.Entries()
		if len(es2) != len(es) {
			t.Fatalf("entries before %+v, after %+v", es, es2)
		}
		for i := range es {
			want := es[i]
			if want.Line == target.Line {
				want.Bytes = SaturatingAdd(want.Bytes, n)
			}
			if es2[i] != want {
				t.Fatalf("entry %d after Add = %+v, want %+v", i, es2[i], want)
			}
		}
		oldLines := bytes.SplitAfter(data, []byte("\n"))
		newLines := bytes.SplitAfter(out, []byte("\n"))
		if len(oldLines) != len(newLines) {
			t.Fatalf("Add changed the number of lines: %q -> %q", data, out)
		}
		for i := range oldLines {
			if i+1 != target.Line && !bytes.Equal(oldLines[i], newLines[i]) {
				t.Fatalf("line %d changed: %q -> %q", i+1, oldLines[i], newLines[i])
			}
		}
	})
}
