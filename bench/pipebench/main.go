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
	"time"

	"shd-tcp-tools/internal/pipe/pipetest"
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
		if err := pipetest.SetTimestamps(ln.(*net.TCPListener)); err != nil {
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

func sink(port string, rate float64) error {
	c, err := acceptOne(port, true)
	if err != nil {
		return err
	}
	defer c.Close()
	arr, unstamped, err := pipetest.ReceiveTimestamped(c, time.Time{})
	if err != nil {
		return err
	}
	if len(arr) < 2 {
		return fmt.Errorf("only %d reads arrived", len(arr))
	}
	first, last := arr[0], arr[len(arr)-1]
	secs := last.At.Sub(first.At).Seconds()
	avg := float64(last.Total-first.Total) / secs
	// The long-run slope starts a second in, past the first burst.
	from := first
	for _, a := range arr {
		if a.At.Sub(first.At) >= time.Second && last.At.Sub(a.At) >= time.Second {
			from = a
			break
		}
	}
	slope := float64(last.Total-from.Total) / last.At.Sub(from.At).Seconds()
	w1 := pipetest.MaxWindow(arr, time.Second)
	bound := 1.05*rate + 64<<10
	fmt.Printf("bytes=%d secs=%.3f avg=%.0f slope_err=%+.2f win100_ratio=%.3f win1s=%d win1s_bound=%.0f win1s_ratio=%.3f reads=%d unstamped=%d\n",
		last.Total, secs, avg, 100*(slope/rate-1), float64(pipetest.MaxWindow(arr, 100*time.Millisecond))/(rate/10),
		w1, bound, float64(w1)/bound, len(arr), unstamped)
	return nil
}
