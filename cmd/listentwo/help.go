package main

// help is what --help prints.
const help = `Usage: listentwo -s [ADDR:]PORT -d [ADDR:]PORT [--hello-dst] [-a HOST]... [--wait SECS]
                 [--secret-file FILE] [--max-links N] [--tls-key FILE [--tls-cert FILE]]
       listentwo --tls-key FILE [--tls-cert FILE] --print-pin

Relay end of a reverse tunnel. Clients connect to -s; connecttwo, on a machine that cannot
accept connections, keeps idle links open to -d. Each client is paired with the newest idle
link and the two are relayed both ways, half-closes passed on.

Options:
  -s, --clients [ADDR:]PORT  listen for clients here
  -d, --links [ADDR:]PORT    listen for connecttwo's links here
      --hello-dst            send each taken link a PROXY v1 header naming the client
                             (connecttwo must use --hello-from-src; both or neither)
  -a, --allow HOST|ADDR/PREFIX
                             serve only clients from these addresses (repeatable); others
                             are closed at once, logged, and never take a link
      --wait SECS            how long a client waits for an idle link before it is closed
                             (default 30; 0: not at all)
      --secret-file FILE     links must prove they know the first line of FILE
                             (HMAC-SHA256 challenge; connecttwo needs the same file)
      --max-links N          most idle links kept in the pool (default 64)
      --tls-key FILE         encrypt every link with TLS 1.3 under this private key
                             (ECDSA P-256 or Ed25519, PEM); a missing FILE is created
                             (mode 0600) with a new P-256 key. The key's pin is logged at
                             start as "tls pin sha256/..."; give it to connecttwo's
                             --tls-pin
      --tls-cert FILE        with --tls-key: present this CA-issued certificate chain
                             (PEM) instead of a self-signed one (connecttwo --tls-ca)
      --print-pin            print the pin of --tls-key (creating the key if missing)
                             and exit
  -q, --quiet                log warnings and errors only: no link, pairing, close or
                             refused-client lines
      --log-format FORMAT    text (the default), or json: one JSON object per event
                             with the fields of its text line (man listentwo)
      --metrics [ADDR:]PORT  serve Prometheus metrics on http://ADDR:PORT/metrics: idle
                             links, waiting clients, pairings, refused handshakes by
                             reason, clients by outcome, bytes each way as they move
                             (names prefixed listentwo_)
  -h, --help                 print this help and exit
  -v, --version              print the version and exit

Environment:
  INADDR_DEFAULT   listen on this address when -s or -d gives no ADDR

Under systemd: started with two listening sockets (socket activation: LISTEN_FDS,
LISTEN_PID), listentwo serves them instead of binding: the one named "clients"
(FileDescriptorName=) for -s and the one named "links" for -d; sockets without those
names go, in order, to -s, then -d. -s and -d may then be left out, and if given must
agree with their sockets. Any other number of sockets is a usage error. With
NOTIFY_SOCKET set (Type=notify), it sends READY=1 once both listen and STOPPING=1 when
it stops. See man listentwo.

Example: reach sshd on A, which accepts no connections, from C through B:
  on B:  listentwo -s 1234 -d 1235 --hello-dst
  on A:  connecttwo -s B:1235 -d 127.0.0.1:22 --hello-from-src
  on C:  ssh -p 1234 user@B
With the links encrypted: on B, listentwo --tls-key relay.key --print-pin prints the pin;
add --tls-key relay.key on B and --tls-pin sha256/... (that pin) on A.
Without hellos (leave out both flags) a link is taken by the client's first byte, so only
protocols whose client speaks without waiting for the server work (ssh, HTTP, TLS; not
SMTP, IMAP or MySQL); a client is paired only once that byte has arrived, within --wait
(2 s with --wait 0).

Strangers: a link must send its opening within 2 s; at most 256 links are held before
their handshake is done, and without hellos at most 1024 clients (64 per source address)
before their first byte. A newcomer past a limit pushes out the one that has made the
least progress, never one that speaks.

Logs go to stderr: links up and down with the reason, each pairing, each close with bytes
and bandwidth each way, and clients that waited in vain. Refusals beyond 10 of a kind per
10 s are summed up in one line. If stderr is not read or is gone, lines are dropped
(never the service) and the count is logged when it can be.

Signals: SIGINT or SIGTERM stops; open relays are cut, their client and link reset, so
no one takes a cut transfer for a complete one. SIGHUP rereads --secret-file: links must
prove the new secret from then on, and idle links that proved the old one are closed.
`
