// Package metricstest scrapes a tool's /metrics for tests: it reads the samples, waits for
// a value, and checks the text with promtool (Debian package prometheus).
package metricstest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Scrape is one scrape: the text as served and its samples, keyed by the series as the
// text names it (`tcppf_relayed_bytes_total{direction="to_server"}`).
type Scrape struct {
	Text    string
	Samples map[string]float64
}

// Get returns the sample of series, failing the test when the scrape has none.
func (s *Scrape) Get(t testing.TB, series string) float64 {
	t.Helper()
	v, ok := s.Samples[series]
	if !ok {
		t.Fatalf("no series %s in the scrape:\n%s", series, s.Text)
	}
	return v
}

// Sum adds up the samples of every series of the metric name (all its label values).
func (s *Scrape) Sum(name string) float64 {
	var sum float64
	for k, v := range s.Samples {
		if k == name || strings.HasPrefix(k, name+"{") {
			sum += v
		}
	}
	return sum
}

// Get scrapes http://addr/metrics.
func Get(t testing.TB, addr string) *Scrape {
	t.Helper()
	s, err := get(addr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func get(addr string) (*Scrape, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scraping: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scraping: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping: %s: %s", resp.Status, body)
	}
	s := &Scrape{Text: string(body), Samples: map[string]float64{}}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("scrape line %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("scrape line %q: %w", line, err)
		}
		s.Samples[line[:i]] = v
	}
	return s, nil
}

// WaitFor scrapes addr until cond holds for a scrape, and returns that scrape; it fails
// the test after d, showing the last scrape and saying what was awaited.
func WaitFor(t testing.TB, addr string, d time.Duration, what string, cond func(*Scrape) bool) *Scrape {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s, err := get(addr)
		if err == nil && cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("waiting %v for %s: %v", d, what, err)
			}
			t.Fatalf("waiting %v for %s; the last scrape:\n%s", d, what, s.Text)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Promtool runs `promtool check metrics` on text and fails the test on any problem it
// reports (format errors and lint: names, units, help). promtool comes with Debian's
// prometheus package, which CI installs; without it the test fails, saying so.
func Promtool(t testing.TB, text string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (Debian package prometheus): %v", err)
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
