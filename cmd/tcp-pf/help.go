package main

// help is what --help prints.
const help = `Usage: tcp-pf -s [ADDR:]PORT (-d HOST:PORT | -l FILE [-p PORT]) [OPTION]...

Listen on -s and relay every connection, both ways, to one destination (-d) or to the
host of a host file that has moved the fewest bytes (-l). Any number of connections are
served at once, over IPv4 and IPv6.

Options:
  -s, --source [ADDR:]PORT      listen on PORT, on every address or only on ADDR
  -d, --destination HOST:PORT   relay to HOST:PORT (IPv6 in brackets: [::1]:22)
  -l, --host-file FILE          relay to the host of FILE with the fewest bytes: FILE's
                                count plus the bytes this process moved since it last
                                wrote FILE; ties go to the host with fewer open
                                connections, then to the earlier line; a host that
                                refuses or times out is skipped for the next one, and
                                set aside (see Hosts that fail)
  -p, --port PORT               the destination port of -l entries that name none
                                (an entry HOST:PORT or [V6]:PORT names its own);
                                without -p, every entry must name its own
  -i, --interval SECS           with -l: write the counts back to FILE every SECS
                                seconds (default 512), and on exit
  -a, --allow HOST|ADDR/PREFIX  serve only clients from HOST (a name is resolved at
                                start) or from the CIDR block; repeatable; any other
                                client is closed at once and logged
  -r, --rate RATE               limit each connection to RATE bytes per second in each
                                direction, fractions allowed; K, M, G, T (or KiB ...
                                TiB), either case, multiply by 1024, 1024^2, ... as in
                                pv: 1.5M is 1572864, 10m is 10485760
      --insert FILE             send FILE's content to the destination first on every
                                connection (read once, at start; at most 64 MiB; a
                                FIFO such as <(command) is read until its writer
                                closes it, and tcp-pf listens then); its bytes count
                                as sent and against -r
      --lazy                    pass a client's or server's half-close (FIN) on and keep
                                the other direction flowing until it ends too
      --connect-timeout SECS    give up on a destination after SECS (default 10)
      --idle-timeout SECS       cut (reset both sides of) a connection that moved no
                                byte for SECS (default 0: never)
      --grace SECS              on SIGINT/SIGTERM, let open connections go on for SECS
                                before cutting them (default 5; 0 cuts them at once)
      --send-proxy              send the destination a PROXY protocol version 1 header
                                naming the client, before anything else (--insert too)
      --send-proxy-v2           the same with a version 2 (binary) header
      --accept-proxy            read a PROXY protocol header (version 1 or 2) from each
                                client first: the client it names is the client in
                                the log, for -a and for --send-proxy; a client without
                                a valid one is refused and logged
      --accept-proxy-timeout SECS
                                how long a client may take to send its header
                                (default 5)
  -q, --quiet                   log warnings and errors only: no listening, open,
                                close or refused lines (failures and hosts set aside
                                are still logged)
      --log-format FORMAT       text (the default), or json: one JSON object per
                                event with the fields of its text line (man tcp-pf)
      --metrics [ADDR:]PORT     serve Prometheus metrics on http://ADDR:PORT/metrics:
                                connections by outcome, bytes each way as they
                                move, connect times, and per -l entry its bytes,
                                open connections and health (see Metrics below)
  -h, --help                    print this help and exit
  -v, --version                 print the version and exit

Closing: by default, when one side ends, what was already read from it is delivered,
then both connections are closed. A client that half-closes (shutdown(SHUT_WR)) and then
waits for the reply loses that reply, as with rinetd and redir: use --lazy for such
protocols. With --lazy, each side's end is passed on as a half-close and the connection
closes when both directions have ended. A reset (RST) from either side is passed on as a
reset to the other, in both modes.

Hosts that fail (-l): a host that refuses, times out or whose name does not resolve is
set aside at its first failure: it is tried only after the other hosts, so clients do
not wait for it, until a background TCP connect to it succeeds (checked 1 s after the
failure, then doubling up to every 30 s). One line is logged when it is set aside and
one when it is back. When every host is set aside, all are still tried, in order.

Names (-d, -l) are looked up only when their host is tried, off the data path; an
answer is cached for 30 s, a failure for 5 s, and one lookup serves every connection
waiting for the name. A -d name that does not resolve at start is logged as a warning.

The host file (-l) is followed live: a host added to it, removed from it or given a new
count (tcppipe-least --add, --remove, --set, an editor) is taken at once; SIGHUP
rereads it too (nothing with -d), keeping the counts not yet written. A lock on it
held by another process never holds up a connection: the counts wait, and are written
once the lock is free.

Every connection has TCP keepalive on both sides. On SIGINT or SIGTERM, tcp-pf stops
accepting, lets open connections finish for --grace seconds (a second SIGINT or
SIGTERM ends that at once; only a third kills), cuts the rest (both sides get a reset, so
no one takes a cut transfer for a complete one), writes the counts to the host file
and exits 0; if another process holds the file's lock for 3 s more, it prints the
counts as "tcppipe-least --add HOST BYTES FILE" lines and exits 1. SIGHUP never ends
it (see the host file, above). When it runs out of file descriptors, it
backs off accepting (5 ms doubling to 1 s) and serves again once descriptors are freed.

An option that would do nothing with the others given (-p or -i without -l,
--accept-proxy-timeout without --accept-proxy) is an error, not ignored.

PROXY protocol headers are not counted in the byte counts (log, host file) and not
paced by -r. With --accept-proxy, a LOCAL or UNKNOWN header (a proxy's health check)
keeps the socket's own address as the client's. Anyone who can connect can name any
client: restrict who may connect (a firewall) when -a matters.

Environment: INADDR_DEFAULT, an address or host name, is the local address of the
listener (when -s names none) and of every outgoing connection.

Under systemd: started with a listening socket (socket activation: LISTEN_FDS,
LISTEN_PID), tcp-pf serves that socket instead of binding one; -s may then be left out,
and if given must agree with it. Anything but exactly one listening TCP socket is a
usage error. With NOTIFY_SOCKET set (Type=notify), it sends READY=1 once it listens and
STOPPING=1 when it stops. Examples: contrib/systemd/; man tcp-pf.

Log (stderr), one line per event: listening, open (client -> destination), close (bytes
and average rate each way, duration, and who closed or reset), refused (allow list),
failed (one line per destination that refused or timed out), a host set aside and
back in service. Refusals, and failures of one destination, beyond 10 per 10 s are
counted instead and summed up in one line with their reasons and client blocks (/24,
/64). Logging never holds up a connection: if stderr is not read or is gone,
lines are dropped, and the count is logged when stderr takes lines again, and at exit.

Metrics (--metrics): counters and gauges prefixed tcppf_, among them
tcppf_connections_opened_total, tcppf_connections_closed_total{end},
tcppf_relayed_bytes_total{direction}, tcppf_connections_open and
tcppf_host_bytes{host}, plus the process_ and go_ metrics. They are read from the
counts the relay keeps anyway, when a scrape comes: a scrape costs the relay nothing.

Examples:
  tcp-pf -s 8080 -d 192.0.2.10:80
  tcp-pf -s '[::1]:2222' -d backend.example:22 -a 10.0.0.0/8 -a 2001:db8::/32
  tcp-pf -s 8080 -l hosts.txt -p 80 -i 60       # hosts.txt: "web1 0", "web2:8081 0", ...
  tcp-pf -s 7000 -d 127.0.0.1:7001 --lazy -r 1MiB
  tcp-pf -s 8443 -d 127.0.0.1:443 --accept-proxy --send-proxy-v2  # behind HAProxy
`
