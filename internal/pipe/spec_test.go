package pipe

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"shd-tcp-tools/internal/endpoint"
)

func TestParseEnds(t *testing.T) {
	stdio := End{Kind: Stdio}
	listen := func(p int) End { return End{Kind: Listen, Endpoint: endpoint.Endpoint{Port: p}} }
	connect := func(h string, p int) End {
		return End{Kind: Connect, Endpoint: endpoint.Endpoint{Host: h, Port: p}, Least: h == "."}
	}
	tests := []struct {
		args     []string
		src, dst End
	}{
		{[]string{"-", "-"}, stdio, stdio},
		{[]string{":9000", "-"}, listen(9000), stdio},
		{[]string{"-", ":1"}, stdio, listen(1)},
		{[]string{"-", ":65535"}, stdio, listen(65535)},
		{[]string{"-", "host.example", "22"}, stdio, connect("host.example", 22)},
		{[]string{"127.0.0.1", "80", "-"}, connect("127.0.0.1", 80), stdio},
		{[]string{"-", "::1", "9000"}, stdio, connect("::1", 9000)},
		{[]string{"-", "[::1]", "9000"}, stdio, connect("::1", 9000)},
		{[]string{"fe80::1%lo", "9000", "-"}, connect("fe80::1%lo", 9000), stdio},
		{[]string{"-", ".", "9000"}, stdio, connect(".", 9000)},
		{[]string{".", "9000", "-"}, connect(".", 9000), stdio},
		{[]string{"-", "localhost", "ssh"}, stdio, connect("localhost", 22)},
		{[]string{":ssh", "-"}, listen(22), stdio},
	}
	for _, tt := range tests {
		src, dst, err := ParseEnds(tt.args)
		if err != nil || src != tt.src || dst != tt.dst {
			t.Errorf("ParseEnds(%q) = %+v, %+v, %v; want %+v, %+v", tt.args, src, dst, err, tt.src, tt.dst)
		}
	}
}

func TestParseEndsErrors(t *testing.T) {
	tests := []struct {
		args []string
		msg  string
	}{
		{nil, "missing SOURCE"},
		{[]string{"-"}, "missing DESTINATION"},
		{[]string{":9000"}, "missing DESTINATION"},
		{[]string{"-", "-", "-"}, `unexpected argument "-"`},
		{[]string{"-", "host", "22", "extra"}, `unexpected argument "extra"`},
		{[]string{"-", "host"}, `host "host" needs a PORT`},
		{[]string{":9000", "host", "22"}, "both network endpoints"},
		{[]string{"host", "22", ":9000"}, "both network endpoints"},
		{[]string{":1", ":2"}, "both network endpoints"},
		{[]string{"a", "1", "b", "2"}, "both network endpoints"},
		{[]string{":0", "-"}, `port "0" out of range`},
		{[]string{":65536", "-"}, `port "65536" out of range`},
		{[]string{":99999", "-"}, `port "99999" out of range`},
		{[]string{":abc", "-"}, `port "abc"`},
		{[]string{":", "-"}, "empty port"},
		{[]string{"-", "host", "0"}, `port "0" out of range`},
		{[]string{"-", "host", "65536"}, `port "65536" out of range`},
		{[]string{"-", "host", "abc"}, `port "abc"`},
		{[]string{"-", "host", "-1"}, `port "-1"`},
		{[]string{"-", "", "22"}, "empty host"},
		{[]string{"-", "[]", "22"}, "brackets must enclose an IPv6 address"},
		{[]string{"-", "[127.0.0.1]", "22"}, "brackets must enclose an IPv6 address"},
		{[]string{"-", "[::1", "22"}, "brackets must enclose an IPv6 address"},
		{[]string{"-", "[[::1]]", "22"}, "brackets must enclose an IPv6 address"},
		{[]string{"-", "]0", "1"}, "brackets must enclose an IPv6 address"},
		{[]string{"-", "a[b]", "1"}, "brackets must enclose an IPv6 address"},
		{[]string{"-", "a host", "22"}, "blanks and control characters"},
		{[]string{"-", "host\n", "22"}, "blanks and control characters"},
	}
	for _, tt := range tests {
		src, dst, err := ParseEnds(tt.args)
		if err == nil {
			t.Errorf("ParseEnds(%q) = %+v, %+v; want an error saying %q", tt.args, src, dst, tt.msg)
		} else if !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("ParseEnds(%q) error %q; want it to say %q", tt.args, err, tt.msg)
		}
	}
}

func TestEndString(t *testing.T) {
	tests := []struct {
		e    End
		want string
	}{
		{End{Kind: Stdio}, "-"},
		{End{Kind: Listen, Endpoint: endpoint.Endpoint{Port: 80}}, ":80"},
		{End{Kind: Connect, Endpoint: endpoint.Endpoint{Host: "::1", Port: 80}}, "[::1]:80"},
		{End{Kind: Connect, Endpoint: endpoint.Endpoint{Host: ".", Port: 80}, Least: true}, ". 80"},
	}
	for _, tt := range tests {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("%+v.String() = %q; want %q", tt.e, got, tt.want)
		}
	}
}

// words renders an end as command-line arguments again.
func words(e End) []string {
	switch e.Kind {
	case Stdio:
		return []string{"-"}
	case Listen:
		return []string{":" + strconv.Itoa(e.Endpoint.Port)}
	}
	return []string{e.Endpoint.Host, strconv.Itoa(e.Endpoint.Port)}
}

// FuzzParseEnds checks that ParseEnds never panics, that what it accepts is consistent (at
// most one network end, ports in range, Least exactly for host "."), and that rendering
// the ends back into words and parsing them again gives the same ends.
func FuzzParseEnds(f *testing.F) {
	for _, s := range []string{"-\n-", ":9000\n-", "-\nhost\n22", "-\n[::1]\n22", ".\n22\n-",
		"-\n:0", ":1\n:2", "-\n\n22", "-\n[]\n1", "-\nhost\nssh", "a\n1\n-\nx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\n")
		if len(args) > 5 {
			return
		}
		src, dst, err := ParseEnds(args)
		if err != nil {
			return
		}
		for _, e := range []End{src, dst} {
			if e.Kind != Stdio && (e.Endpoint.Port < 1 || e.Endpoint.Port > 65535) {
				t.Fatalf("ParseEnds(%q): port %d out of range", args, e.Endpoint.Port)
			}
			if e.Least != (e.Kind == Connect && e.Endpoint.Host == ".") {
				t.Fatalf("ParseEnds(%q): %+v has Least wrong", args, e)
			}
			if e.Kind == Connect && (e.Endpoint.Host == "" || strings.ContainsAny(e.Endpoint.Host, "[] \t\n")) {
				t.Fatalf("ParseEnds(%q): host %q accepted", args, e.Endpoint.Host)
			}
		}
		if src.Network() && dst.Network() {
			t.Fatalf("ParseEnds(%q): two network ends accepted", args)
		}
		again := slices.Concat(words(src), words(dst))
		src2, dst2, err := ParseEnds(again)
		if err != nil || src2 != src || dst2 != dst {
			t.Fatalf("ParseEnds(%q) = %+v, %+v; rendered %q parses as %+v, %+v, %v", args, src, dst, again, src2, dst2, err)
		}
	})
}
