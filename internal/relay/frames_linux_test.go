package relay

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
)

// framerOverWire is a Layered over a Wire that takes frames (a Framer) and keeps the
// payloads it was given, checking the layout of each call.
type framerOverWire struct {
	*Wire
	header, payload int
	got             bytes.Buffer
	calls, writes   int
	bad             error
}

func (f *framerOverWire) NetConn() net.Conn      { return f.Wire }
func (f *framerOverWire) CloseWrite() error      { return nil }
func (f *framerOverWire) FrameShape() (int, int) { return f.header, f.payload }

func (f *framerOverWire) Write(p []byte) (int, error) {
	f.writes++
	f.got.Write(p)
	return len(p), nil
}

func (f *framerOverWire) WriteFrames(b []byte, n int) (int, error) {
	f.calls++
	for left := n; left > 0; {
		p := min(left, f.payload)
		if len(b) < f.header+p {
			f.bad = fmt.Errorf("call %d: %d bytes left for a frame of %d payload bytes", f.calls, len(b), p)
			return n - left, f.bad
		}
		f.got.Write(b[f.header : f.header+p])
		b = b[f.header+p:]
		left -= p
	}
	if len(b) != 0 && f.bad == nil {
		f.bad = fmt.Errorf("call %d: %d bytes past the frames", f.calls, len(b))
	}
	return n, nil
}

// TestBulkCopyReadsIntoFrames: a bulk copy from a TCP connection into a Framer reads the
// socket straight into frames and hands them over whole (WriteFrames, never Write), every
// byte in order, for the tunnel's DATA frames and another shape, over IPv4 and IPv6.
func TestBulkCopyReadsIntoFrames(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		for _, shape := range []frameShape{{3, 16<<10 - 3}, {5, 1000}} {
			t.Run(fmt.Sprintf("%s/%d+%d", addr, shape.header, shape.payload), func(t *testing.T) {
				src, peer := pair(t, "tcp", addr)
				lnk, _ := pair(t, "tcp", addr)
				f := &framerOverWire{Wire: NewWire(lnk), header: shape.header, payload: shape.payload}
				data := randomBytes(t, 3<<20+12345)
				errc := make(chan error, 1)
				go sendAndHash(peer, data, errc)
				n, err := Copy(context.Background(), f, src, CopyOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				if f.bad != nil {
					t.Fatal(f.bad)
				}
				if f.writes > 0 || f.calls == 0 {
					t.Fatalf("the copy wrote %d times and handed frames over %d times, want frames only", f.writes, f.calls)
				}
				if n != int64(len(data)) || !bytes.Equal(f.got.Bytes(), data) {
					t.Fatalf("copied %d bytes (%d taken), want the %d sent, in order", n, f.got.Len(), len(data))
				}
			})
		}
	}
}
