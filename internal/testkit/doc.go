// Package testkit is the one set of test helpers every package's tests share: loopback
// listeners and backends (echo, sink) on 127.0.0.1 and [::1], reproducible byte streams
// checked by length and SHA-256, log buffers a test waits on with a deadline, and the
// built binaries a test starts, signals and checks the exit status of. Only tests
// import it.
package testkit
