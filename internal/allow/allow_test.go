package allow

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func TestAllows(t *testing.T) {
	r := fakeResolver{"friend.test": {netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8::7")}}
	l, err := Parse(context.Background(), r, []string{"127.0.0.2", "192.0.2.0/24", "2001:db8:1::/48", "friend.test", "[::1]"})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]bool{
		"127.0.0.2": true, "127.0.0.1": false, "192.0.2.200": true, "192.0.3.1": false,
		"2001:db8:1:ffff::1": true, "2001:db8:2::1": false, "198.51.100.7": true,
		"2001:db8::7": true, "::1": true, "::ffff:127.0.0.2": true, "::ffff:127.0.0.1": false,
		"fe80::1%eth0": false,
	}
	for in, want := range cases {
		if got := l.Allows(netip.MustParseAddr(in)); got != want {
			t.Errorf("Allows(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestEmptyAllowsAll(t *testing.T) {
	var l *List
	if !l.Allows(netip.MustParseAddr("203.0.113.1")) {
		t.Fatal("nil list refused a client")
	}
}

func TestParseErrors(t *testing.T) {
	for _, v := range []string{"10.0.0.0/33", "::1/129", "1.2.3.4/", "nosuch.test", "300.1.1.1/8"} {
		if _, err := Parse(context.Background(), fakeResolver{}, []string{v}); err == nil {
			t.Errorf("Parse(%q) succeeded", v)
		}
	}
}

// A block with host bits set (10.0.0.1/8) is most likely a typo for an address or for the
// network: it is refused, naming the network it would mean.
func TestParseHostBitsSet(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1/8":          `allow "10.0.0.1/8": host bits set; did you mean 10.0.0.0/8?`,
		"192.0.2.77/24":       `allow "192.0.2.77/24": host bits set; did you mean 192.0.2.0/24?`,
		"2001:db8::1/32":      `allow "2001:db8::1/32": host bits set; did you mean 2001:db8::/32?`,
		"::ffff:10.1.2.3/104": `allow "::ffff:10.1.2.3/104": host bits set; did you mean ::ffff:10.0.0.0/104?`,
	} {
		_, err := Parse(context.Background(), fakeResolver{}, []string{in})
		if err == nil || err.Error() != want {
			t.Errorf("Parse(%q) = %v, want %q", in, err, want)
		}
	}
	// The network itself, and a single address as a /32 or /128, are fine.
	for _, in := range []string{"10.0.0.0/8", "10.0.0.1/32", "2001:db8::/32", "::1/128", "0.0.0.0/0"} {
		if _, err := Parse(context.Background(), fakeResolver{}, []string{in}); err != nil {
			t.Errorf("Parse(%q): %v", in, err)
		}
	}
}

// A block of IPv4-mapped addresses matches the IPv4 clients it names.
func TestMappedBlock(t *testing.T) {
	l, err := Parse(context.Background(), fakeResolver{}, []string{"::ffff:10.0.0.0/104"})
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]bool{"10.9.8.7": true, "::ffff:10.9.8.7": true, "11.0.0.1": false} {
		if got := l.Allows(netip.MustParseAddr(in)); got != want {
			t.Errorf("Allows(%s) = %v, want %v", in, got, want)
		}
	}
}
