package endpoint

import (
	"errors"
	"testing"
)

// The failover plan: candidates in the source's order, the next after a failure, and the
// end's error by how many attempts failed.
func TestPlan(t *testing.T) {
	refused, timeout := errors.New("connection refused"), errors.New("i/o timeout")
	for _, tc := range []struct {
		name     string
		hosts    List[string]
		fail     map[string][]error // the failures of each host's attempts, in order
		want     string             // the host that connects, "" for none
		tried    []string
		failures int
		err      string
	}{
		{name: "none", err: "no host to connect to"},
		{name: "first connects", hosts: List[string]{"a", "b"}, want: "a", tried: []string{"a"}},
		{
			name: "next on failure", hosts: List[string]{"a", "b", "c"},
			fail: map[string][]error{"a": {refused}}, want: "b", tried: []string{"a", "b"}, failures: 1,
		},
		{
			name: "one fails", hosts: List[string]{"a"}, fail: map[string][]error{"a": {refused}},
			tried: []string{"a"}, failures: 1, err: "connection refused",
		},
		{
			name: "all fail, each address counted", hosts: List[string]{"a", "b"},
			fail:  map[string][]error{"a": {refused, timeout}, "b": {timeout}},
			tried: []string{"a", "b"}, failures: 3, err: "all 3 hosts failed, last: i/o timeout",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Plan[string]
			got := ""
			for got == "" {
				h, ok := p.Next(tc.hosts)
				if !ok {
					break
				}
				if p.LastErr() != nil {
					t.Errorf("%s: a new candidate starts with LastErr %v", h, p.LastErr())
				}
				for _, err := range tc.fail[h] {
					p.Failed(err)
				}
				if len(tc.fail[h]) == 0 {
					got = h
				} else if p.LastErr() != tc.fail[h][len(tc.fail[h])-1] {
					t.Errorf("%s: LastErr %v", h, p.LastErr())
				}
			}
			if got != tc.want {
				t.Errorf("connected to %q, want %q", got, tc.want)
			}
			if n := len(tc.tried); n > 0 && p.Current() != tc.tried[n-1] {
				t.Errorf("current %q, want %q", p.Current(), tc.tried[n-1])
			}
			if len(p.Tried()) != len(tc.tried) || p.Failures() != tc.failures {
				t.Errorf("tried %v with %d failures, want %v with %d", p.Tried(), p.Failures(), tc.tried, tc.failures)
			}
			if ended := got == ""; p.Ended() != ended {
				t.Errorf("Ended %v, want %v", p.Ended(), ended)
			}
			if got == "" {
				if err := p.Err(); err == nil || err.Error() != tc.err {
					t.Errorf("Err %v, want %q", err, tc.err)
				}
				if tc.failures == 0 && !errors.Is(p.Err(), ErrNoHost) {
					t.Errorf("Err %v is not ErrNoHost", p.Err())
				}
			}
		})
	}
}
