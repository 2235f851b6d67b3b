// Command tunnelload is the client and server of bench/tunnel.sh: it serves an echo and
// sink service, measures one target (connect-to-first-byte latency, round trips on an open
// connection, new clients per second, single-stream throughput), and turns the rows of
// several interleaved rounds into a table of medians.
//
//	tunnelload serve -addr ADDR                   the service: first byte 'E' echo, 'S' sink
//	tunnelload freeport                           print a free loopback port
//	tunnelload wait -addr ADDR                    wait until ADDR accepts (10 s at most)
//	tunnelload measure -name NAME -addr ADDR ...  print one TSV row for the target
//	tunnelload hold -addr ADDR -n N -bytes B      N clients at once, each echoes B bytes,
//	                                              and all close when all are done
//	tunnelload table < rows.tsv                   print a Markdown table of medians
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "tunnelload: want serve, freeport, wait, measure, hold, table or against")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "freeport":
		err = freeport()
	case "wait":
		err = wait(os.Args[2:])
	case "measure":
		err = measure(os.Args[2:])
	case "hold":
		err = hold(os.Args[2:])
	case "table":
		err = table(os.Stdin, os.Stdout)
	case "against":
		err = against(os.Args[2:], os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tunnelload:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			tc := c.(*net.TCPConn)
			var b [1]byte
			if _, err := io.ReadFull(tc, b[:]); err != nil {
				return
			}
			switch b[0] {
			case 'E': // echo, the first byte included; io.Copy between raw conns splices
				if _, err := tc.Write(b[:]); err != nil {
					return
				}
				if _, err := io.Copy(tc, tc); err == nil {
					_ = tc.CloseWrite()
				}
			case 'S': // sink: count until EOF, answer the count
				n, err := io.Copy(io.Discard, tc)
				if err != nil {
					return
				}
				var out [8]byte
				binary.BigEndian.PutUint64(out[:], uint64(n))
				_, _ = tc.Write(out[:])
			}
		}()
	}
}

func freeport() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	return nil
}

func wait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	addr := fs.String("addr", "", "address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", *addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting after 10s: %w", *addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// firstByte connects, sends 'E', and returns the time until the echoed byte arrives.
func firstByte(addr string) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{'E'}); err != nil {
		return 0, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, fmt.Errorf("reading the first byte: %w", err)
	}
	return time.Since(start), nil
}

// hold opens n clients at once; each sends 'E' and size random-ish bytes and reads the
// echo back, and every client stays open until all have their echo, so that n links of a
// tunnel each carry one session (bench/tunnel.sh then measures idle links that were used).
func hold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	addr := fs.String("addr", "", "target address")
	n := fs.Int("n", 256, "clients at once")
	size := fs.Int("bytes", 256<<10, "bytes each client sends and reads back")
	if err := fs.Parse(args); err != nil {
		return err
	}
	payload := make([]byte, 1+*size)
	payload[0] = 'E'
	for i := 1; i < len(payload); i++ {
		payload[i] = byte(i * 7)
	}
	conns := make([]net.Conn, *n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	errs := make(chan error, *n)
	for i := range conns {
		c, err := net.DialTimeout("tcp", *addr, 10*time.Second)
		if err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
		conns[i] = c
		go func() {
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			go func() { _, _ = c.Write(payload) }()
			back := make([]byte, len(payload))
			_, err := io.ReadFull(c, back)
			if err == nil && !slices.Equal(back, payload) {
				err = errors.New("echo differs")
			}
			errs <- err
		}()
	}
	for i := 0; i < *n; i++ {
		if err := <-errs; err != nil {
			return fmt.Errorf("hold: %w", err)
		}
	}
	return nil
}

func measure(args []string) error {
	fs := flag.NewFlagSet("measure", flag.ContinueOnError)
	name := fs.String("name", "", "target name for the row")
	round := fs.Int("round", 1, "round number for the row")
	addr := fs.String("addr", "", "target address")
	latN := fs.Int("latency", 300, "sequential new clients timed from connect to first echoed byte")
	rttN := fs.Int("rtt", 300, "1-byte round trips timed on one open connection")
	rateDur := fs.Duration("rate", 1500*time.Millisecond, "how long to open new clients as fast as possible")
	conc := fs.Int("conc", 8, "concurrent clients for the rate")
	size := fs.Int64("bytes", 256<<20, "bytes for the single-stream throughput")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Connect to first echoed byte, one new client at a time.
	lat := make([]time.Duration, 0, *latN)
	for i := 0; i < *latN; i++ {
		d, err := firstByte(*addr)
		if err != nil {
			return fmt.Errorf("%s: latency client %d: %w", *name, i, err)
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)

	// Round trips on one open connection: the cost of one message each way.
	rtts, err := roundTrips(*addr, *rttN)
	if err != nil {
		return fmt.Errorf("%s: rtt: %w", *name, err)
	}

	// New clients per second: conc workers, each connect, first byte, close, again.
	var count, fails atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(*rateDur)
	start := time.Now()
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if _, err := firstByte(*addr); err != nil {
					fails.Add(1)
					continue
				}
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	rate := float64(count.Load()) / time.Since(start).Seconds()
	if fails.Load() > 0 {
		fmt.Fprintf(os.Stderr, "tunnelload: %s: %d of %d rate clients failed\n", *name, fails.Load(), fails.Load()+count.Load())
	}

	// Single-stream throughput into the sink (-bytes 0: none).
	var mibs float64
	if *size > 0 {
		mibs, err = throughput(*addr, *size)
		if err != nil {
			return fmt.Errorf("%s: throughput: %w", *name, err)
		}
	}
	fmt.Printf("%s\t%d\t%.1f\t%.1f\t%.1f\t%.0f\t%.1f\n", *name, *round,
		us(pct(lat, 50)), us(pct(lat, 99)), us(pct(rtts, 50)), rate, mibs)
	return nil
}

func roundTrips(addr string, n int) ([]time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var b [1]byte
	out := make([]time.Duration, 0, n)
	for i := 0; i <= n; i++ {
		start := time.Now()
		if _, err := c.Write([]byte{'E'}); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return nil, err
		}
		if i > 0 { // the first one includes setting up the path
			out = append(out, time.Since(start))
		}
	}
	slices.Sort(out)
	return out, nil
}

func throughput(addr string, size int64) (float64, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	tc := c.(*net.TCPConn)
	buf := make([]byte, 1<<20)
	buf[0] = 'S'
	start := time.Now()
	var sent int64
	for sent < size+1 {
		n := int64(len(buf))
		if size+1-sent < n {
			n = size + 1 - sent
		}
		w, err := tc.Write(buf[:n])
		sent += int64(w)
		if err != nil {
			return 0, err
		}
		buf[0] = 0
	}
	if err := tc.CloseWrite(); err != nil {
		return 0, err
	}
	var out [8]byte
	if _, err := io.ReadFull(tc, out[:]); err != nil {
		return 0, fmt.Errorf("reading the sink's count: %w", err)
	}
	if got := int64(binary.BigEndian.Uint64(out[:])); got != size {
		return 0, fmt.Errorf("sink counted %d bytes, sent %d", got, size)
	}
	return float64(size) / (1 << 20) / time.Since(start).Seconds(), nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// against reads the same TSV rows and prints, for every target but base, its new clients
// per second and throughput as multiples of base's in the same round: the median over the
// rounds and the lowest.
func against(args []string, r io.Reader, w io.Writer) error {
	fs := flag.NewFlagSet("against", flag.ContinueOnError)
	baseName := fs.String("base", "ssh-R", "the target the others are compared with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	type key struct{ name, round string }
	type vals struct{ rate, mibs float64 }
	var order []string
	got := map[key]vals{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 7 {
			continue
		}
		rate, err1 := strconv.ParseFloat(f[5], 64)
		mibs, err2 := strconv.ParseFloat(f[6], 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("row %q: not numbers", sc.Text())
		}
		if !slices.Contains(order, f[0]) {
			order = append(order, f[0])
		}
		got[key{f[0], f[1]}] = vals{rate, mibs}
	}
	fmt.Fprintf(w, "| target | new clients/s vs %s (median, lowest) | throughput vs %s (median, lowest) | rounds |\n", *baseName, *baseName)
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	for _, name := range order {
		if name == *baseName {
			continue
		}
		var rates, tputs []float64
		for k, v := range got {
			b, ok := got[key{*baseName, k.round}]
			if k.name != name || !ok || b.rate <= 0 || b.mibs <= 0 {
				continue
			}
			rates, tputs = append(rates, v.rate/b.rate), append(tputs, v.mibs/b.mibs)
		}
		if len(rates) == 0 {
			continue
		}
		slices.Sort(rates)
		slices.Sort(tputs)
		fmt.Fprintf(w, "| %s | %.1f×, %.1f× | %.2f×, %.2f× | %d |\n", name, median(rates), rates[0], median(tputs), tputs[0], len(rates))
	}
	return nil
}

func median(s []float64) float64 {
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// table reads TSV rows "name round p50 p99 rtt rate mibs" and prints the median of each
// column per target, in the order targets first appear, with ratios to "direct".
func table(r io.Reader, w io.Writer) error {
	type cols [5][]float64
	var order []string
	rows := map[string]*cols{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 7 {
			continue
		}
		c, ok := rows[f[0]]
		if !ok {
			c = &cols{}
			rows[f[0]] = c
			order = append(order, f[0])
		}
		for i := 0; i < 5; i++ {
			v, err := strconv.ParseFloat(f[i+2], 64)
			if err != nil {
				return fmt.Errorf("row %q: %w", sc.Text(), err)
			}
			c[i] = append(c[i], v)
		}
	}
	if len(order) == 0 {
		return errors.New("no rows")
	}
	med := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		if len(s)%2 == 1 {
			return s[len(s)/2]
		}
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	base, hasBase := rows["direct"]
	fmt.Fprintln(w, "| target | connect→first byte p50 (µs) | p99 (µs) | round trip on open conn p50 (µs) | new clients/s | throughput (MiB/s) | throughput vs direct | rounds |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, name := range order {
		c := rows[name]
		ratio := "-"
		if hasBase && med(base[4]) > 0 {
			ratio = fmt.Sprintf("%.2f×", med(c[4])/med(base[4]))
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %d |\n",
			name, med(c[0]), med(c[1]), med(c[2]), med(c[3]), med(c[4]), ratio, len(c[0]))
	}
	return nil
}
