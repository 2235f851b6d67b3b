// Command nshelper is the small program the namespace test runs inside its test hosts:
// a loopback service on A, a reachability probe, and a checksumming client on C.
//
//	nshelper serve -echo ADDR [-proxy] [-probe ADDR]   echo service (after a PROXY header
//	                                                   with -proxy, answered "SRC <addr>\n"),
//	                                                   plus a bare listener to probe; prints
//	                                                   "ready" once both listen
//	nshelper probe -addr ADDR -timeout D               exit 0 if a connection opens, 3 if not
//	nshelper client -addr ADDR -bytes N [-expect-src IP]
//	                                                   send N random bytes, check the echo's
//	                                                   length and SHA-256 (and the SRC line)
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/pires/go-proxyproto"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "nshelper: want serve, probe or client")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "probe":
		err = probe(os.Args[2:])
	case "client":
		err = client(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nshelper:", err)
		var ue unreachable
		if errors.As(err, &ue) {
			os.Exit(3)
		}
		os.Exit(1)
	}
}

type unreachable struct{ error }

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	echo := fs.String("echo", "127.0.0.1:7000", "echo service address")
	withProxy := fs.Bool("proxy", false, "read a PROXY v1 header first")
	probeAddr := fs.String("probe", "", "a bare listener for reachability probes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *echo)
	if err != nil {
		return err
	}
	if *probeAddr != "" {
		pl, err := net.Listen("tcp", *probeAddr)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := pl.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			var src io.Reader = c
			if *withProxy {
				br := bufio.NewReader(c)
				h, err := proxyproto.Read(br)
				if err != nil {
					fmt.Fprintf(c, "BAD %v\n", err)
					return
				}
				fmt.Fprintf(c, "SRC %s\n", h.SourceAddr)
				src = br
			}
			if _, err := io.Copy(c, src); err == nil {
				_ = c.(*net.TCPConn).CloseWrite()
			}
		}()
	}
}

func probe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	addr := fs.String("addr", "", "address to try")
	timeout := fs.Duration("timeout", time.Second, "connect timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", *addr, *timeout)
	if err != nil {
		return unreachable{fmt.Errorf("connecting to %s: %w", *addr, err)}
	}
	c.Close()
	fmt.Println("reachable", *addr)
	return nil
}

func client(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	addr := fs.String("addr", "", "address to connect to")
	n := fs.Int("bytes", 1<<20, "bytes to send")
	expectSrc := fs.String("expect-src", "", "the client address the service must report")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", *addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if *expectSrc != "" {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading the SRC line: %w", err)
		}
		host, _, _ := net.SplitHostPort(strings.TrimPrefix(strings.TrimSpace(line), "SRC "))
		if !strings.HasPrefix(line, "SRC ") || host != *expectSrc {
			return fmt.Errorf("service saw %q, want client %s", strings.TrimSpace(line), *expectSrc)
		}
		fmt.Println("service saw", strings.TrimSpace(line))
	}
	data := make([]byte, *n)
	_, _ = rand.Read(data)
	want := sha256.Sum256(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	got, err := io.Copy(h, br)
	if err != nil {
		return fmt.Errorf("reading the echo after %d bytes: %w", got, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if got != int64(*n) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("echo: %d bytes sha256 %x, want %d bytes %x", got, h.Sum(nil), *n, want)
	}
	fmt.Printf("ok %d bytes sha256 %x\n", got, want)
	return nil
}
