package forward

import (
	"fmt"

	"golang.org/x/sys/unix"

	"shd-tcp-tools/internal/connlog"
)

// shorted records a shortage in the back-off and logs it on log when due.
func (s *Server) shorted(log *connlog.Logger, err error) {
	if line := s.back.Fail(s.cfg.now(), err); line != "" {
		log.Warnf("%s", line)
	}
}

// NoFileLimit returns the soft limit on open files (ulimit -n) of this process. Go raises it
// to the hard limit at start, so it is the most descriptors the process can have.
func NoFileLimit() (uint64, error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("reading the open file limit: %w", err)
	}
	return r.Cur, nil
}
