//go:build unix

package hostfile

import (
	"io/fs"
	"os"
	"syscall"
)

// chown gives f the owner and group of old, so that a file edited by another user (root,
// typically) keeps its owner. It is best effort: without the right to do it, the new file
// belongs to the writer.
func chown(f *os.File, old fs.FileInfo) {
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid()) {
		return
	}
	f.Chown(int(st.Uid), int(st.Gid))
}
