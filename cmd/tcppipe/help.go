package main

// help is what --help prints.
const help = `Usage: tcppipe [OPTIONS] SOURCE DESTINATION

Move bytes one way, from SOURCE to DESTINATION, until SOURCE ends. Each is one of:
  -              stdin as SOURCE, stdout as DESTINATION
  :PORT          listen on PORT, accept one connection and use it
  HOST PORT      connect to HOST (name, IPv4 or IPv6 literal) on PORT;
                 HOST "." is the host with the fewest bytes in the -n file
SOURCE and DESTINATION cannot both be network ends. "- -" copies stdin to stdout
(but, as cat, refuses to copy a regular file onto itself: "- - < f >> f").

Options:
  -b, --bind-file FILE     use the entry of FILE with the fewest bytes as the local
                           address of the socket; the bytes moved are added to it
  -n, --network-file FILE  the host file for HOST "."; if a host refuses or times out,
                           the next-fewest is tried; the bytes moved are added to it
  -i, --interval SECS      write host-file counts back every SECS while the transfer
                           runs (default 512), and always at the end
      --insert FILE        send FILE's content to DESTINATION before any SOURCE byte
                           (its bytes count against -l like any other)
  -l, --limit RATE         at most RATE bytes per second, fractions allowed; K, M, G,
                           T (or KiB ... TiB), either case, multiply by 1024, 1024^2,
                           ... as in pv: 1.5M is 1572864, 10m is 10485760
  -p, --progress           print throughput on stderr once a second and a summary
  -w, --wait SECS          after accepting a connection, wait SECS (fractions allowed)
                           before using it
  -h, --help               print this help and exit
  -v, --version            print the version and exit

Host files hold one "HOST BYTES" entry a line (HOST may be HOST:PORT or [V6]:PORT);
# starts a comment. They are updated under a lock (FILE.lock) and replaced atomically.

Environment:
  INADDR_DEFAULT   local address (IP or name) for every socket, unless -b is given;
                   a link-local IPv6 address takes its zone (fe80::1%eth0); a HOST
                   of the other IP family is refused at start

When SOURCE ends, a socket DESTINATION gets a FIN and tcppipe waits until its peer has
acknowledged every byte before it closes (it gives up after 10 s without progress). A
transfer cut short (a signal, a reset, an error) resets the connection, so that its peer
never takes a partial stream for a complete one.

Exit status: 0 all bytes delivered; 1 a runtime failure (connect, bind, read a file,
transfer cut short or not acknowledged: stderr says which end failed and how many bytes
went through); 2 a usage error.
SIGINT, SIGTERM and SIGHUP cut a transfer short: the counts of what went through are
written to the host files, stderr says how many bytes that was, and the exit status is 1.

Examples:
  tcppipe :9000 - > backup.tar                 receive on port 9000 into a file
  tar c dir | tcppipe -p - host.example 9000   send a stream, showing progress
  tcppipe -l 10M - ::1 9000 < big.iso          send over IPv6 at 10 MiB/s
  tcppipe -n hosts - . 9000 < big.iso          send to the least-used host of "hosts"
`
