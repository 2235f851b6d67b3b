# bench/lib.sh, sourced by bench/relay.sh and bench/kv.sh: the helpers both use, written
# once. They use the caller's $work (the run's directory, where relays log) and $results
# (one line per measurement: round, relay, metric, value, tab-separated).

say() { printf '%s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

wait_port() { # wait up to 5 s for 127.0.0.1:$1 to accept
	local i
	for i in $(seq 100); do
		if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	say "port $1 not accepting after 5 s"; cat "$work"/*.log >&2 2>/dev/null; return 1
}

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
val() { awk -F'\t' -v r="$1" -v m="$2" '$2 == r && $3 == m {print $4}' "$results" | median; }
ratio() { # median over rounds of $3's (default tcp-pf) metric over $1's in the same round
	awk -F'\t' -v o="$1" -v m="$2" -v a="${3:-tcp-pf}" '$3 == m && ($2 == a || $2 == o) {v[$1, $2] = $4; rs[$1] = 1}
		END {for (r in rs) if (v[r, o] > 0 && v[r, a] != "") print v[r, a] / v[r, o]}' "$results" | median |
		awk '$1 == "-" {print; next} {printf "%.2f\n", $1}'
}
