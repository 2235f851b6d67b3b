#!/usr/bin/env bash
# bench/kv.sh: a small-request workload (a key-value store's clients) through tcp-pf,
# against HAProxy and no relay, on this machine's loopback.
#
# Usage: bench/kv.sh [-r ROUNDS] [-n REQUESTS] [-c CLIENTS] [-P PIPELINE] [--no-install]
#                    [--against BIN] [--only RELAY,...]
#
#   -r ROUNDS     interleaved rounds (default 5); medians and per-round ratios over them
#   -n REQUESTS   requests of each test (SET, GET) per run, plain (default 50000); the
#                 pipelined runs make PIPELINE times as many
#   -c CLIENTS    kept-alive client connections (default 50)
#   -P PIPELINE   requests in flight per connection in the pipelined runs (default 16)
#   --no-install  do not apt-get missing peers, even as root
#   --against BIN also run BIN, another tcp-pf (built from an earlier commit, say), as
#                 relay "against"; its ratios are reported
#   --only LIST   run only these relays (comma-separated; "direct" is always run)
#
# redis-benchmark drives a redis-server that the script starts on loopback (no
# persistence), through each relay: direct (none), tcp-pf, HAProxy in tcp mode with
# option splice-auto (haproxy) and with splice forced (haproxy-splice), as bench/relay.sh
# runs them. Missing peers (redis-server, redis-benchmark, haproxy) are installed with
# apt-get when running as root, and skipped (and said so) otherwise; without redis the
# script has nothing to measure and exits 0 saying so. Besides the rates it reports the
# CPU time per 1,000 requests of each relay, of redis-server and of redis-benchmark. Every
# run is bounded with timeout(1); the default run takes about 3 minutes.
set -euo pipefail

rounds=5 requests=50000 clients=50 pipeline=16 install=1 against="" only=""
while [ $# -gt 0 ]; do
	case $1 in
	-r) rounds=$2; shift 2 ;;
	-n) requests=$2; shift 2 ;;
	-c) clients=$2; shift 2 ;;
	-P) pipeline=$2; shift 2 ;;
	--no-install) install=0; shift ;;
	--against) against=$(realpath "$2"); shift 2 ;;
	--only) only=",$2,"; shift 2 ;;
	-h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "kv.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=bench/haproxy.sh
. "$(dirname "$0")/haproxy.sh"
PATH=$PATH:/usr/sbin

# Peers: the Debian packages redis-server (with redis-benchmark in redis-tools) and haproxy.
missing=()
have redis-server || missing+=(redis-server)
have redis-benchmark || missing+=(redis-tools)
have haproxy || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ] && [ $install = 1 ] && have apt-get; then
		say "installing ${missing[*]} with apt-get"
		timeout 300 apt-get update -qq >/dev/null 2>&1 || true
		DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
			say "apt-get install failed; the missing peers are skipped"
	else
		say "not installing ${missing[*]} (not root, --no-install or no apt-get): skipped"
	fi
fi
if ! have redis-server || ! have redis-benchmark; then
	say "kv.sh: redis-server and redis-benchmark are needed and not installed: nothing measured"
	exit 0
fi

say "building tcp-pf"
(cd "$top" && go build -o "$work/" ./cmd/tcp-pf)

# Ports below the ephemeral range, as in bench/relay.sh: other jobs' clients hold ports
# in it at random.
low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
base=$((10000 + RANDOM % (low > 10100 ? low - 10100 : 1)))
be=$base
port_of() {
	case $1 in direct) echo $be ;; tcp-pf) echo $((base + 1)) ;; haproxy) echo $((base + 2)) ;;
	haproxy-splice) echo $((base + 3)) ;; against) echo $((base + 4)) ;; esac
}

declare -A pid_of
start_relay() {
	local name=$1 p
	p=$(port_of "$name")
	case $name in
	direct)
		redis-server --port "$be" --bind 127.0.0.1 --save '' --appendonly no --protected-mode no \
			--logfile "$work/redis.log" --dir "$work" & ;;
	tcp-pf) "$work/tcp-pf" -s 127.0.0.1:$p -d 127.0.0.1:$be 2>>"$work/tcp-pf.log" & ;;
	against) "$against" -s 127.0.0.1:$p -d 127.0.0.1:$be 2>>"$work/against.log" & ;;
	haproxy | haproxy-splice)
		# As bench/relay.sh: splice-auto, and splice forced both ways (bench/haproxy.sh).
		local kind=auto
		[ "$name" = haproxy-splice ] && kind=splice
		haproxy_cfg "$kind" "$p" "$be" >"$work/$name.cfg"
		haproxy -db -f "$work/$name.cfg" 2>>"$work/haproxy.log" & ;;
	esac
	pid_of[$name]=$!
	pids+=($!)
	wait_port "$p"
}

relays=(direct tcp-pf)
if have haproxy; then relays+=(haproxy haproxy-splice); else say "haproxy not installed: skipped"; fi
[ -n "$against" ] && relays+=(against)
if [ -n "$only" ]; then
	kept=(direct)
	for r in "${relays[@]}"; do [[ $only == *",$r,"* ]] && kept+=("$r"); done
	relays=("${kept[@]}")
fi
for r in "${relays[@]}"; do start_relay "$r"; done

results=$work/results.tsv # round relay metric value
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# per_k TICKS N: clock ticks as µs per 1,000 of N requests
per_k() { awk -v t="$1" -v hz="$hz" -v n="$2" 'BEGIN {printf "%.0f", t * 1e6 / hz / n * 1000}'; }
# bench RELAY MODE N ARGS...: one redis-benchmark run of SET and GET; records each rate,
# and the CPU time per 1,000 requests of the relay, of redis-server and of redis-benchmark
# (what the three spend decides the rate when they share the machine's cores).
bench() {
	local r=$1 mode=$2 n=$3 t0=0 t1 s0 s1 c0 c1 out
	shift 3
	[ "$r" != direct ] && t0=$(cpu_ticks "${pid_of[$r]}")
	s0=$(cpu_ticks "${pid_of[direct]}")
	c0=$(awk '{print $16 + $17}' /proc/$$/stat) # this shell's waited-for children
	out=$(timeout 300 redis-benchmark -h 127.0.0.1 -p "$(port_of "$r")" -c "$clients" -n "$n" -t set,get --csv "$@") ||
		{ say "$r: $mode run failed"; return 0; }
	c1=$(awk '{print $16 + $17}' /proc/$$/stat)
	s1=$(cpu_ticks "${pid_of[direct]}")
	printf '%s\t%s\t%sredis\t%s\n' "$round" "$r" "$mode" "$(per_k $((s1 - s0)) $((2 * n)))" >>"$results"
	printf '%s\t%s\t%sclient\t%s\n' "$round" "$r" "$mode" "$(per_k $((c1 - c0)) $((2 * n)))" >>"$results"
	awk -F'"' -v R="$round" -v r="$r" -v m="$mode" '$2 == "SET" || $2 == "GET" {printf "%s\t%s\t%s%s\t%s\n", R, r, m, tolower($2), $4}' <<<"$out" >>"$results"
	if [ "$r" != direct ]; then
		t1=$(cpu_ticks "${pid_of[$r]}")
		printf '%s\t%s\t%scpu\t%s\n' "$round" "$r" "$mode" "$(per_k $((t1 - t0)) $((2 * n)))" >>"$results"
	fi
}
say "measuring: $rounds rounds over: ${relays[*]}; $clients clients, $requests requests plain, $((requests * pipeline)) pipelined by $pipeline"
for round in $(seq "$rounds"); do
	n=${#relays[@]}
	for i in $(seq 0 $((n - 1))); do
		r=${relays[$(((i + round) % n))]}
		bench "$r" plain "$requests"
		bench "$r" piped $((requests * pipeline)) -P "$pipeline"
	done
	say "round $round done (load average $(cut -d' ' -f1 /proc/loadavg))"
done

echo
echo "Machine: $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(redis-server --version | awk '{print $3}' | tr -d v=); $rounds rounds, $clients clients, medians"
echo
echo "| relay | plain SET/s | plain GET/s | pipelined ($pipeline) SET/s | GET/s | relay CPU µs per 1,000 requests: plain | pipelined | redis-server: plain | pipelined | redis-benchmark: plain | pipelined |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in "${relays[@]}"; do
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$r" "$(val "$r" plainset)" "$(val "$r" plainget)" \
		"$(val "$r" pipedset)" "$(val "$r" pipedget)" "$(val "$r" plaincpu)" "$(val "$r" pipedcpu)" \
		"$(val "$r" plainredis)" "$(val "$r" pipedredis)" "$(val "$r" plainclient)" "$(val "$r" pipedclient)"
done
echo
for o in haproxy haproxy-splice against direct; do
	awk -F'\t' -v r="$o" '$2 == r {f = 1} END {exit !f}' "$results" || continue
	echo "tcp-pf / $o, median of per-round ratios: plain SET $(ratio "$o" plainset), GET $(ratio "$o" plainget); pipelined SET $(ratio "$o" pipedset), GET $(ratio "$o" pipedget); CPU per request plain $(ratio "$o" plaincpu), pipelined $(ratio "$o" pipedcpu)"
done
exit 0
