#!/usr/bin/env bash
# bench/pipe.sh: throughput, peak memory and rate-limit accuracy of tcppipe over loopback,
# against a plain socket copy (bench/pipebench), socat and ncat with their defaults, pv in
# the middle of an ncat pipe, and iperf3 (memory to memory, for reference).
#
# Usage: bench/pipe.sh [-n ROUNDS] [-s SIZE_MIB] [-t RATE_SECS] [-k]
#   -n ROUNDS     interleaved throughput rounds (default 9)
#   -s SIZE_MIB   size of the random test file in MiB (default 1024)
#   -t RATE_SECS  length of each rate-limit run in seconds (default 8.5)
#   -k            keep the work directory (data, raw results) and print its path
#
# Needs Linux, bash, Go, awk and coreutils; every process is killed after 300 s should
# anything hang. Run as root, missing peers (socat, ncat, pv, iperf3, and
# GNU time for peak RSS) are installed with apt-get; otherwise their rows are skipped with
# a note. The default run takes about two minutes. Results go to stdout as Markdown;
# progress notes go to stderr.
set -euo pipefail

ROUNDS=9 SIZE_MIB=1024 RATE_SECS=8.5 KEEP=0
while getopts n:s:t:kh opt; do
	case $opt in
	n) ROUNDS=$OPTARG ;;
	s) SIZE_MIB=$OPTARG ;;
	t) RATE_SECS=$OPTARG ;;
	k) KEEP=1 ;;
	*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
	esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pipebench.XXXXXX")
cleanup() {
	# Only what this script started: the jobs of this shell.
	local p
	for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
	if [ "$KEEP" = 1 ]; then echo "# work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

note() { echo "# $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---- peers ---------------------------------------------------------------------------
missing=()
have socat || missing+=(socat)
have ncat || missing+=(ncat)
have pv || missing+=(pv)
have iperf3 || missing+=(iperf3)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && have apt-get; then
		note "installing ${missing[*]} with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } ||
			note "apt-get could not install all of: ${missing[*]}"
	else
		note "not root (or no apt-get): rows needing ${missing[*]} are skipped"
	fi
fi
TIME=""
if [ -x /usr/bin/time ] && /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then TIME=/usr/bin/time; else note "no GNU time: peak RSS not measured"; fi

# ---- build and data -------------------------------------------------------------------
note "building tcppipe and pipebench"
(cd "$ROOT" && go build -o "$WORK/tcppipe" ./cmd/tcppipe && go build -o "$WORK/pipebench" ./bench/pipebench)
TP=$WORK/tcppipe PB=$WORK/pipebench DATA=$WORK/data
SIZE=$((SIZE_MIB * 1048576))
note "writing ${SIZE_MIB} MiB of random data"
head -c "$SIZE" /dev/urandom >"$DATA"
cat "$DATA" >/dev/null # into the page cache, for every contender alike

# ---- helpers --------------------------------------------------------------------------
PORT=$((20000 + RANDOM % 10000))
# listening PORT: a socket listens on PORT. Asked without connecting to it (that would use
# up a tcppipe's single accept): with ss, which gets only listening sockets from the
# kernel, or else from /proc/net, which lists every connection and is slow on a busy box.
if have ss; then
	listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
else
	listening() {
		awk -v p="$(printf ':%04X' "$1")" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
			/proc/net/tcp /proc/net/tcp6 2>/dev/null
	}
fi
# next_port: set PORT to a port nothing listens on.
next_port() {
	local i
	for i in $(seq 200); do
		PORT=$((PORT >= 32000 ? 20000 : PORT + 1))
		listening "$PORT" || return 0
	done
	echo "no free port" >&2
	exit 1
}
# wait_listen PORT PID: wait (10 s at most) until PORT listens, or fail if PID is gone.
wait_listen() {
	local i
	for i in $(seq 2000); do
		listening "$1" && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.005
	done
	return 1
}
# rss FILE CMD...: run CMD (killed after TMO seconds), writing "peak-RSS-KiB system-secs
# user-secs" to FILE when GNU time is there.
TMO=300
rss() {
	local f=$1
	shift
	if [ -n "$TIME" ]; then "$TIME" -f "%M %S %U" -o "$f" timeout "$TMO" "$@"; else timeout "$TMO" "$@"; fi
}
now() { date +%s%N; }

# Each contender is a receiver (listens on $1, writes to /dev/null) and a sender (sends
# $DATA to 127.0.0.1:$1). $2 is a file prefix for peak RSS.
recv_direct() { rss "$2.recv" "$PB" recv "$1" >/dev/null; }
send_direct() { rss "$2.send" "$PB" send "$DATA" 127.0.0.1 "$1"; }
recv_tcppipe() { rss "$2.recv" "$TP" ":$1" - >/dev/null; }
send_tcppipe() { rss "$2.send" "$TP" - 127.0.0.1 "$1" <"$DATA"; }
recv_tcppipe_l() { recv_tcppipe "$@"; }
send_tcppipe_l() { rss "$2.send" "$TP" -l 64G - 127.0.0.1 "$1" <"$DATA"; }
recv_socat() { rss "$2.recv" socat -u "TCP-LISTEN:$1,bind=127.0.0.1,reuseaddr" STDOUT >/dev/null; }
send_socat() { rss "$2.send" socat -u "OPEN:$DATA" "TCP:127.0.0.1:$1"; }
recv_ncat() { rss "$2.recv" ncat -l --recv-only 127.0.0.1 "$1" >/dev/null; }
send_ncat() { rss "$2.send" ncat --send-only 127.0.0.1 "$1" <"$DATA"; }
recv_pv() { recv_ncat "$@"; }
send_pv() { rss "$2.pv" pv -q "$DATA" | rss "$2.send" ncat --send-only 127.0.0.1 "$1"; }
SINKNICE=()
[ "$(id -u)" = 0 ] && SINKNICE=(nice -n -10) # a busy machine delays the timestamping sink less
recv_iperf3() { rss "$2.recv" iperf3 -s -1 -p "$1" >/dev/null 2>&1; }
send_iperf3() { rss "$2.send" iperf3 -c 127.0.0.1 -p "$1" -n "$SIZE" >/dev/null; }

declare -A LABEL=(
	[direct]="plain socket copy (pipebench: sendfile -> splice)"
	[tcppipe]="tcppipe -> tcppipe"
	[tcppipe_l]="tcppipe -l 64G -> tcppipe"
	[socat]="socat -u -> socat -u (defaults)"
	[ncat]="ncat --send-only -> ncat -l"
	[pv]="pv \\| ncat -> ncat -l"
	[iperf3]="iperf3 -n (memory to memory, reference)"
)
CASES=(direct tcppipe tcppipe_l)
have socat && CASES+=(socat)
have ncat && CASES+=(ncat)
have ncat && have pv && CASES+=(pv)
have iperf3 && CASES+=(iperf3)
for c in socat ncat pv iperf3; do
	[[ " ${CASES[*]} " == *" $c "* ]] || note "skipping $c: not installed"
done

# run_once CASE ROUND: one transfer; appends "CASE ROUND NANOSECONDS" to results.
run_once() {
	local c=$1 r=$2 rp t0 t1
	next_port
	"recv_$c" "$PORT" "$WORK/rss.$c.$r" &
	rp=$!
	wait_listen "$PORT" "$rp" || { echo "$c: receiver did not listen" >&2; exit 1; }
	t0=$(now)
	"send_$c" "$PORT" "$WORK/rss.$c.$r"
	wait "$rp"
	t1=$(now)
	echo "$c $r $((t1 - t0))" >>"$WORK/results"
}

# ---- throughput -----------------------------------------------------------------------
note "throughput: ${#CASES[@]} contenders x $ROUNDS rounds, interleaved"
: >"$WORK/results"
for r in $(seq "$ROUNDS"); do
	n=${#CASES[@]}
	for i in $(seq 0 $((n - 1))); do # a different order each round
		run_once "${CASES[$(((i + r) % n))]}" "$r"
	done
done

# ---- rate limit -----------------------------------------------------------------------
RATES=(1048576 33554432)
: >"$WORK/rates"
for rate in "${RATES[@]}"; do
	rsize=$(awk -v r="$rate" -v s="$RATE_SECS" 'BEGIN { printf "%d", r * s }')
	rfile=$WORK/rate.$rate
	if [ "$rsize" -le "$SIZE" ]; then head -c "$rsize" "$DATA" >"$rfile"; else head -c "$rsize" /dev/urandom >"$rfile"; fi
	for lim in tcppipe pv; do
		[ "$lim" = pv ] && ! have pv && continue
		note "rate: $lim at $rate B/s for ${RATE_SECS} s"
		next_port
		"${SINKNICE[@]}" timeout "$TMO" "$PB" sink "$PORT" "$rate" >"$WORK/sink" &
		sp=$!
		wait_listen "$PORT" "$sp" || { echo "sink did not listen" >&2; exit 1; }
		if [ "$lim" = tcppipe ]; then
			rss "$WORK/rss.rate.$rate" "$TP" -l "$rate" - 127.0.0.1 "$PORT" <"$rfile"
		else
			timeout "$TMO" pv -q -L "$rate" "$rfile" | timeout "$TMO" "$TP" - 127.0.0.1 "$PORT"
		fi
		wait "$sp"
		echo "$lim $rate $(cat "$WORK/sink")" >>"$WORK/rates"
	done
done

# ---- report ---------------------------------------------------------------------------
# Sorting and medians for any awk (mawk has no asort): v[1..n].
AWKSORT='function sort(v, n,   i, j, t) { for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j > 0 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t } }
function median(v, n) { return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }
'
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
peak() { # peak RSS in MiB over the files matching a glob, or "-"
	local m
	m=$(cat $1 2>/dev/null | awk '{ print $1 }' | sort -n | tail -1)
	if [ -n "$m" ]; then mib "$m"; else echo -; fi
}
cpu() { # median over rounds of the CPU seconds per GiB of every process of contender $1
	[ -n "$TIME" ] || { echo -; return; }
	local r
	for r in $(seq "$ROUNDS"); do
		cat "$WORK/rss.$1.$r".* 2>/dev/null | awk -v r="$r" '{ s += $2 + $3 } END { print r, s }'
	done | awk -v size="$SIZE" "$AWKSORT"'{ v[++n] = $2 / (size / 1073741824) } END { sort(v, n); printf "%.2f", median(v, n) }'
}
echo "## tcppipe benchmark"
echo
echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr), $(go version | awk '{ print $3 }')."
echo "Command: \`bench/pipe.sh -n $ROUNDS -s $SIZE_MIB -t $RATE_SECS\`"
echo
echo "### Throughput: ${SIZE_MIB} MiB file -> sender -> loopback TCP -> receiver -> /dev/null, $ROUNDS interleaved rounds"
echo
echo "| contender | median MiB/s | min | max | CPU s/GiB, all processes (median) | peak RSS send / recv (MiB) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for c in "${CASES[@]}"; do
	stats=$(awk -v c="$c" -v size="$SIZE" "$AWKSORT"'$1 == c { v[++n] = size / 1048576 / ($3 / 1e9) }
		END { sort(v, n); printf "%.0f | %.0f | %.0f", median(v, n), v[1], v[n] }' "$WORK/results")
	echo "| ${LABEL[$c]} | $stats | $(cpu "$c") | $(peak "$WORK/rss.$c.*.send") / $(peak "$WORK/rss.$c.*.recv") |"
done
echo
ratio() { # ratio A B: per-round throughput of A over B, and their median
	awk -v a="$1" -v b="$2" "$AWKSORT"'$1 == a { x[$2] = $3 } $1 == b { y[$2] = $3 }
		END { for (r in x) if (r in y) v[++n] = y[r] / x[r]
			sort(v, n); for (i = 1; i <= n; i++) s = s sprintf("%.2f ", v[i]); printf "%s| %.2f", s, median(v, n) }' "$WORK/results"
}
echo "| ratio | per round (sorted) | median | goal |"
echo "| --- | --- | ---: | --- |"
echo "| tcppipe / plain socket copy | $(ratio tcppipe direct) | >= 0.9 |"
[[ " ${CASES[*]} " == *" socat "* ]] && echo "| tcppipe / socat defaults | $(ratio tcppipe socat) | >= 2 |"
[[ " ${CASES[*]} " == *" ncat "* ]] && echo "| tcppipe / ncat | $(ratio tcppipe ncat) | |"
[[ " ${CASES[*]} " == *" pv "* ]] && echo "| tcppipe / pv in an ncat pipe | $(ratio tcppipe pv) | |"
echo
echo "### Rate limit: sender -> loopback -> timestamping sink (bench/pipebench sink), ${RATE_SECS} s per run"
echo
echo "| limiter | rate | bytes | slope error | largest 100 ms window / share | largest 1 s window / (1.05 x rate + 64 KiB) | peak RSS (MiB) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
while read -r lim rate rest; do
	eval "$rest" # bytes= secs= avg= slope_err= win100_ratio= win1s= win1s_bound= win1s_ratio= reads= unstamped=
	name="tcppipe -l $rate"
	r=-
	if [ "$lim" = pv ]; then name="pv -L $rate \\| tcppipe"; else r=$(peak "$WORK/rss.rate.$rate"); fi
	echo "| $name | $(awk -v r="$rate" 'BEGIN { printf "%g MiB/s", r / 1048576 }') | $bytes | ${slope_err}% | $win100_ratio | $win1s_ratio ($win1s B) | $r |"
done <"$WORK/rates"
echo
echo "Goals: tcppipe >= 0.9 x the plain socket copy and >= 2 x socat's defaults; peak RSS under about 15 MiB;"
echo "with -l, slope error within 3%, largest 100 ms window <= 1.2 x its share, largest 1 s window ratio <= 1."
echo "Arrival times are the kernel's receive timestamps (SO_TIMESTAMPNS) of 16 KiB reads."
