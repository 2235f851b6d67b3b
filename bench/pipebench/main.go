// Command pipebench is the measuring side of bench/pipe.sh: a plain socket copy to compare
// tcppipe with (send, recv), and a sink that timestamps every arrival to judge a rate
// limiter (sink).
//
//	pipebench send FILE HOST PORT     send FILE to HOST:PORT (sendfile), then close
//	pipebench recv PORT               accept one connection on 127.0.0.1:PORT, copy it to
//	                                  stdout (splice) until EOF
//	pipebench sink PORT RATE          accept one connection on 127.0.0.1:PORT, read it to EOF
//	                                  and print one line of rate statistics against RATE
//	                                  bytes per second
//
// The sink prints key=value pairs: bytes, secs (first to last arrival), avg (B/s over that
// time), slope_err (% off RATE of the rate from 1 s after the first arrival to the last, so
// that a first burst does not count), win100_ratio (the largest 100 ms window over RATE/10), win1s (the largest 1 s
// window, in bytes, first second included), win1s_bound (1.05 x RATE + 64 KiB) and
// win1s_ratio (win1s over the bound: at most 1 meets the spec). Arrival times are the
// kernel's receive timestamps (SO_TIMESTAMPNS), so a busy machine delaying the sink does
// not bunch arrivals (much: TCP merges packets that wait in the socket, and a merged packet
// carries the newest timestamp); reads without one are timed when read, and unstamped
// counts them.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pipebench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 4 && args[0] == "send":
		return send(args[1], net.JoinHostPort(args[2], args[3]))
	case len(args) == 2 && args[0] == "recv":
		return recv(args[1])
	case len(args) == 3 && args[0] == "sink":
		rate, err := strconv.ParseFloat(args[2], 64)
		if err != nil || rate <= 0 {
			return fmt.Errorf("bad RATE %q", args[2])
		}
		return sink(args[1], rate)
	}
	return errors.New("usage: pipebench send FILE HOST PORT | recv PORT | sink PORT RATE")
}

func send(path, addr string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.Copy(c, f); err != nil {
		return err
	}
	return c.(*net.TCPConn).CloseWrite()
}

// acceptOne accepts one connection on 127.0.0.1:port. With stamp, kernel receive
// timestamps are turned on at the listener, so that the accepted connection inherits them
// and bytes that arrive before the accept are stamped too.
func acceptOne(port string, stamp bool) (*net.TCPConn, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	if stamp {
		if err := setTimestamps(ln.(*net.TCPListener)); err != nil {
			return nil, err
		}
	}
	c, err := ln.Accept()
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func recv(port string) error {
	c, err := acceptOne(port, false)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = io.Copy(os.Stdout, c)
	return err
}

type arrival struct {
	at    time.Time
	total int64
}

func sink(port string, rate float64) error {
	c, err := acceptOne(port, true)
	if err != nil {
		return err
	}
	defer c.Close()
	arr, unstamped, err := receive(c)
	if err != nil {
		return err
	}
	if len(arr) < 2 {
		return fmt.Errorf("only %d reads arrived", len(arr))
	}
	first, last := arr[0], arr[len(arr)-1]
	secs := last.at.Sub(first.at).Seconds()
	avg := float64(last.total-first.total) / secs
	// The long-run slope starts a second in, past the first burst.
	from := first
	for _, a := range arr {
		if a.at.Sub(first.at) >= time.Second && last.at.Sub(a.at) >= time.Second {
			from = a
			break
		}
	}
	slope := float64(last.total-from.total) / last.at.Sub(from.at).Seconds()
	w1 := maxWindow(arr, time.Second)
	bound := 1.05*rate + 64<<10
	fmt.Printf("bytes=%d secs=%.3f avg=%.0f slope_err=%+.2f win100_ratio=%.3f win1s=%d win1s_bound=%.0f win1s_ratio=%.3f reads=%d unstamped=%d\n",
		last.total, secs, avg, 100*(slope/rate-1), float64(maxWindow(arr, 100*time.Millisecond))/(rate/10),
		w1, bound, float64(w1)/bound, len(arr), unstamped)
	return nil
}

// receive reads c to EOF in reads of at most 16 KiB, noting each read's arrival time, and
// counts the reads that had no kernel timestamp.
func receive(c *net.TCPConn) ([]arrival, int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	unstamped := 0
	buf, oob := make([]byte, 16<<10), make([]byte, 256)
	var arr []arrival
	var total int64
	for {
		var n, oobn int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN
		}); err != nil {
			return nil, 0, err
		}
		if rerr != nil {
			return nil, 0, rerr
		}
		if n == 0 {
			return arr, unstamped, nil
		}
		at, ok := stamp(oob[:oobn])
		if !ok {
			at = time.Now()
			unstamped++
		}
		total += int64(n)
		arr = append(arr, arrival{at, total})
	}
}

// setTimestamps turns on kernel receive timestamps (SO_TIMESTAMPNS) for a socket.
func setTimestamps(s syscall.Conn) error {
	raw, err := s.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return err
	}
	return serr
}

func stamp(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
			return time.Unix(ts.Unix()), true
		}
	}
	return time.Time{}, false
}

// maxWindow returns the most bytes that arrived within any closed window of length w.
func maxWindow(arr []arrival, w time.Duration) int64 {
	var most int64
	j := 0
	for i := range arr {
		for j+1 < len(arr) && !arr[j+1].at.After(arr[i].at.Add(w)) {
			j++
		}
		var before int64
		if i > 0 {
			before = arr[i-1].total
		}
		most = max(most, arr[j].total-before)
	}
	return most
}
