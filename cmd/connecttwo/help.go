package main

// help is what --help prints.
const help = `Usage: connecttwo -s HOST:PORT -d HOST:PORT [--hello-from-src] [--pool N]
                  [--secret-file FILE] [--send-proxy]
                  [--tls-pin sha256/BASE64]... [--tls-ca FILE [--tls-name NAME]]

Hidden end of a reverse tunnel. Keeps --pool idle links open to listentwo's link port -s;
when a client takes one, connects to the service -d and relays the two both ways, then
opens a replacement link at once. When links are taken as soon as they join the relay's
pool (clients wait there), it opens plain links beyond --pool, up to 32 more. A TLS link
comes back when its client's session ends, so a replacement is opened, or retried after
a failure, only while fewer than --pool links are idle or being opened without it. A
link beyond --pool that stays idle 5 s while more than --pool are idle is closed. If the
relay cannot be reached or a link drops within a second of coming up, it reconnects with
exponential backoff (up to 30 s, with jitter); a link cut during its handshake is retried
within a second, and one that drops after a second or more up is replaced at once. It
never exits for either.

Options:
  -s, --relay HOST:PORT    listentwo's link port (its -d)
  -d, --service HOST:PORT  the service to serve, often on 127.0.0.1
      --hello-from-src     expect a PROXY v1 header naming the client on each taken link,
                           then connect (listentwo must use --hello-dst; both or neither)
      --send-proxy         pass that header on to the service (for servers that read
                           PROXY headers: nginx, HAProxy); needs --hello-from-src
      --pool N             idle links to keep open at least (default 2, at most 1024);
                           they are opened at most 32 at a time; a burst of clients
                           opens up to 32 plain links more
      --secret-file FILE   prove to listentwo, and check that it proves, the first line
                           of FILE (HMAC-SHA256 challenge; listentwo needs the same file)
      --tls-pin sha256/BASE64
                           encrypt every link with TLS 1.3 and accept only a relay whose
                           key has this pin (what listentwo --print-pin prints, and logs
                           as "tls pin ..."); repeatable, to rotate the relay's key
      --tls-ca FILE        encrypt every link with TLS 1.3 and accept only a relay whose
                           certificate chains to a CA certificate in FILE (PEM)
      --tls-name NAME      with --tls-ca: the name the relay's certificate must carry
                           (default: the host of -s)
  -q, --quiet              log warnings and errors only: no link up or down, open or
                           close lines (retries and failures are still logged)
      --log-format FORMAT  text (the default), or json: one JSON object per event with
                           the fields of its text line (man connecttwo)
      --metrics [ADDR:]PORT
                           serve Prometheus metrics on http://ADDR:PORT/metrics: links
                           by state, reconnects, connections to the service by outcome,
                           bytes each way as they move (names prefixed connecttwo_)
  -h, --help               print this help and exit
  -v, --version            print the version and exit

Environment:
  INADDR_DEFAULT   connect from this local address

Example: reach sshd on A, which accepts no connections, from C through B:
  on B:  listentwo -s 1234 -d 1235 --hello-dst
  on A:  connecttwo -s B:1235 -d 127.0.0.1:22 --hello-from-src
  on C:  ssh -p 1234 user@B
Without hellos (leave out both flags) a link is taken by the client's first byte, so only
protocols whose client speaks without waiting for the server work (ssh, HTTP, TLS; not
SMTP, IMAP or MySQL). With the links encrypted: on B,
listentwo --tls-key relay.key --print-pin prints the pin; add --tls-key relay.key on B
and --tls-pin sha256/... (that pin) on A. The TLS handshake is made when a link opens,
not when a client comes; with --secret-file the proofs are bound to the TLS session.

Logs go to stderr: links up and down with the reason, retries, each connection to the
service and its close with bytes and bandwidth each way; once, a lookup of the relay's
or the service's name that waits more than a second for the resolver (and once, that
it answers again). If the service cannot be
reached, that client is reset at once (its link closed, or with TLS its session ended)
and logged (beyond 10 per 10 s, counted and summed up in one line); so are links that fail
to open or are lost within a second of coming up. If stderr is not read or is
gone, lines are dropped (never the service) and the count is logged when it can be.

Signals: SIGINT or SIGTERM stops; open relays are cut, their link and service connection
reset, so no one takes a cut transfer for a complete one. SIGHUP rereads --secret-file:
links opened from then on prove the new secret.
`
