package meter

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Progress prints the throughput of a running transfer: one report per Interval while the
// count grows, in place with a carriage return on a terminal and one line per report
// otherwise, and a summary line from Finish. Add is safe for simultaneous use; once Finish
// has printed the summary, a Run still going prints nothing more.
type Progress struct {
	// Out receives the reports (stderr).
	Out io.Writer
	// Terminal selects in-place updates with "\r" instead of one line per report.
	Terminal bool
	// Interval between reports; zero means one second.
	Interval time.Duration
	// Prefix starts every line (the tool's name and a colon).
	Prefix string

	bytes    atomic.Uint64
	start    time.Time
	mu       sync.Mutex
	lastLen  int
	finished bool
}

// Add records n more bytes moved.
func (p *Progress) Add(n int64) {
	if n > 0 {
		p.bytes.Add(uint64(n))
	}
}

// Bytes returns the bytes recorded so far.
func (p *Progress) Bytes() uint64 { return p.bytes.Load() }

// Run reports until ctx ends. It marks the transfer's start time.
func (p *Progress) Run(ctx context.Context) {
	p.mu.Lock()
	p.start = time.Now()
	p.mu.Unlock()
	iv := p.Interval
	if iv <= 0 {
		iv = time.Second
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	var last uint64
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n := p.bytes.Load()
			if n != last {
				p.line(fmt.Sprintf("%s %s, %s now, %s average", p.Prefix, Size(n),
					Rate(n-last, now.Sub(lastAt)), Rate(n, now.Sub(p.started()))), false)
			}
			last, lastAt = n, now
		}
	}
}

func (p *Progress) started() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.start
}

// Finish prints the summary line: total bytes, elapsed time and average rate. It is the
// last line Progress prints.
func (p *Progress) Finish() {
	n := p.bytes.Load()
	start := p.started()
	if start.IsZero() {
		start = time.Now()
	}
	d := time.Since(start)
	p.line(fmt.Sprintf("%s %d bytes (%s) in %.3f s, %s average", p.Prefix, n, Size(n), d.Seconds(), Rate(n, d)), true)
}

func (p *Progress) line(s string, final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.finished = final
	if !p.Terminal {
		fmt.Fprintln(p.Out, s)
		return
	}
	pad := ""
	if d := p.lastLen - len(s); d > 0 {
		pad = fmt.Sprintf("%*s", d, "")
	}
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(p.Out, "\r%s%s%s", s, pad, end)
	p.lastLen = len(s)
}
