package tunnel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"shd-tcp-tools/internal/cli"
)

// LoadSecret reads the shared link secret: the first line of the file at path, without its
// line ending. A file that cannot be read is a runtime error; an empty first line is a
// usage error (cli.UsageError). warning is non-empty when every user may read the file.
func LoadSecret(path string) (secret []byte, warning string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("--secret-file %s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("--secret-file %s: %w", path, unwrapPath(err))
	}
	if st.IsDir() {
		return nil, "", fmt.Errorf("--secret-file %s: is a directory", path)
	}
	// The first line is all we need; bound the read so a huge file costs nothing.
	r := bufio.NewReaderSize(f, 4096)
	line, err := r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, "", fmt.Errorf("--secret-file %s: first line longer than %d bytes", path, r.Size())
	case err != nil && !errors.Is(err, io.EOF):
		return nil, "", fmt.Errorf("--secret-file %s: %w", path, unwrapPath(err))
	}
	line = bytes.TrimRight(line, "\r\n")
	if len(bytes.TrimSpace(line)) == 0 {
		return nil, "", cli.Usagef("--secret-file %s: the first line is empty; put the shared secret there", path)
	}
	if st.Mode().Perm()&0o004 != 0 {
		warning = fmt.Sprintf("warning: --secret-file %s is readable by every user; chmod 600 it", path)
	}
	return bytes.Clone(line), warning, nil
}

// unwrapPath drops *fs.PathError's repetition of the path we already name.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%s", strings.TrimSpace(pe.Err.Error()))
	}
	return err
}
