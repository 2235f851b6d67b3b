#!/usr/bin/env bash
# bench/tunnel-chain.sh: the tunnel (listentwo + connecttwo, no hellos) against the same
# byte path built from two `tcp-pf --lazy` processes in a chain (client -> tcp-pf ->
# tcp-pf -> sink), on loopback: new clients per second and single-stream throughput as
# ratios to the chain in the same round (medians and lowest over the rounds), and the CPU
# time per new client of every process on the path. The tunnel runs twice: "tunnel" with
# connecttwo's default --pool 2, "tunnel-pool8" with --pool 8, as many links as the load's
# concurrent clients (a pool hit per client rather than a wait for a replacement link).
# With OLD=COMMIT, the tunnel built from that commit runs in the same rounds as
# "tunnel-old" and "tunnel-old-pool8", for a before/after.
#
# Usage: bench/tunnel-chain.sh                      (from the module root; ROUNDS=5)
#        OLD=499e248 ROUNDS=7 RATE=1500ms bench/tunnel-chain.sh
# Targets run in interleaved rounds; the machine's load average is printed with the table.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
RATE=${RATE:-1500ms}
BYTES=${BYTES:-268435456}

cd "$(dirname "$0")/.."
T=$(mktemp -d /tmp/tunnel-chain.XXXXXX)
PIDS=()
declare -A PIDS_OF # target -> its processes' pids, for CPU accounting
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$T"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }
start() { "$@" & PIDS+=($!); }
port() { "$T/tunnelload" freeport; }

say "building into $T"
go build -o "$T/" ./cmd/listentwo ./cmd/connecttwo ./cmd/tcp-pf ./bench/tunnelload
if [ -n "${OLD:-}" ]; then
	mkdir -p "$T/old-src" "$T/old"
	git archive "$OLD" | tar -x -C "$T/old-src"
	(cd "$T/old-src" && go build -o "$T/old/" ./cmd/listentwo ./cmd/connecttwo)
fi

SINK=$(port)
start "$T/tunnelload" serve -addr "127.0.0.1:$SINK"
"$T/tunnelload" wait -addr "127.0.0.1:$SINK"
TARGETS=()

# chain: client -> tcp-pf --lazy -> tcp-pf --lazy -> sink
P2=$(port)
start "$T/tcp-pf" -s "127.0.0.1:$P2" -d "127.0.0.1:$SINK" --lazy -q 2>"$T/pf2.log"
pids=$!
"$T/tunnelload" wait -addr "127.0.0.1:$P2"
P1=$(port)
start "$T/tcp-pf" -s "127.0.0.1:$P1" -d "127.0.0.1:$P2" --lazy -q 2>"$T/pf1.log"
pids="$pids $!"
"$T/tunnelload" wait -addr "127.0.0.1:$P1"
TARGETS+=("chain=127.0.0.1:$P1")
PIDS_OF[chain]=$pids

tunnel() { # tunnel NAME BINDIR [CONNECTTWO-OPTION...]: listentwo + connecttwo from BINDIR, no hellos
	local name=$1 bin=$2 s d
	shift 2
	s=$(port); d=$(port)
	start "$bin/listentwo" -s "127.0.0.1:$s" -d "127.0.0.1:$d" -q 2>"$T/$name.listentwo.log"
	local lp=$!
	"$T/tunnelload" wait -addr "127.0.0.1:$d"
	start "$bin/connecttwo" -s "127.0.0.1:$d" -d "127.0.0.1:$SINK" -q "$@" 2>"$T/$name.connecttwo.log"
	PIDS_OF[$name]="$lp $!"
	"$T/tunnelload" wait -addr "127.0.0.1:$s"
	TARGETS+=("$name=127.0.0.1:$s")
}
# The load generator runs 8 clients at once: with --pool 8 each finds a link idle.
tunnel tunnel "$T"
tunnel tunnel-pool8 "$T" --pool 8
if [ -n "${OLD:-}" ]; then
	tunnel tunnel-old "$T/old"
	tunnel tunnel-old-pool8 "$T/old" --pool 8
fi

ticks() { # ticks PID...: user+system clock ticks of the processes
	local sum=0 p
	for p in "$@"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
	echo "$sum"
}
HZ=$(getconf CLK_TCK)

say "targets: ${TARGETS[*]}; rounds: $ROUNDS, rate: $RATE per target, throughput: $BYTES bytes"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$T/rows.tsv"
: >"$T/cpu.tsv"
for r in $(seq "$ROUNDS"); do
	for t in "${TARGETS[@]}"; do
		name=${t%%=*}
		"$T/tunnelload" measure -name "$name" -addr "${t#*=}" -round "$r" -rate "$RATE" -bytes "$BYTES" >>"$T/rows.tsv"
		# CPU per new client: the path's processes over a rate-only run.
		# shellcheck disable=SC2086
		a=$(ticks ${PIDS_OF[$name]})
		"$T/tunnelload" measure -name "$name" -addr "${t#*=}" -round "$r" -latency 0 -rtt 0 -rate "$RATE" -bytes 1 >"$T/cpu.row"
		# shellcheck disable=SC2086
		b=$(ticks ${PIDS_OF[$name]})
		rate=$(cut -f6 "$T/cpu.row")
		printf '%s\t%s\t%s\t%s\n' "$name" "$r" "$rate" "$(awk -v a="$a" -v b="$b" -v hz="$HZ" -v r="$rate" -v d="$RATE" '
			BEGIN { secs = d; sub(/ms$/, "", secs); if (d ~ /ms$/) secs /= 1000; else sub(/s$/, "", secs)
			        printf "%.1f", (b - a) / hz / (r * secs) * 1e6 }')" >>"$T/cpu.tsv"
	done
	say "round $r done"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -r); Go $(go env GOVERSION)"
echo "Load average (1, 5, 15 min): $LOAD_BEFORE before, $LOAD_AFTER after"
echo "Command: ${OLD:+OLD=$OLD }ROUNDS=$ROUNDS RATE=$RATE BYTES=$BYTES bench/tunnel-chain.sh"
echo
"$T/tunnelload" table <"$T/rows.tsv"
echo
echo "Against the chain of two tcp-pf --lazy, round by round:"
echo
"$T/tunnelload" against -base chain <"$T/rows.tsv"
echo
echo "CPU time per new client, all processes of the path (a rate-only run per round; median, lowest, highest):"
echo
echo "| target | CPU µs per client | new clients/s in the median run |"
echo "|---|---:|---:|"
for t in "${TARGETS[@]}"; do
	name=${t%%=*}
	awk -F'\t' -v n="$name" '$1 == n { print $4 "\t" $3 }' "$T/cpu.tsv" | sort -g | awk -F'\t' -v n="$name" '
		{ cpu[NR] = $1; rate[NR] = $2 }
		END { m = int((NR + 1) / 2); printf "| %s | %s (%s-%s) | %.0f |\n", n, cpu[m], cpu[1], cpu[NR], rate[m] }'
done
