package statesync

import (
	"os"
	"syscall"
)

// inode tells a replaced file (written elsewhere and renamed into place)
// from one edited in place with the same size and timestamp.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
