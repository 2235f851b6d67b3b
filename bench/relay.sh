#!/usr/bin/env bash
# bench/relay.sh: tcp-pf against other TCP relays on this machine's loopback.
#
# Usage: bench/relay.sh [-r ROUNDS] [-t SECS] [-n IDLE] [--soak [N]] [--no-install]
#                       [--against BIN] [--against-args ARGS] [--scrape PORT]
#                       [--only RELAY,...] [--host-file N]
#
#   -r ROUNDS    interleaved rounds (default 3); medians and per-round ratios over them
#   -t SECS      length of each throughput and connection-rate run (default 2)
#   -n IDLE      idle connections for the memory figure (default 1000)
#   --soak [N]   also hold N (default 10000) connections through tcp-pf and check that
#                every one still echoes afterwards
#   --no-install do not apt-get missing peers, even as root
#   --against BIN also run BIN, another tcp-pf (built from an earlier commit, say), as
#                relay "against", with tcp-pf's arguments; its ratios are reported
#   --against-args ARGS  more arguments for BIN (one word list), e.g. "--metrics 9419":
#                with BIN the same tcp-pf, its ratios are what those options cost
#   --scrape PORT  fetch http://127.0.0.1:PORT/metrics once a second while measuring,
#                as a Prometheus would (more often than its default 15 s)
#   --only LIST  run only these relays (comma-separated; "direct" is always run)
#   --host-file N  run tcp-pf (and BIN) with -l: a host file of N entries, the backend
#                at 0 bytes in the middle, the others unused addresses with more bytes
#
# Relays: direct (no relay), tcp-pf, HAProxy in tcp mode twice (option splice-auto, and
# splice forced with 1 MiB pipes), socat, rinetd, relayfwd (a plain Go io.Copy
# forwarder, the floor) and epollfwd (a bare epoll loop per CPU with none of tcp-pf's
# features: what an event loop in Go costs by itself). A missing peer is installed with
# apt-get when running as root, and skipped (and said so) otherwise. Every run is bounded
# with timeout(1); the default run takes about 6 minutes.
set -euo pipefail

rounds=3 secs=2 idle_n=1000 soak=0 install=1 against="" against_args="" scrape="" only="" hosts_n=0
while [ $# -gt 0 ]; do
	case $1 in
	-r) rounds=$2; shift 2 ;;
	-t) secs=$2; shift 2 ;;
	-n) idle_n=$2; shift 2 ;;
	--soak)
		soak=10000; shift
		if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then soak=$1; shift; fi ;;
	--no-install) install=0; shift ;;
	--against) against=$(realpath "$2"); shift 2 ;;
	--against-args) against_args=$2; shift 2 ;;
	--scrape) scrape=$2; shift 2 ;;
	--only) only=",$2,"; shift 2 ;;
	--host-file) hosts_n=$2; shift 2 ;;
	-h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "relay.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
# shellcheck source=bench/haproxy.sh
. "$(dirname "$0")/haproxy.sh"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

# Peers.
want=(haproxy socat rinetd)
missing=()
for p in "${want[@]}"; do command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && [ $install = 1 ] && command -v apt-get >/dev/null; then
		say "installing ${missing[*]} with apt-get"
		timeout 300 apt-get update -qq >/dev/null 2>&1 || true
		DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
			say "apt-get install failed; the missing peers are skipped"
	else
		say "not installing ${missing[*]} (not root, --no-install or no apt-get): skipped"
	fi
fi
PATH=$PATH:/usr/sbin

# Our binaries.
say "building tcp-pf, relayload and relayfwd"
(cd "$top" && go build -o "$work/" ./cmd/tcp-pf ./bench/relayload ./bench/relayfwd ./bench/epollfwd)
load=$work/relayload

# More descriptors, when allowed: 1,000 idle connections need about 6,000 in tcp-pf.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Ports below the ephemeral range: there, the clients of other jobs on the machine hold
# ports at random, and a listener failed with "address already in use".
low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
base=$((10000 + RANDOM % (low > 10100 ? low - 10100 : 1)))
be=$base
port_of() { # the listening port of each relay
	case $1 in direct) echo $be ;; tcp-pf) echo $((base + 1)) ;; haproxy) echo $((base + 2)) ;;
	socat) echo $((base + 3)) ;; rinetd) echo $((base + 4)) ;; relayfwd) echo $((base + 5)) ;;
	haproxy-splice) echo $((base + 6)) ;; epollfwd) echo $((base + 7)) ;; against) echo $((base + 8)) ;; esac
}

pf_dest() { # the destination arguments of tcp-pf and against ($1): -d, or -l FILE
	if [ "$hosts_n" -gt 0 ]; then
		# A fresh copy for each start: a stopped relay wrote its counts to its own.
		awk -v n="$hosts_n" -v be="$be" 'BEGIN {
			for (i = 0; i < n - 1; i++) {
				if (i == int((n - 1) / 2)) print "127.0.0.1:" be, 0
				printf "198.51.%d.%d:%d 1000000000000\n", int(i / 250) % 250, i % 250 + 1, 1000 + int(i / 62500)
			}
			if (n == 1) print "127.0.0.1:" be, 0
		}' >"$work/$1.hosts"
		echo "-l $work/$1.hosts -p $be"
	else
		echo "-d 127.0.0.1:$be"
	fi
}

declare -A pid_of
start_relay() { # start relay $1 in the background and record its pid
	local name=$1 p
	p=$(port_of "$name")
	case $name in
	direct) return 0 ;;
	# shellcheck disable=SC2046 # pf_dest's words are meant to split
	tcp-pf) "$work/tcp-pf" -s 127.0.0.1:$p $(pf_dest tcp-pf) 2>>"$work/tcp-pf.log" & ;;
	# shellcheck disable=SC2046
	against) "$against" -s 127.0.0.1:$p $(pf_dest against) $against_args 2>>"$work/against.log" & ;;
	relayfwd) "$work/relayfwd" -l 127.0.0.1:$p -d 127.0.0.1:$be & ;;
	epollfwd) "$work/epollfwd" -l 127.0.0.1:$p -d 127.0.0.1:$be & ;;
	socat) socat TCP-LISTEN:$p,bind=127.0.0.1,fork,reuseaddr,backlog=4096 TCP:127.0.0.1:$be & ;;
	rinetd)
		printf '127.0.0.1 %s 127.0.0.1 %s\n' "$p" "$be" >"$work/rinetd.conf"
		rinetd -f -c "$work/rinetd.conf" & ;;
	haproxy | haproxy-splice)
		# haproxy: option splice-auto; haproxy-splice: splice forced (bench/haproxy.sh).
		local kind=auto
		[ "$name" = haproxy-splice ] && kind=splice
		haproxy_cfg $kind "$p" "$be" >"$work/$name.cfg"
		haproxy -db -f "$work/$name.cfg" 2>>"$work/haproxy.log" & ;;
	esac
	pid_of[$name]=$!
	pids+=($!)
	wait_port "$p"
}
stop_relay() {
	local p=${pid_of[$1]:-}
	[ -n "$p" ] || return 0
	kill "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	unset "pid_of[$1]"
}

# Memory of a relay: RSS and PSS (kB) of its process and its children (socat forks).
mem_kb() {
	local root=$1 p rss=0 pss=0 v
	for p in $root $(pgrep -P "$root" 2>/dev/null || true); do
		v=$(awk '/^VmRSS:/ {print $2}' /proc/$p/status 2>/dev/null || echo 0); rss=$((rss + ${v:-0}))
		v=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0); pss=$((pss + ${v:-0}))
	done
	echo "$rss $pss"
}

"$load" serve -l 127.0.0.1:$be &
pids+=($!)
wait_port $be

relays=(direct tcp-pf)
for p in haproxy socat rinetd; do
	if have "$p"; then relays+=("$p"); else say "$p not installed: skipped"; fi
done
have haproxy && relays+=(haproxy-splice)
relays+=(relayfwd epollfwd)
[ -n "$against" ] && relays+=(against)
if [ -n "$only" ]; then
	kept=(direct)
	for r in "${relays[@]}"; do [[ $only == *",$r,"* ]] && kept+=("$r"); done
	relays=("${kept[@]}")
fi
for r in "${relays[@]}"; do start_relay "$r"; done
if [ -n "$scrape" ]; then
	# Bounded like every other run: at most one fetch a second, each of at most 2 s.
	(while sleep 1; do timeout 2 curl -sf -o /dev/null "http://127.0.0.1:$scrape/metrics" || echo "scrape failed" >&2; done) &
	pids+=($!)
fi

results=$work/results.tsv # round relay metric value
run() { timeout $((secs * 3 + 30)) "$@"; }
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
# CPU time (user + system, clock ticks) of a relay's process and its children (socat forks).
cpu_ticks() {
	local root=$1 p t=0 v
	for p in $root $(pgrep -P "$root" 2>/dev/null || true); do
		v=$(awk '{print $14 + $15 + $16 + $17}' /proc/$p/stat 2>/dev/null || echo 0); t=$((t + ${v:-0}))
	done
	echo "$t"
}
hz=$(getconf CLK_TCK)
say "measuring: $rounds rounds of ${secs}s runs over: ${relays[*]}"
for round in $(seq "$rounds"); do
	# Rotate the order each round so that no relay always runs first or last.
	n=${#relays[@]}
	for i in $(seq 0 $((n - 1))); do
		r=${relays[$(((i + round) % n))]}
		addr=127.0.0.1:$(port_of "$r")
		out=$(run "$load" stream -c "$addr" -P 1 -t "$secs") || { say "$r: 1-stream failed"; continue; }
		printf '%s\t%s\t%s\t%s\n' "$round" "$r" s1 "$(field MiBps <<<"$out")" >>"$results"
		out=$(run "$load" stream -c "$addr" -P 4 -t "$secs") || { say "$r: 4-stream failed"; continue; }
		printf '%s\t%s\t%s\t%s\n' "$round" "$r" s4 "$(field MiBps <<<"$out")" >>"$results"
		t0=0; [ "$r" != direct ] && t0=$(cpu_ticks "${pid_of[$r]}")
		out=$(run "$load" cps -c "$addr" -P 8 -t "$secs") || { say "$r: cps failed"; continue; }
		for k in cps p50us p99us failures; do
			printf '%s\t%s\t%s\t%s\n' "$round" "$r" "$k" "$(field $k <<<"$out")" >>"$results"
		done
		if [ "$r" != direct ]; then # the relay's CPU time per short connection, in µs
			t1=$(cpu_ticks "${pid_of[$r]}")
			printf '%s\t%s\t%s\t%s\n' "$round" "$r" cpuus \
				"$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$(field conns <<<"$out")" 'BEGIN {if (n > 0) printf "%.0f", t * 1e6 / hz / n}')" >>"$results"
		fi
		# Short connections while 2 bulk streams go through the same relay: does bulk
		# traffic hold the others up? (one worker, so its latency is the relay's delay)
		run "$load" stream -c "$addr" -P 2 -t "$(awk -v s="$secs" 'BEGIN {print s + 1}')" >"$work/bulk.out" &
		bulk=$!
		sleep 0.5
		out=$(run "$load" cps -c "$addr" -P 1 -t "$secs") || { say "$r: cps under load failed"; wait $bulk || true; continue; }
		wait $bulk || say "$r: bulk streams under load failed"
		for k in p50us p99us failures; do
			printf '%s\t%s\t%s\t%s\n' "$round" "$r" "mixed$k" "$(field $k <<<"$out")" >>"$results"
		done
	done
	say "round $round done"
done

# Idle memory: a fresh relay, its memory before and while idle_n echo-checked connections
# are held; every connection must still echo at the end.
hold() { # hold $2 connections through relay $1; print "rss_before pss_before rss pss"
	local r=$1 n=$2 fifo=$work/hold.fifo out=$work/hold.out before during
	rm -f "$fifo"; mkfifo "$fifo"
	before=$(mem_kb "${pid_of[$r]}")
	timeout 300 "$load" idle -c 127.0.0.1:"$(port_of "$r")" -n "$n" <"$fifo" >"$out" &
	local lp=$!
	exec 4>"$fifo"
	for _ in $(seq 1200); do grep -q ready "$out" 2>/dev/null && break; kill -0 $lp 2>/dev/null || break; sleep 0.1; done
	sleep 1 # let the relay settle before reading its memory
	during=$(mem_kb "${pid_of[$r]}")
	exec 4>&-
	wait $lp || { say "$r: idle connections failed: $(cat "$out")"; echo "- - - -"; return; }
	grep -q "^ok $n" "$out" || { say "$r: connections lost"; echo "- - - -"; return; }
	echo "$before $during"
}
say "idle memory: $idle_n connections through each relay"
for r in "${relays[@]}"; do
	[ "$r" = direct ] && continue
	stop_relay "$r"; start_relay "$r"
	read -r rss0 pss0 rss1 pss1 < <(hold "$r" "$idle_n")
	if [ "$rss0" != - ]; then
		printf '%s\t%s\t%s\t%s\n' 0 "$r" rssdelta "$((rss1 - rss0))" >>"$results"
		printf '%s\t%s\t%s\t%s\n' 0 "$r" pssdelta "$((pss1 - pss0))" >>"$results"
		printf '%s\t%s\t%s\t%s\n' 0 "$r" rss "$rss1" >>"$results"
	fi
done

if [ "$soak" -gt 0 ] && [ "$(ulimit -n)" -lt $((soak * 2 + 100)) ]; then
	soak_line="$soak connections: skipped, it needs ulimit -n of at least $((soak * 2 + 100)) (each relayed connection holds 2 sockets in tcp-pf, and 2 more while bytes move) and this shell has $(ulimit -n)"
	say "soak: $soak_line"
elif [ "$soak" -gt 0 ]; then
	say "soak: $soak connections through a fresh tcp-pf"
	stop_relay tcp-pf; start_relay tcp-pf
	read -r rss0 pss0 rss1 pss1 < <(hold tcp-pf "$soak")
	if [ "$rss0" = - ]; then soak_line="$soak connections: FAILED (see above)"
	else soak_line="$soak connections held and all echoing afterwards; tcp-pf RSS $((rss1 / 1024)) MiB ($(((rss1 - rss0) * 1000 / soak / 1024)) MiB per 1,000)"; fi
fi

# Report.
echo
[ "$hosts_n" -gt 0 ] && echo "tcp-pf${against:+ and against} with -l: a host file of $hosts_n entries"
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr); ${rounds} rounds of ${secs} s; medians"
echo
echo "| relay | 1 stream MiB/s | 4 streams MiB/s | conn/s (8 at a time) | p50 µs | p99 µs | relay CPU µs per conn | beside 2 streams: p50 µs | p99 µs | RSS Δ per $idle_n idle (MiB) | PSS Δ (MiB) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in "${relays[@]}"; do
	rd=$(val "$r" rssdelta) pd=$(val "$r" pssdelta)
	[ "$rd" != - ] && rd=$(awk -v k="$rd" 'BEGIN {printf "%.1f", k / 1024}')
	[ "$pd" != - ] && pd=$(awk -v k="$pd" 'BEGIN {printf "%.1f", k / 1024}')
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$r" "$(val "$r" s1)" "$(val "$r" s4)" "$(val "$r" cps)" \
		"$(val "$r" p50us)" "$(val "$r" p99us)" "$(val "$r" cpuus)" "$(val "$r" mixedp50us)" "$(val "$r" mixedp99us)" "$rd" "$pd"
done
echo
ran() { awk -F'\t' -v r="$1" '$2 == r {f = 1} END {exit !f}' "$results"; }
for h in haproxy haproxy-splice; do # each that ran (--only may leave one out)
	ran $h || continue
	echo "tcp-pf / $h, median of per-round ratios: 1 stream $(ratio $h s1), 4 streams $(ratio $h s4), conn/s $(ratio $h cps), CPU per conn $(ratio $h cpuus)"
	ran against && echo "against / $h, median of per-round ratios: conn/s $(ratio $h cps against), CPU per conn $(ratio $h cpuus against)"
done
ran haproxy && ran epollfwd && echo "epollfwd (bare loop) / haproxy, median of per-round ratios: conn/s $(ratio haproxy cps epollfwd), CPU per conn $(ratio haproxy cpuus epollfwd)"
ran relayfwd && echo "tcp-pf / relayfwd (plain io.Copy), median of per-round ratios: 1 stream $(ratio relayfwd s1), 4 streams $(ratio relayfwd s4), conn/s $(ratio relayfwd cps), CPU per conn $(ratio relayfwd cpuus)"
ran epollfwd && echo "tcp-pf / epollfwd (bare epoll loops), median of per-round ratios: conn/s $(ratio epollfwd cps), CPU per conn $(ratio epollfwd cpuus)"
ran against && echo "tcp-pf / against ($against), median of per-round ratios: 1 stream $(ratio against s1), 4 streams $(ratio against s4), conn/s $(ratio against cps), CPU per conn $(ratio against cpuus), beside 2 streams p99 $(ratio against mixedp99us)"
fails=$(awk -F'\t' '$3 == "failures" || $3 == "mixedfailures" {s += $4} END {print s + 0}' "$results")
echo "failed short connections, all relays and rounds: $fails"
[ "$soak" -gt 0 ] && echo "soak: $soak_line"
exit 0
