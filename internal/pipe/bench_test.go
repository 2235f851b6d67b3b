package pipe

import (
	"context"
	"io"
	"os"
	"testing"

	"shd-tcp-tools/internal/testkit"
)

const benchSize = 64 << 20

// benchFile returns an open file of benchSize random bytes, rewound before each use.
func benchFile(b *testing.B) *os.File {
	b.Helper()
	return testkit.Open(b, testkit.WriteFile(b, "in", testkit.RandomData(benchSize)))
}

func openDevNull(b *testing.B) *os.File {
	b.Helper()
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkFileToTCP is "tcppipe - 127.0.0.1 PORT < file": the engine sends a file to a
// sink that splices what it receives to /dev/null.
func BenchmarkFileToTCP(b *testing.B) {
	for _, bc := range []struct {
		name string
		rate int64
	}{{"plain", 0}, {"limited", 64 << 30}} {
		b.Run(bc.name, func(b *testing.B) {
			in, devnull := benchFile(b), openDevNull(b)
			ln := listen(b, "127.0.0.1")
			cfg := Config{Source: stdio, Destination: connectEnd("127.0.0.1", port(ln)), Stdin: in, Stderr: io.Discard, Rate: bc.rate}
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := in.Seek(0, io.SeekStart); err != nil {
					b.Fatal(err)
				}
				sunk := make(chan int64, 1)
				go func() {
					c, err := ln.AcceptTCP()
					if err != nil {
						sunk <- -1
						return
					}
					defer c.Close()
					n, _ := io.Copy(devnull, c)
					sunk <- n
				}()
				if err := Run(context.Background(), cfg); err != nil {
					b.Fatal(err)
				}
				if n := <-sunk; n != benchSize {
					b.Fatalf("sink got %d bytes; want %d", n, benchSize)
				}
			}
		})
	}
}

// BenchmarkTCPToDevNull is "tcppipe 127.0.0.1 PORT - > /dev/null": the engine receives
// what a sender sends from a file (sendfile) and writes it to /dev/null.
func BenchmarkTCPToDevNull(b *testing.B) {
	for _, bc := range []struct {
		name string
		rate int64
	}{{"plain", 0}, {"limited", 64 << 30}} {
		b.Run(bc.name, func(b *testing.B) {
			in, devnull := benchFile(b), openDevNull(b)
			ln := listen(b, "127.0.0.1")
			cfg := Config{Source: connectEnd("127.0.0.1", port(ln)), Destination: stdio, Stdout: devnull, Stderr: io.Discard, Rate: bc.rate}
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := in.Seek(0, io.SeekStart); err != nil {
					b.Fatal(err)
				}
				sent := make(chan error, 1)
				go func() {
					c, err := ln.AcceptTCP()
					if err != nil {
						sent <- err
						return
					}
					defer c.Close()
					if _, err := io.Copy(c, in); err != nil {
						sent <- err
						return
					}
					sent <- c.CloseWrite()
				}()
				if err := Run(context.Background(), cfg); err != nil {
					b.Fatal(err)
				}
				if err := <-sent; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
