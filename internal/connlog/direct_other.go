//go:build !linux

package connlog

import "io"

// directWriter writes nothing directly off Linux: every line goes through the writer.
func directWriter(io.Writer) func(p []byte) (n int, tried bool) { return nil }
