package testkit

import (
	"os"
	"testing"
)

//go:noinline
func deepThenPark(depth int, ready chan<- struct{}, park <-chan struct{}) byte {
	var pad [512]byte
	if depth > 0 {
		pad[depth%len(pad)] = deepThenPark(depth-1, ready, park)
		return pad[0]
	}
	ready <- struct{}{}
	<-park
	return pad[1]
}

//go:noinline
func parkedShallow(ready chan<- struct{}, park <-chan struct{}) {
	ready <- struct{}{}
	<-park
}

// Goroutines tells each goroutine's stack: one parked 64 frames of 512 bytes deep holds
// more than 32 KiB, one parked at once a few KiB.
func TestGoroutines(t *testing.T) {
	ready, park := make(chan struct{}), make(chan struct{})
	defer close(park)
	go deepThenPark(64, ready, park)
	go parkedShallow(ready, park)
	<-ready
	<-ready
	var deep, shallow []Goroutine
	for _, g := range Goroutines(t) {
		switch {
		case g.Calls("testkit.deepThenPark"):
			deep = append(deep, g)
		case g.Calls("testkit.parkedShallow"):
			shallow = append(shallow, g)
		}
	}
	if len(deep) != 1 || len(shallow) != 1 {
		t.Fatalf("found %d deep and %d shallow goroutines, want one each", len(deep), len(shallow))
	}
	if s := deep[0].Stack; s <= 32<<10 {
		t.Errorf("the deep goroutine holds %d bytes of stack, want more than 32 KiB", s)
	}
	if s := shallow[0].Stack; s > 16<<10 {
		t.Errorf("the shallow goroutine holds %d bytes of stack, want at most 16 KiB", s)
	}
}

// InChild runs the test's body in a child process with the environment it is given.
func TestInChild(t *testing.T) {
	if !InChild(t, "SHD_TESTKIT_PROBE=child") {
		return
	}
	if v := os.Getenv("SHD_TESTKIT_PROBE"); v != "child" {
		t.Errorf("SHD_TESTKIT_PROBE = %q in the child, want child", v)
	}
}
