#!/usr/bin/env bash
# bench/tunnel-burst.sh: a burst of 257 clients at once, each echoing 256 KiB, through a
# TLS tunnel of connecttwo --pool 257 and listentwo --max-links 264 on loopback, then 20 s
# of watching. From both programs' --metrics it reports the links opened and the links
# listentwo refused as its pool was full, during the burst, in the 20 s after it and from
# 1 s to 20 s after it, the CPU (utime + stime) of both processes in those windows, and
# both processes' heap in use and RSS 1 s, 5 s and 20 s after the burst.
# The burst takes every idle link, each take opens a replacement, and the links come back
# when their sessions end: more than --max-links (bench/README-tunnel.md, *The burst's
# refused TLS links*).
#
# Usage: bench/tunnel-burst.sh              (from the module root: builds the tree)
#        BIN=DIR bench/tunnel-burst.sh      (listentwo, connecttwo, tunnelload built in DIR)
#        PLAIN=1 bench/tunnel-burst.sh      (plain links, no TLS)
#        TRICKLE=200 bench/tunnel-burst.sh  (instead of the burst, 200 clients one by one,
#                                            0.1 s apart, each echoing 64 KiB: CPU per
#                                            client and collections, the trims' cost)
set -euo pipefail

POOL=257
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
B=${BIN:-}
if [ -z "$B" ]; then
	B=$work/bin
	go build -o "$B/" ./cmd/listentwo ./cmd/connecttwo ./bench/tunnelload
fi
port() { "$B/tunnelload" freeport; }
cpu() { awk '{print $14 + $15}' /proc/"$1"/stat; } # clock ticks of 10 ms
echo_port=$(port)
"$B/tunnelload" serve -addr 127.0.0.1:"$echo_port" & pids+=($!)
"$B/tunnelload" wait -addr 127.0.0.1:"$echo_port"
relay_tls=() agent_tls=()
if [ -z "${PLAIN:-}" ]; then
	pin=$("$B/listentwo" --tls-key "$work/relay.key" --print-pin 2>/dev/null)
	relay_tls=(--tls-key "$work/relay.key") agent_tls=(--tls-pin "$pin")
fi
s=$(port) d=$(port) lm=$(port) am=$(port)
"$B/listentwo" -s 127.0.0.1:"$s" -d 127.0.0.1:"$d" --max-links $((POOL + 7)) "${relay_tls[@]}" \
	--metrics 127.0.0.1:"$lm" 2>"$work/listentwo.log" & lp=$!; pids+=($lp)
"$B/tunnelload" wait -addr 127.0.0.1:"$d"
"$B/connecttwo" -s 127.0.0.1:"$d" -d 127.0.0.1:"$echo_port" --pool $POOL "${agent_tls[@]}" \
	--metrics 127.0.0.1:"$am" 2>"$work/connecttwo.log" & ap=$!; pids+=($ap)
for _ in $(seq 400); do
	[ "$(grep -c ' up ' "$work/connecttwo.log")" -ge $POOL ] && break
	sleep 0.025
done
sleep 3
sample() { # links up (listentwo, connecttwo), refused as the pool was full, CPU ticks (both)
	curl -s 127.0.0.1:"$lm"/metrics | awk '/^listentwo_links_up_total /{u = $2}
		/^listentwo_handshakes_refused_total\{reason="pool_full"\}/{r = $2} END {printf "%d %d ", u, r}'
	curl -s 127.0.0.1:"$am"/metrics | awk '/^connecttwo_links_up_total /{printf "%d ", $2}'
	echo "$(cpu $lp) $(cpu $ap)"
}
mem() { # heap in use (MiB) and RSS (MiB) of listentwo, then connecttwo
	local m
	for m in "$lm:$lp" "$am:$ap"; do
		curl -s 127.0.0.1:"${m%%:*}"/metrics | awk -v rss="$(awk '/^VmRSS:/ {print $2}' /proc/"${m#*:}"/status)" \
			'/^go_memstats_heap_inuse_bytes /{printf "%.1f / %.1f MiB  ", $2 / 1048576, rss / 1024}'
	done
	echo
}
gcs() { # collections so far: listentwo, connecttwo
	for m in "$lm" "$am"; do
		curl -s 127.0.0.1:"$m"/metrics | awk '/^go_gc_duration_seconds_count /{printf "%d ", $2}'
	done
	echo
}
if [ -n "${TRICKLE:-}" ]; then
	read -r _ _ _ lc0 ac0 <<<"$(sample)"
	read -r lg0 ag0 <<<"$(gcs)"
	for _ in $(seq "$TRICKLE"); do
		"$B/tunnelload" hold -addr 127.0.0.1:"$s" -n 1 -bytes 65536 >/dev/null
		sleep 0.1
	done
	read -r _ _ _ lc1 ac1 <<<"$(sample)"
	read -r lg1 ag1 <<<"$(gcs)"
	printf '%d clients one by one: CPU listentwo %d ms (%d µs a client), connecttwo %d ms (%d µs a client); collections listentwo %d, connecttwo %d\n' \
		"$TRICKLE" $(((lc1 - lc0) * 10)) $(((lc1 - lc0) * 10000 / TRICKLE)) $(((ac1 - ac0) * 10)) $(((ac1 - ac0) * 10000 / TRICKLE)) \
		$((lg1 - lg0)) $((ag1 - ag0))
	exit 0
fi
read -r lu0 r0 au0 lc0 ac0 <<<"$(sample)"
start=$(date +%s.%N)
"$B/tunnelload" hold -addr 127.0.0.1:"$s" -n $POOL -bytes 262144 >"$work/hold.out"
took=$(echo "$(date +%s.%N) - $start" | bc)
read -r lu1 r1 au1 lc1 ac1 <<<"$(sample)"
sleep 1
read -r lu2 r2 au2 lc2 ac2 <<<"$(sample)"
m1=$(mem)
sleep 4
m5=$(mem)
sleep 15
read -r lu3 r3 au3 lc3 ac3 <<<"$(sample)"
m20=$(mem)
row() { # label, then links up, refused, CPU ticks of both, each as a pair (before, after)
	printf '%-26s links up %4d  refused (pool full) %4d  CPU listentwo %4d ms  connecttwo %4d ms\n' \
		"$1" $(($3 - $2)) $(($5 - $4)) $((($7 - $6) * 10)) $((($9 - $8) * 10))
}
printf 'burst of %d clients: %.2f s\n' $POOL "$took"
row "the burst" "$au0" "$au1" "$r0" "$r1" "$lc0" "$lc1" "$ac0" "$ac1"
row "the 20 s after" "$au1" "$au3" "$r1" "$r3" "$lc1" "$lc3" "$ac1" "$ac3"
row "from 1 s to 20 s after" "$au2" "$au3" "$r2" "$r3" "$lc2" "$lc3" "$ac2" "$ac3"
echo "links closed by listentwo as they came back to its full pool: $(grep -c 'down .*: idle link pool is full' "$work/listentwo.log")"
echo "links connecttwo closed as not needed: $(grep -c 'not needed' "$work/connecttwo.log")"
echo "heap in use / RSS, listentwo then connecttwo, 1 s after the burst:  $m1"
echo "                                                 5 s after:         $m5"
echo "                                                 20 s after:        $m20"
