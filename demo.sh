#!/usr/bin/env bash
# demo.sh: build the five tools into ./bin and run one real job end to end on loopback:
# a receiver (tcppipe :PORT -), a port forwarder in front of it (tcp-pf), and a sender
# (tcppipe - HOST PORT) that pushes 32 MiB of random bytes through tcp-pf at 16 MiB/s.
# It checks that what arrived has the SHA-256 of what was sent, shows tcp-pf's log, and
# stops tcp-pf with SIGTERM. Every wait is bounded, and every process it started is
# stopped on any exit. Exit status 0: the bytes arrived intact.
#
#   ./demo.sh        (Linux and Go; no root, nothing beyond loopback)
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"

mib=32    # bytes to send, in MiB
rate=16m  # -l takes rates as pv's -L does: 16m, 16M, 16MiB, 1.5M
work=$(mktemp -d "${TMPDIR:-/tmp}/shd-demo.XXXXXX")
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say() { printf '\n== %s\n' "$*"; }
fail() { echo "demo.sh: $*" >&2; exit 1; }

# listening PORT: whether a socket listens on PORT (any address, IPv4 or IPv6), read from
# /proc so that the check does not take the one connection tcppipe accepts.
listening() {
	awk -v p="$(printf '%04X' "$1")" '{ split($2, a, ":") } a[2] == p && $4 == "0A" { found = 1 }
		END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# start NAME: start run_NAME PORT in the background (it must exec the tool, so that $! is
# the tool's pid) with stderr to $work/NAME.log, and wait up to 5 s until ready_NAME PORT
# holds. A port that turns out to be taken gets another try on a new one. Sets port, pid.
start() {
	local name=$1
	for _ in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 12000)) # below the usual ephemeral range
		"run_$name" "$port" 2>"$work/$name.log" &
		pid=$!
		pids+=("$pid")
		for _ in $(seq 100); do
			"ready_$name" "$port" && return 0
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.05
		done
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		grep -q 'address already in use' "$work/$name.log" || { cat "$work/$name.log" >&2; fail "$name did not start"; }
	done
	fail "$name: no free port after 5 tries"
}

# finish PID SECS: wait up to SECS for PID to exit, and return its exit status.
finish() {
	for _ in $(seq $(($2 * 20))); do
		kill -0 "$1" 2>/dev/null || { wait "$1"; return; }
		sleep 0.05
	done
	fail "pid $1 still running after $2 s"
}

say "go build -o bin/ ./cmd/...   (tcppipe, tcppipe-least, tcp-pf, listentwo, connecttwo)"
go build -o bin/ ./cmd/...
ls bin

say "$mib MiB of random bytes, and their SHA-256"
head -c "$((mib << 20))" /dev/urandom >"$work/in"
want=$(sha256sum <"$work/in" | cut -d' ' -f1)
echo "$want"

say "receiver: bin/tcppipe :PORT - > out"
run_receiver() { exec bin/tcppipe ":$1" - >"$work/out"; }
ready_receiver() { listening "$1"; }
start receiver
receiver=$pid receiver_port=$port
echo "listening on port $port"

say "forwarder: bin/tcp-pf -s 127.0.0.1:PORT -d 127.0.0.1:$receiver_port"
run_pf() { exec bin/tcp-pf -s "127.0.0.1:$1" -d "127.0.0.1:$receiver_port"; }
ready_pf() { grep -q ' listening on ' "$work/pf.log"; }
start pf
pf=$pid pf_port=$port
cat "$work/pf.log"

say "sender: bin/tcppipe -p -l $rate - 127.0.0.1 $pf_port < in"
timeout 60 bin/tcppipe -p -l "$rate" - 127.0.0.1 "$pf_port" <"$work/in" 2>&1 || fail "the sender failed (exit $?)"
finish "$receiver" 30 || fail "the receiver failed (exit $?)"

say "SHA-256 of what arrived"
got=$(sha256sum <"$work/out" | cut -d' ' -f1)
echo "$got"
[ "$got" = "$want" ] || fail "what arrived differs from what was sent"

say "tcp-pf's log, after SIGTERM"
kill -TERM "$pf"
finish "$pf" 10 || fail "tcp-pf exited $? after SIGTERM"
cat "$work/pf.log"

say "ok: $mib MiB went through tcp-pf, byte for byte"
