#!/usr/bin/env bash
# bench/iperf3.sh: one bulk TCP stream, measured by iperf3 (not our own load generator),
# through tcp-pf and through HAProxy in tcp mode, on this machine's loopback.
#
# Usage: bench/iperf3.sh [-r ROUNDS] [-t SECS]
#
#   -r ROUNDS  interleaved rounds (default 5); the order of the relays rotates each round
#   -t SECS    length of each iperf3 run (default 3)
#
# Relays, each in front of one iperf3 server:
#   direct          no relay
#   tcp-pf          tcp-pf -s 127.0.0.1:P -d 127.0.0.1:B (its defaults)
#   haproxy-plain   HAProxy, "mode tcp" and no splice option: its default behaviour
#   haproxy-splice  the same with option splice-request, option splice-response and
#                   tune.pipesize 1048576: HAProxy's best bulk figure
#   (both with maxconn and tune.maxpollevents raised, as in bench/relay.sh: see
#   bench/haproxy.sh, which writes every HAProxy configuration the benchmarks use)
# Prints every run's MiB/s (what iperf3's receiver counted), the medians, and the median
# of tcp-pf's per-round ratios to each HAProxy. Needs iperf3 and haproxy; every run is
# bounded with timeout(1), and every process started is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/haproxy.sh
rounds=5 secs=3
while [ $# -gt 0 ]; do
	case $1 in
	-r) rounds=$2; shift 2 ;;
	-t) secs=$2; shift 2 ;;
	-h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench/iperf3.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
for tool in iperf3 haproxy python3; do
	command -v $tool >/dev/null || { echo "bench/iperf3.sh: needs $tool (Debian package $tool)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/iperf3-bench.XXXXXX")
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

base=$((21000 + RANDOM % 8000))
be=$base
declare -A port=([direct]=$be [tcp-pf]=$((base + 1)) [haproxy-plain]=$((base + 2)) [haproxy-splice]=$((base + 3)))
relays=(direct tcp-pf haproxy-plain haproxy-splice)

wait_port() {
	for _ in $(seq 200); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "bench/iperf3.sh: nothing listens on port $1 after 10 s" >&2
	exit 1
}

go build -o "$work/tcp-pf" ./cmd/tcp-pf
# iperf3 -s serves one test at a time, so the probes of wait_port come before any run.
iperf3 -s -p "$be" >"$work/iperf3-server.log" 2>&1 &
pids+=($!)
wait_port "$be"
"$work/tcp-pf" -s "127.0.0.1:${port[tcp-pf]}" -d "127.0.0.1:$be" 2>"$work/tcp-pf.log" &
pids+=($!)
for name in haproxy-plain haproxy-splice; do
	haproxy_cfg "${name#haproxy-}" "${port[$name]}" "$be" >"$work/$name.cfg"
	haproxy -db -f "$work/$name.cfg" 2>"$work/$name.log" &
	pids+=($!)
done
for name in tcp-pf haproxy-plain haproxy-splice; do wait_port "${port[$name]}"; done
sleep 0.5 # the probes' connections, relayed to iperf3, are gone before the first run

echo "one stream, iperf3 -t $secs, $rounds interleaved rounds; MiB/s received"
for r in $(seq "$rounds"); do
	order=("${relays[@]:$(((r - 1) % 4))}" "${relays[@]:0:$(((r - 1) % 4))}")
	for name in "${order[@]}"; do
		mibs=$(timeout $((secs + 20)) iperf3 -c 127.0.0.1 -p "${port[$name]}" -t "$secs" -J |
			python3 -c 'import json, sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8 / 1048576))')
		echo "$r $name $mibs" >>"$work/results"
		printf 'round %d  %-15s %8s MiB/s\n' "$r" "$name" "$mibs"
	done
done

python3 - "$work/results" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r, name, v = line.split()
    runs.setdefault(name, {})[r] = float(v)
print()
for name, by in runs.items():
    print(f"{name:15s} median {statistics.median(by.values()):8.1f} MiB/s")
for peer in ("haproxy-plain", "haproxy-splice"):
    ratios = [runs["tcp-pf"][r] / runs[peer][r] for r in runs["tcp-pf"] if runs[peer].get(r)]
    print(f"tcp-pf / {peer}, median of per-round ratios: {statistics.median(ratios):.2f} "
          f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
EOF
