// Command relayload is the load generator and backend of bench/relay.sh: a server that sinks
// or echoes, and clients that measure throughput, short connections per second, and hold
// idle connections. It talks through any TCP relay placed between them.
//
//	relayload serve  -l ADDR                      sink (first byte 'S') or echo (anything else)
//	relayload stream -c ADDR [-P N] [-t SECS]     N streams into the sink; prints MiB/s
//	relayload cps    -c ADDR [-P N] [-t SECS]     connect, 64-byte echo, close; prints conn/s, p50, p99
//	relayload idle   -c ADDR -n N                 hold N echo-checked connections until stdin closes
//
// A sink stream starts with 'S' and an 8-byte id, then its bytes, which the server splices
// into /dev/null and counts. When the client has written its last byte it asks, on a second
// connection ('Q', the id, the count it sent), and the server answers with the count once
// that many bytes have arrived. No half-close is involved, so a relay's close handling does
// not matter.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: relayload serve|stream|cps|idle [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("c", "", "address to connect to")
	listen := fs.String("l", "", "address to listen on")
	par := fs.Int("P", 1, "parallel streams or workers")
	secs := fs.Float64("t", 2, "seconds to run")
	n := fs.Int("n", 1000, "idle connections to hold")
	_ = fs.Parse(os.Args[2:])
	d := time.Duration(*secs * float64(time.Second))
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(*listen)
	case "stream":
		err = stream(*addr, *par, d)
	case "cps":
		err = cps(*addr, *par, d)
	case "idle":
		err = idle(*addr, *n)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "relayload:", err)
		os.Exit(1)
	}
}

// chunk is the unit a stream is written and counted in.
const chunk = 1 << 20

// sinks maps a stream's id to the bytes it has received.
var sinks sync.Map // uint64 -> *atomic.Int64

func serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) {
				time.Sleep(10 * time.Millisecond) // out of descriptors: let some close
				continue
			}
			return err
		}
		go handle(c.(*net.TCPConn), null)
	}
}

func handle(c *net.TCPConn, null *os.File) {
	defer c.Close()
	var head [17]byte
	if _, err := io.ReadFull(c, head[:1]); err != nil {
		return
	}
	switch head[0] {
	case 'S':
		if _, err := io.ReadFull(c, head[1:9]); err != nil {
			return
		}
		var n atomic.Int64
		id := binary.BigEndian.Uint64(head[1:9])
		sinks.Store(id, &n)
		defer sinks.Delete(id)
		for {
			// Chunks of 1 MiB, the client's write size, each spliced into /dev/null: the
			// count reaches what was sent without waiting for an end of stream.
			k, err := io.CopyN(null, c, chunk)
			n.Add(k)
			if err != nil {
				return
			}
		}
	case 'Q':
		if _, err := io.ReadFull(c, head[1:17]); err != nil {
			return
		}
		id := binary.BigEndian.Uint64(head[1:9])
		want := int64(binary.BigEndian.Uint64(head[9:17]))
		var got int64 = -1
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if v, ok := sinks.Load(id); ok {
				if got = v.(*atomic.Int64).Load(); got >= want {
					break
				}
			}
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(got))
		_, _ = c.Write(b[:])
	default:
		if _, err := c.Write(head[:1]); err != nil {
			return
		}
		// Echo through a small buffer: io.Copy would splice, and the standard library's
		// splice keeps a pipe (2 descriptors) while it waits, which caps an idle soak at a
		// third of the open-file limit in this process.
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}

// stream runs par sink streams for d and prints the throughput of the bytes the sink
// confirmed, over the time until the last confirmation.
func stream(addr string, par int, d time.Duration) error {
	var total atomic.Int64
	errs := make(chan error, par)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range par {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			id := uint64(time.Now().UnixNano())<<8 | uint64(i)
			var head [9]byte
			head[0] = 'S'
			binary.BigEndian.PutUint64(head[1:], id)
			if _, err := c.Write(head[:]); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, chunk)
			sent := int64(0)
			for time.Since(start) < d {
				n, err := c.Write(buf)
				sent += int64(n)
				if err != nil {
					errs <- err
					return
				}
			}
			q, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer q.Close()
			var ask [17]byte
			ask[0] = 'Q'
			binary.BigEndian.PutUint64(ask[1:9], id)
			binary.BigEndian.PutUint64(ask[9:], uint64(sent))
			var b [8]byte
			_, err = q.Write(ask[:])
			if err == nil {
				_, err = io.ReadFull(q, b[:])
			}
			if err != nil {
				errs <- fmt.Errorf("asking the sink for its count: %w", err)
				return
			}
			if got := int64(binary.BigEndian.Uint64(b[:])); got != sent {
				errs <- fmt.Errorf("sink got %d bytes, sent %d", got, sent)
				return
			}
			total.Add(sent)
		})
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Printf("streams=%d bytes=%d secs=%.3f MiBps=%.1f\n", par, total.Load(), el.Seconds(), float64(total.Load())/el.Seconds()/(1<<20))
	return nil
}

// cps runs par workers that connect, echo 64 bytes and close, for d.
func cps(addr string, par int, d time.Duration) error {
	var mu sync.Mutex
	var lat []time.Duration
	var failures atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			msg := make([]byte, 64)
			msg[0] = 'E'
			reply := make([]byte, 64)
			var mine []time.Duration
			for time.Since(start) < d {
				t0 := time.Now()
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					failures.Add(1)
					continue
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Write(msg)
				if err == nil {
					_, err = io.ReadFull(c, reply)
				}
				c.Close()
				if err != nil || reply[0] != 'E' {
					failures.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	if len(lat) == 0 {
		return fmt.Errorf("no connection succeeded (%d failures)", failures.Load())
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	fmt.Printf("conns=%d failures=%d secs=%.3f cps=%.0f p50us=%.0f p99us=%.0f\n",
		len(lat), failures.Load(), el.Seconds(), float64(len(lat))/el.Seconds(), q(0.50), q(0.99))
	return nil
}

// idle opens n connections, checks each with an echo, prints "ready", holds them until
// stdin closes, then checks each again and prints "ok" if none was lost.
func idle(addr string, n int) error {
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	check := func(c net.Conn, i int) error {
		msg := []byte(fmt.Sprintf("E%07d", i))
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(msg); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if string(got) != string(msg) {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
		return nil
	}
	for i := range n {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		if err := check(c, i); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
	}
	fmt.Printf("ready %d\n", n)
	_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	var wg sync.WaitGroup
	var lost atomic.Int64
	for i, c := range conns {
		wg.Go(func() {
			if check(c, i) != nil {
				lost.Add(1)
			}
		})
	}
	wg.Wait()
	if l := lost.Load(); l > 0 {
		return fmt.Errorf("%d of %d idle connections lost", l, n)
	}
	fmt.Printf("ok %d\n", n)
	return nil
}
