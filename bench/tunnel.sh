#!/usr/bin/env bash
# bench/tunnel.sh: listentwo + connecttwo against a direct connection, ssh -R, socat and
# tcp-pf, all on loopback. For each target: time from a new client's connect to its first
# echoed byte (p50, p99), a 1-byte round trip on an open connection, new clients per
# second, single-stream throughput; then CPU per GiB, CPU per new client (CPU_RATE, in
# seconds, of the rate phase alone) and memory per idle pooled link. Targets run in
# interleaved rounds (in each, the single streams in a pass of their own) and the table
# shows medians. With OLD=COMMIT, the plain and the TLS
# tunnel of that commit run too (tunnel-hello-old, tunnel-tls-old). See
# bench/README-tunnel.md.
#
# Usage: bench/tunnel.sh            (from the module root; ROUNDS=5 by default)
#        ROUNDS=3 RATE=1s BYTES=134217728 bench/tunnel.sh
#        OLD=COMMIT ONLY=tunnel-hello,tunnel-hello-old,tunnel-tls,tunnel-tls-old,ssh-R bench/tunnel.sh
#        ROUNDS=0 ONLY=direct bench/tunnel.sh   (only the memory tables, and direct's CPU)
# Missing peers (ssh, sshd, socat) are installed with apt-get when root, else skipped.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
RATE=${RATE:-1500ms}
BYTES=${BYTES:-268435456}
LINKS=${LINKS:-256}

cd "$(dirname "$0")/.."
T=$(mktemp -d /tmp/tunnel-bench.XXXXXX)
PIDS=()
declare -A PID_OF   # process name -> pid, for CPU accounting
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ -d "$T/old-src" ] && git worktree remove --force "$T/old-src" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }
start() { "$@" & PIDS+=($!); }
port() { "$T/tunnelload" freeport; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

say "building into $T"
go build -o "$T/" ./cmd/listentwo ./cmd/connecttwo ./bench/tunnelload
HAVE_PF=0
if go build -o "$T/" ./cmd/tcp-pf 2>"$T/tcp-pf-build.log"; then HAVE_PF=1; else say "tcp-pf does not build: left out"; fi

need() { # need PROGRAM PACKAGE: install PACKAGE when PROGRAM is missing and we are root
	command -v "$1" >/dev/null 2>&1 && return 0
	if [ "$(id -u)" = 0 ]; then
		say "installing $2"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1 ||
			{ apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1; } || true
	fi
	command -v "$1" >/dev/null 2>&1
}
HAVE_SSH=0; need ssh openssh-client && need ssh-keygen openssh-client && { [ -x /usr/sbin/sshd ] || need sshd openssh-server; } && HAVE_SSH=1
[ -x /usr/sbin/sshd ] || HAVE_SSH=0
HAVE_SOCAT=0; need socat socat && HAVE_SOCAT=1

ECHO=$(port)
start "$T/tunnelload" serve -addr "127.0.0.1:$ECHO"
PID_OF[sink]=$!
"$T/tunnelload" wait -addr "127.0.0.1:$ECHO"
TARGETS=("direct=127.0.0.1:$ECHO")

pair() { # pair NAME LISTENTWO-FLAGS -- CONNECTTWO-FLAGS (binaries from $BIN, default $T)
	local name=$1; shift
	local s d lf=() cf=() bin=${BIN:-$T}
	s=$(port); d=$(port)
	while [ "$1" != -- ]; do lf+=("$1"); shift; done; shift
	cf=("$@")
	start "$bin/listentwo" -s "127.0.0.1:$s" -d "127.0.0.1:$d" "${lf[@]}" 2>"$T/$name.listentwo.log"
	PID_OF[$name.listentwo]=$!
	"$T/tunnelload" wait -addr "127.0.0.1:$d"
	start "$bin/connecttwo" -s "127.0.0.1:$d" -d "127.0.0.1:$ECHO" "${cf[@]}" 2>"$T/$name.connecttwo.log"
	PID_OF[$name.connecttwo]=$!
	TARGETS+=("$name=127.0.0.1:$s")
}
printf 'bench secret\n' >"$T/secret"; chmod 600 "$T/secret"
pair tunnel-hello --hello-dst -- --hello-from-src
pair tunnel-hello-pool16 --hello-dst -- --hello-from-src --pool 16
pair tunnel-nohello -- 
pair tunnel-secret --hello-dst --secret-file "$T/secret" -- --hello-from-src --secret-file "$T/secret"
# OLD=COMMIT: the plain tunnel of that commit too (tunnel-hello-old), built from a
# temporary worktree, to show that a change leaves the plain tunnel as it was.
if [ -n "${OLD:-}" ]; then
	git worktree add -q --detach "$T/old-src" "$OLD"
	(cd "$T/old-src" && go build -o "$T/old/" ./cmd/listentwo ./cmd/connecttwo)
	git worktree remove --force "$T/old-src"
	BIN=$T/old pair tunnel-hello-old --hello-dst -- --hello-from-src
fi
# TLS 1.3 links, the relay's key pinned (the key file is made by --print-pin).
PIN=$("$T/listentwo" --tls-key "$T/relay.key" --print-pin 2>/dev/null)
if [ -n "${OLD:-}" ] && "$T/old/listentwo" --help 2>/dev/null | grep -q -- --tls-key; then
	BIN=$T/old pair tunnel-tls-old --hello-dst --tls-key "$T/relay.key" -- --hello-from-src --tls-pin "$PIN"
fi
pair tunnel-tls --hello-dst --tls-key "$T/relay.key" -- --hello-from-src --tls-pin "$PIN"
pair tunnel-tls-pool16 --hello-dst --tls-key "$T/relay.key" -- --hello-from-src --tls-pin "$PIN" --pool 16
pair tunnel-tls-secret --hello-dst --tls-key "$T/relay.key" --secret-file "$T/secret" -- --hello-from-src --tls-pin "$PIN" --secret-file "$T/secret"

if [ "$HAVE_PF" = 1 ]; then
	P=$(port)
	start "$T/tcp-pf" -s "127.0.0.1:$P" -d "127.0.0.1:$ECHO" --lazy 2>"$T/tcp-pf.log"
	PID_OF[tcp-pf-lazy.tcp-pf]=$!
	"$T/tunnelload" wait -addr "127.0.0.1:$P"
	TARGETS+=("tcp-pf-lazy=127.0.0.1:$P")
fi
if [ "$HAVE_SOCAT" = 1 ]; then
	P=$(port)
	start socat "TCP-LISTEN:$P,bind=127.0.0.1,reuseaddr,fork,backlog=512" "TCP:127.0.0.1:$ECHO"
	"$T/tunnelload" wait -addr "127.0.0.1:$P"
	TARGETS+=("socat=127.0.0.1:$P")
else
	say "socat missing and not installable: left out"
fi
if [ "$HAVE_SSH" = 1 ]; then
	mkdir -p /run/sshd 2>/dev/null || true
	SSHD=$(port); SSHR=$(port)
	ssh-keygen -q -t ed25519 -N '' -f "$T/hostkey"
	ssh-keygen -q -t ed25519 -N '' -f "$T/userkey"
	cp "$T/userkey.pub" "$T/authorized_keys"
	cat >"$T/sshd_config" <<-EOF
		Port $SSHD
		ListenAddress 127.0.0.1
		HostKey $T/hostkey
		PidFile $T/sshd.pid
		AuthorizedKeysFile $T/authorized_keys
		StrictModes no
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		UsePAM no
		PermitRootLogin prohibit-password
		AllowTcpForwarding yes
		MaxStartups 100
		LogLevel ERROR
	EOF
	start /usr/sbin/sshd -D -e -f "$T/sshd_config" 2>"$T/sshd.log"
	PID_OF[ssh-R.sshd]=$!
	"$T/tunnelload" wait -addr "127.0.0.1:$SSHD"
	start ssh -N -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
		-o ExitOnForwardFailure=yes -i "$T/userkey" -p "$SSHD" \
		-R "127.0.0.1:$SSHR:127.0.0.1:$ECHO" "$(id -un)@127.0.0.1" 2>"$T/ssh.log"
	PID_OF[ssh-R.ssh]=$!
	if "$T/tunnelload" wait -addr "127.0.0.1:$SSHR"; then
		TARGETS+=("ssh-R=127.0.0.1:$SSHR")
	else
		say "ssh -R did not come up: left out"; cat "$T/ssh.log" "$T/sshd.log" >&2 || true
	fi
else
	say "ssh/sshd missing and not installable: left out"
fi

if [ -n "${ONLY:-}" ]; then # ONLY=name,name,...: measure just these targets
	kept=()
	for t in "${TARGETS[@]}"; do case ",$ONLY," in *",${t%%=*},"*) kept+=("$t") ;; esac; done
	TARGETS=("${kept[@]}")
fi
say "targets: ${TARGETS[*]}"
say "rounds: $ROUNDS, rate: $RATE per target, throughput: $BYTES bytes"
: >"$T/rows.tsv"
# A round measures every target's latency, round trips and new clients, then, in a pass of
# its own, every target's single stream back to back, in the opposite order in every other
# round: the streams that a round's ratios compare run seconds apart, not the tens of
# seconds that ssh -R's 300 new clients took, and no target always streams first.
for r in $(seq "$ROUNDS"); do
	declare -A head=()
	for t in "${TARGETS[@]}"; do
		head[$t]=$("$T/tunnelload" measure -name "${t%%=*}" -addr "${t#*=}" -round "$r" -rate "$RATE" -bytes 0 | cut -f1-6)
	done
	order=("${TARGETS[@]}")
	if [ $((r % 2)) = 0 ]; then
		order=()
		for ((i = ${#TARGETS[@]} - 1; i >= 0; i--)); do order+=("${TARGETS[i]}"); done
	fi
	declare -A mibs=()
	for t in "${order[@]}"; do
		mibs[$t]=$("$T/tunnelload" measure -name "${t%%=*}" -addr "${t#*=}" -latency 0 -rtt 0 -rate 0s -bytes "$BYTES" | cut -f7)
	done
	for t in "${TARGETS[@]}"; do printf '%s\t%s\n' "${head[$t]}" "${mibs[$t]}" >>"$T/rows.tsv"; done
	unset head mibs
	say "round $r done"
done

echo
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -r); Go $(go env GOVERSION)"
echo "Command: ROUNDS=$ROUNDS RATE=$RATE BYTES=$BYTES LINKS=$LINKS${OLD:+ OLD=$OLD}${ONLY:+ ONLY=$ONLY} bench/tunnel.sh"
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (2 shared cores; other jobs were running)"
if [ -s "$T/rows.tsv" ]; then # ROUNDS=0: no rounds, only the CPU and memory tables
	echo
	"$T/tunnelload" table <"$T/rows.tsv"
	echo
	echo "Against ssh -R, round by round (the same round of both targets, minutes apart at most):"
	echo
	"$T/tunnelload" against -base ssh-R <"$T/rows.tsv"
fi

# CPU seconds per GiB of single-stream throughput, per process: on two shared cores every
# stage of the path competes for the same CPUs, so this shows which stage would limit
# throughput if each ran on its own machine, as B and A do in real use. sshd's column
# counts its session processes too (tree_ticks).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tree_ticks() { # ticks of a process and its children, recursively
	local t c
	t=$(ticks "$1")
	for c in $(pgrep -P "$1" || true); do t=$((t + $(tree_ticks "$c"))); done
	echo "$t"
}
HZ=$(getconf CLK_TCK)
CPU_BYTES=${CPU_BYTES:-1073741824}
echo
echo "CPU seconds per GiB moved ($((CPU_BYTES >> 20)) MiB single stream, one run each):"
echo
echo "| target | MiB/s | client | sink | listentwo | connecttwo | tcp-pf | ssh | sshd |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for t in "${TARGETS[@]}"; do
	name=${t%%=*}
	case $name in direct|tunnel-hello|tunnel-hello-old|tunnel-nohello|tunnel-tls|tunnel-tls-old|tcp-pf-lazy|ssh-R) ;; *) continue ;; esac
	declare -A before=()
	for k in sink "$name.listentwo" "$name.connecttwo" "$name.tcp-pf" "$name.ssh" "$name.sshd"; do
		[ -n "${PID_OF[$k]:-}" ] && before[$k]=$(tree_ticks "${PID_OF[$k]}")
	done
	TIMEFORMAT='%U %S'
	{ time "$T/tunnelload" measure -name "$name" -addr "${t#*=}" -latency 0 -rtt 0 -rate 0s -bytes "$CPU_BYTES" >"$T/cpu.row"; } 2>"$T/cpu.time"
	mibs=$(cut -f7 "$T/cpu.row")
	gib=$(awk -v b="$CPU_BYTES" 'BEGIN {print b / 1073741824}')
	client=$(awk -v g="$gib" '{printf "%.2f", ($1 + $2) / g}' "$T/cpu.time")
	row="| $name | $mibs | $client"
	for k in sink "$name.listentwo" "$name.connecttwo" "$name.tcp-pf" "$name.ssh" "$name.sshd"; do
		if [ -n "${before[$k]:-}" ]; then
			row="$row | $(awk -v a="${before[$k]}" -v b="$(tree_ticks "${PID_OF[$k]}")" -v hz="$HZ" -v g="$gib" 'BEGIN {printf "%.2f", (b - a) / hz / g}')"
		else
			row="$row | -"
		fi
	done
	echo "$row |"
	unset before
done

# CPU per new client: the tunnel's two processes (for ssh -R, sshd's processes and ssh)
# while only the rate phase runs (conc 8: connect, first echoed byte, close, again).
CPU_RATE=${CPU_RATE:-3s}
echo
echo "CPU per new client ($CPU_RATE of 8 concurrent clients, each connect, first echoed byte, close; one run each):"
echo
echo "| target | clients/s | relay side µs/client | agent side µs/client | both µs/client |"
echo "|---|---:|---:|---:|---:|"
for t in "${TARGETS[@]}"; do
	name=${t%%=*}
	case $name in
	tunnel-hello|tunnel-hello-old|tunnel-tls|tunnel-tls-old|tunnel-tls-pool16) rp=${PID_OF[$name.listentwo]}; ap=${PID_OF[$name.connecttwo]} ;;
	ssh-R) rp=${PID_OF[ssh-R.sshd]:-}; ap=${PID_OF[ssh-R.ssh]:-} ;;
	*) continue ;;
	esac
	[ -n "$rp" ] && [ -n "$ap" ] || continue
	r0=$(tree_ticks "$rp"); a0=$(tree_ticks "$ap")
	"$T/tunnelload" measure -name "$name" -addr "${t#*=}" -latency 0 -rtt 0 -rate "$CPU_RATE" -bytes 0 >"$T/rate.row"
	r1=$(tree_ticks "$rp"); a1=$(tree_ticks "$ap")
	rate=$(cut -f6 "$T/rate.row")
	awk -v n="$name" -v rate="$rate" -v d="${CPU_RATE%s}" -v r="$((r1 - r0))" -v a="$((a1 - a0))" -v hz="$HZ" 'BEGIN {
		c = rate * d; printf "| %s | %.0f | %.0f | %.0f | %.0f |\n", n, rate, r / hz / c * 1e6, a / hz / c * 1e6, (r + a) / hz / c * 1e6 }'
done

# Memory per idle pooled link: RSS of both ends with 1 link, then with LINKS+1; plain
# links, then TLS links (the same key and pin as tunnel-tls).
waitlinks() { # waitlinks LOG N: bounded wait for N "link up" lines
	for _ in $(seq 400); do
		[ "$(grep -c ' up ' "$1" || true)" -ge "$2" ] && return 0
		sleep 0.025
	done
	say "only $(grep -c ' up ' "$1" || true) of $2 links came up"; return 1
}
memrows() { # memrows NAME LISTENTWO-FLAGS -- CONNECTTWO-FLAGS: the table's rows for NAME
	local name=$1 lf=() cf=() S D LPID C1 CN L1 A1 LN AN; shift
	while [ "$1" != -- ]; do lf+=("$1"); shift; done; shift
	cf=("$@")
	S=$(port); D=$(port)
	start "$T/listentwo" -s "127.0.0.1:$S" -d "127.0.0.1:$D" --max-links $((LINKS + 8)) "${lf[@]}" 2>"$T/mem.$name.listentwo.log"
	LPID=$!
	"$T/tunnelload" wait -addr "127.0.0.1:$D"
	start "$T/connecttwo" -s "127.0.0.1:$D" -d "127.0.0.1:$ECHO" --pool 1 "${cf[@]}" 2>"$T/mem1.$name.log"
	C1=$!
	waitlinks "$T/mem1.$name.log" 1
	sleep 3 # with TLS, the processes give memory back 2 s after the last handshake
	L1=$(rss_kib "$LPID"); A1=$(rss_kib "$C1")
	kill "$C1"; wait "$C1" 2>/dev/null || true
	start "$T/connecttwo" -s "127.0.0.1:$D" -d "127.0.0.1:$ECHO" --pool $((LINKS + 1)) "${cf[@]}" 2>"$T/memN.$name.log"
	CN=$!
	waitlinks "$T/memN.$name.log" $((LINKS + 1))
	sleep 3
	LN=$(rss_kib "$LPID"); AN=$(rss_kib "$CN")
	echo "| $name | 1 | $L1 | $A1 |"
	echo "| $name | $((LINKS + 1)) | $LN | $AN |"
	echo "| $name | per link | $(( (LN - L1) / LINKS )) | $(( (AN - A1) / LINKS )) |"
	if [ "$name" = tls ]; then
		# TLS links come back to the pool after their client. First LINKS+2 clients one
		# after another, each echoing 256 KiB (the bulk path's buffers). listentwo gives
		# each the newest idle link, so their sessions fall on the few newest links (the
		# one a client came back on, or the replacement its take opened): the row is a
		# pool that served clients one by one, mostly links that carried no session yet,
		# read once connecttwo has closed the links beyond --pool.
		for _ in $(seq $((LINKS + 2))); do
			"$T/tunnelload" hold -addr "127.0.0.1:$S" -n 1 -bytes 262144
		done
		idleagain "$CN"
		LU=$(rss_kib "$LPID"); AU=$(rss_kib "$CN")
		echo "| tls, after $((LINKS + 2)) clients one by one | $((LINKS + 1)) | $LU | $AU |"
		echo "| tls, after $((LINKS + 2)) clients one by one | per link | $(( (LU - L1) / LINKS )) | $(( (AU - A1) / LINKS )) |"
		# Then LINKS+1 clients at once: connecttwo opens a replacement for each link taken,
		# and closes any link idle 5 s while more than --pool are idle (fresh or back from a
		# session, since 2a8c583), so the idle links left are a mix of both, in a heap the
		# burst's buffers went through.
		"$T/tunnelload" hold -addr "127.0.0.1:$S" -n $((LINKS + 1)) -bytes 262144
		idleagain "$CN"
		LU=$(rss_kib "$LPID"); AU=$(rss_kib "$CN")
		echo "| tls, after $((LINKS + 1)) clients at once | $((LINKS + 1)) | $LU | $AU |"
		echo "| tls, after $((LINKS + 1)) clients at once | per link | $(( (LU - L1) / LINKS )) | $(( (AU - A1) / LINKS )) |"
	fi
	kill "$CN" "$LPID"; wait "$CN" "$LPID" 2>/dev/null || true
}
sockets() { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l; }
idleagain() { # idleagain PID: connecttwo PID is back to LINKS+1 links, and has trimmed its memory
	for _ in $(seq 600); do
		[ "$(sockets "$1")" -le $((LINKS + 1)) ] && break
		sleep 0.025
	done
	sleep 5 # the processes give freed memory back 2 s after the last relay or closed link
	local n; n=$(sockets "$1")
	# A row read with more links open than the pool's is not a figure per idle link: say so.
	[ "$n" -le $((LINKS + 1)) ] || say "warning: connecttwo still holds $n sockets, not $((LINKS + 1)): the next row counts links not yet closed"
}
say "measuring memory per idle link ($LINKS links)"
echo
echo "| links | idle pooled links | listentwo RSS (KiB) | connecttwo RSS (KiB) |"
echo "|---|---:|---:|---:|"
memrows plain --
memrows tls --tls-key "$T/relay.key" -- --tls-pin "$PIN"
echo
echo "ssh -R keeps no idle links (each client costs an ssh channel opened on demand), so it has no per-idle-link figure."
