package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
)

// refFrames is the frame format read the plain way, for the reader to be checked against:
// the session's data, and how the input ends for a session ("fin", "rst", "error",
// "truncated" or "ended").
func refFrames(in []byte) (data []byte, end string) {
	for {
		if len(in) == 0 {
			return data, "ended"
		}
		if len(in) < frameHeader {
			return data, "truncated"
		}
		typ, n := in[0], int(binary.BigEndian.Uint16(in[1:]))
		in = in[frameHeader:]
		switch {
		case typ == frameData && n >= 1 && n <= maxFramePayload:
			if len(in) < n {
				return append(data, in...), "truncated"
			}
			data, in = append(data, in[:n]...), in[n:]
		case typ == frameFin && n == 0:
			return data, "fin"
		case typ == frameRst && n == 0:
			return data, "rst"
		default:
			return data, "error"
		}
	}
}

// flaky is a source that returns at most step bytes a read, and a timeout every few
// reads, as a TLS connection under a read deadline does.
type flaky struct {
	b     []byte
	step  int
	reads int
}

func (f *flaky) Read(p []byte) (int, error) {
	f.reads++
	if f.reads%3 == 0 {
		return 0, os.ErrDeadlineExceeded
	}
	if len(f.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), f.step)], f.b)
	f.b = f.b[n:]
	return n, nil
}

// readSession reads one session from fr with reads of size bufSize, retrying timeouts.
func readSession(fr *frameReader, bufSize int) (data []byte, end string) {
	buf := make([]byte, bufSize)
	for {
		n, err := fr.Read(buf)
		data = append(data, buf[:n]...)
		var fe *frameError
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, io.EOF):
			return data, "fin"
		case errors.Is(err, errPeerRst):
			return data, "rst"
		case errors.As(err, &fe):
			return data, "error"
		case errors.Is(err, io.ErrUnexpectedEOF):
			return data, "truncated"
		case errors.Is(err, errLinkEnded):
			return data, "ended"
		default:
			return data, "unexpected " + err.Error()
		}
	}
}

func TestFrameReader(t *testing.T) {
	big := bytes.Repeat([]byte{7}, maxFramePayload)
	var two []byte
	two = appendFrame(two, frameData, []byte("hello"))
	two = appendFrame(two, frameFin, nil)
	two = appendFrame(two, frameData, []byte("next"))
	two = appendFrame(two, frameRst, nil)
	for _, tc := range []struct {
		name string
		in   []byte
		want []string // data and end of each session, in turn
	}{
		{"two sessions", two, []string{"hello", "fin", "next", "rst"}},
		{"largest frame", appendFrame(appendFrame(nil, frameData, big), frameFin, nil), []string{string(big), "fin"}},
		{"oversize", []byte{frameData, 0x40, 0x00}, []string{"", "error"}},
		{"empty data", []byte{frameData, 0, 0}, []string{"", "error"}},
		{"unknown type", []byte{9, 0, 0}, []string{"", "error"}},
		{"fin with payload", []byte{frameFin, 0, 1, 'x'}, []string{"", "error"}},
		{"cut in a header", []byte{frameData, 0}, []string{"", "truncated"}},
		{"cut in a payload", []byte{frameData, 0, 5, 'a', 'b'}, []string{"ab", "truncated"}},
		{"ended between frames", appendFrame(nil, frameData, []byte("x")), []string{"x", "ended"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := &frameReader{r: &flaky{b: tc.in[1:], step: 2}, pre: tc.in[:1]}
			for i := 0; i < len(tc.want); i += 2 {
				data, end := readSession(fr, 3)
				if string(data) != tc.want[i] || end != tc.want[i+1] {
					t.Fatalf("session %d: %q %s, want %q %s", i/2, clipTo(string(data), 20), end, clipTo(tc.want[i], 20), tc.want[i+1])
				}
				fr.next()
			}
		})
	}
}

// FuzzFrameReader feeds arbitrary link bytes to the frame reader, in small reads broken
// by timeouts: it must never panic, never return more bytes than came in, and read
// exactly what the format says, session by session.
func FuzzFrameReader(f *testing.F) {
	f.Add(appendFrame(appendFrame(nil, frameData, []byte("hello")), frameFin, nil), uint8(1), uint8(4))
	f.Add([]byte{frameRst, 0, 0, frameData, 0xff, 0xff}, uint8(3), uint8(1))
	f.Add([]byte{frameData, 0, 2, 'a'}, uint8(7), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, step, bufSize uint8) {
		fr := &frameReader{r: &flaky{b: in, step: int(step%16) + 1}}
		rest := in
		for range 64 {
			want, wantEnd := refFrames(rest)
			got, end := readSession(fr, int(bufSize%32)+1)
			if !bytes.Equal(got, want) || end != wantEnd {
				t.Fatalf("read %d bytes, %s; the format says %d bytes, %s", len(got), end, len(want), wantEnd)
			}
			if end != "fin" && end != "rst" {
				return
			}
			// Skip what the reference read: the session's frames and its end.
			rest = skipSession(rest)
			fr.next()
		}
	})
}

// skipSession returns in after the frames of its first session, its end frame included.
func skipSession(in []byte) []byte {
	for {
		typ, n := in[0], int(binary.BigEndian.Uint16(in[1:]))
		in = in[frameHeader:]
		if typ != frameData {
			return in
		}
		in = in[n:]
	}
}

// TestRecordConnKeepsItsPlace feeds recordConn's tracker TLS records of many lengths in
// chunks of every size: at each chunk's end it stands where the records say.
func TestRecordConnKeepsItsPlace(t *testing.T) {
	var stream []byte
	var ends []int // offset after each record
	for i, n := range []int{0, 1, 17, 16384 + 256, 300, 5, 0, 4096} {
		stream = append(stream, 0x17, 3, 3, byte(n>>8), byte(n))
		stream = append(stream, bytes.Repeat([]byte{byte(i)}, n)...)
		ends = append(ends, len(stream))
	}
	// where returns, for offset off, the header bytes and body bytes left that a
	// reader at off is in.
	where := func(off int) (hdrN, left int) {
		start := 0
		for _, e := range ends {
			if off < e {
				if off-start < tlsHeader {
					return off - start, 0
				}
				return 0, e - off
			}
			start = e
		}
		return 0, 0
	}
	for step := 1; step <= 20000; step = step*3 + 1 {
		r := &recordConn{}
		for off := 0; off < len(stream); off += step {
			r.advance(stream[off:min(off+step, len(stream))])
			hdrN, left := where(min(off+step, len(stream)))
			if r.hdrN != hdrN || r.left != left {
				t.Fatalf("step %d, at %d: header %d left %d, want %d and %d", step, min(off+step, len(stream)), r.hdrN, r.left, hdrN, left)
			}
		}
	}
}
