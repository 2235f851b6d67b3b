package main

// help is what --help prints.
const help = `Usage:
  tcppipe-least [-n N] FILE            print the N hosts with the fewest bytes (default 1)
  tcppipe-least --list FILE            print every entry as "HOST BYTES"
  tcppipe-least --add HOST BYTES FILE  add BYTES to HOST's count
  tcppipe-least --set HOST BYTES FILE  set HOST's count to BYTES
  tcppipe-least --remove HOST FILE     delete HOST's entry

Reads and edits the host files of tcppipe and tcp-pf, for shell scripts.

Forms:
  -n, --number N  print the N entries with the fewest bytes, fewest first, one HOST a
                  line (all of them if the file has fewer). Entries with equal counts
                  keep their file order.
      --list      print every entry as "HOST BYTES", fewest first.
      --add       add BYTES to the count of HOST's entry (saturating at 2^64-1); an
                  absent HOST is appended to the file. A missing FILE is created.
      --set       set HOST's count to BYTES, appending HOST if absent. A missing FILE is
                  created.
      --remove    delete the line of HOST's entry; exit 1 if there is none.
  -h, --help      print this help and exit
  -v, --version   print the version and exit

The host file:
  One entry a line: HOST BYTES, separated by spaces or tabs. HOST is a host name, an
  IPv4 address, a bare IPv6 address (::1), or one of these with its own port:
  host:8080, 192.0.2.1:8080, [2001:db8::1]:22. BYTES is an unsigned 64-bit decimal
  count; a missing count is 0. Lines starting with # are comments; blank lines are
  allowed. A malformed line (more than two fields, a bad count or HOST) is warned about
  on stderr with its line number (the first ten; then one line counts the rest),
  ignored, and kept as it is. FILE must be a regular file (or a link to one) of at most
  16 MiB. HOST arguments are matched
  against the HOST field exactly as written, and the first matching entry is used.

Locking and safety:
  Edits take an exclusive lock on FILE.lock, a file created beside FILE and left there,
  so concurrent editors (this tool, tcppipe, tcp-pf) lose no counts. An edit waits for
  a lock that another process holds for as long as it is held, saying so on stderr
  after a second; SIGINT, SIGTERM or SIGHUP ends the wait (exit 1, FILE unchanged).
  The new text is written to a temporary file and renamed over FILE: readers and
  crashes see the old or the new file, never a partial one. Comments, blank lines,
  malformed lines and the order of entries are kept; only the edited line changes.

Exit status:
  0 success; 1 a failure (FILE unreadable or not writable, no usable entries, HOST absent
  for --remove); 2 a usage error (nothing is read or changed).

Examples:
  # copy a backup to the least used of several mirrors, then account for it
  host=$(tcppipe-least ~/.stt/mirrors) || exit 1
  scp backup.tar "$host:" &&
      tcppipe-least --add "$host" "$(stat -c %s backup.tar)" ~/.stt/mirrors

  # the three least used hosts, and a reset of one count
  tcppipe-least -n 3 pool.txt
  tcppipe-least --set 192.0.2.7 0 pool.txt
`
