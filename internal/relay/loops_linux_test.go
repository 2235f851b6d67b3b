package relay

import "testing"

// TestLoopsNear: a caller stays on its loop while the loads are about even, and moves to
// the loop with the fewest pairs once its own relays two more; At spreads callers in turn.
func TestLoopsNear(t *testing.T) {
	ls, err := NewLoops(3)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	a, b, c := ls.At(0), ls.At(1), ls.At(2)
	if ls.At(3) != a || ls.At(4) != b {
		t.Fatal("At does not wrap around the loops")
	}
	a.pairs.Store(1)
	b.pairs.Store(2)
	c.pairs.Store(0)
	if got := ls.Near(a); got != a {
		t.Errorf("Near(a) with pairs 1, 2, 0 moved to another loop; want a (one pair more than the least)")
	}
	if got := ls.Near(b); got != c {
		t.Errorf("Near(b) with pairs 1, 2, 0 stayed or went elsewhere; want c (two pairs fewer)")
	}
}
