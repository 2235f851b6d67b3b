// Command tcppipe-least reads and edits host files from shell scripts: it names the hosts
// with the fewest bytes and adds, sets or removes counts. Run it with --help for usage.
package main

import (
	"os"

	"shd-tcp-tools/internal/least"
)

func main() {
	os.Exit(least.Main(os.Args[1:], os.Stdout, os.Stderr))
}
