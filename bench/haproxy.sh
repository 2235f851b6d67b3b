# bench/haproxy.sh, sourced by bench/relay.sh and bench/iperf3.sh: the HAProxy
# configurations the benchmarks compare tcp-pf with, written in one place.
#
# haproxy_cfg KIND PORT BACKEND: print a configuration that listens on 127.0.0.1:PORT and
# relays to 127.0.0.1:BACKEND in tcp mode. KIND is
#   plain    mode tcp and nothing else: HAProxy's default behaviour
#   auto     option splice-auto, as usually recommended; HAProxy 2.6 then splices only
#            when it guesses a stream is large, and on loopback it never does
#   splice   splice forced both ways (option splice-request, option splice-response),
#            with 1 MiB pipes like Go's (tune.pipesize 1048576): its best bulk figure
# Every kind raises maxconn to a fifth of the open-file limit and takes up to 1024
# events per poll, so that the connection-rate runs are not bound by HAProxy's defaults.
haproxy_cfg() {
	local kind=$1 port=$2 backend=$3 opts="" tune=""
	case $kind in
	plain) ;;
	auto) opts="option splice-auto" ;;
	splice)
		opts=$'option splice-request\n    option splice-response'
		tune="tune.pipesize 1048576" ;;
	*) echo "haproxy_cfg: unknown kind $kind" >&2; return 2 ;;
	esac
	cat <<-CFG
		global
		    maxconn $(($(ulimit -n) / 5))
		    tune.maxpollevents 1024
		    $tune
		defaults
		    mode tcp
		    $opts
		    timeout connect 10s
		    timeout client 1h
		    timeout server 1h
		listen fwd
		    bind 127.0.0.1:$port
		    server be 127.0.0.1:$backend
	CFG
}
