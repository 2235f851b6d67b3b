package tunnel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"shd-tcp-tools/internal/connlog"
	"shd-tcp-tools/internal/patherr"
	"shd-tcp-tools/internal/regfile"
)

// ErrEmptySecret is wrapped by LoadSecret's error when the file's first line is empty: a
// mistake in what the user gave, where any other error is the file's.
var ErrEmptySecret = errors.New("the first line is empty; put the shared secret there")

// errReadable is LoadSecret's warning about a secret file every user may read.
var errReadable = errors.New("readable by every user; chmod 600 it")

// LoadSecret reads the shared link secret: the first line of the file at path, without its
// line ending. A file that cannot be read is an error; an empty first line is an error
// wrapping ErrEmptySecret. warning is non-nil when every user may read the file. The
// error and the warning name the file as "secret file PATH" (an *fs.PathError, as
// patherr.Wrap makes it), for cmd/* to name by its flag (cli.FileError).
func LoadSecret(path string) (secret []byte, warning, err error) {
	const what = "secret file"
	f, err := regfile.Open(path) // a FIFO would hold the start, or every later reload
	if err != nil {
		return nil, nil, patherr.Wrap(what, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, patherr.Wrap(what, path, err)
	}
	// The first line is all we need; bound the read so a huge file costs nothing.
	r := bufio.NewReaderSize(f, 4096)
	line, err := r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, nil, patherr.Wrap(what, path, fmt.Errorf("first line longer than %d bytes", r.Size()))
	case err != nil && !errors.Is(err, io.EOF):
		return nil, nil, patherr.Wrap(what, path, err)
	}
	line = bytes.TrimRight(line, "\r\n")
	if len(bytes.TrimSpace(line)) == 0 {
		return nil, nil, patherr.Wrap(what, path, ErrEmptySecret)
	}
	if st.Mode().Perm()&0o004 != 0 {
		warning = patherr.Wrap(what, path, errReadable)
	}
	return bytes.Clone(line), warning, nil
}

// secretBox holds the secret a relay or an agent proves now, which a reload may replace.
// Safe for simultaneous use.
type secretBox struct {
	file string // where the secret was read, for reload; "" for none
	p    atomic.Pointer[[]byte]
}

func newSecretBox(secret []byte, file string) *secretBox {
	b := &secretBox{file: file}
	if secret != nil {
		b.p.Store(&secret)
	}
	return b
}

// get returns the secret in use, nil for none.
func (b *secretBox) get() []byte {
	if p := b.p.Load(); p != nil {
		return *p
	}
	return nil
}

// reload rereads the secret file and logs what came of it. A file that cannot be read or
// has no secret keeps the secret in use. It reports whether the secret changed.
func (b *secretBox) reload(log *connlog.Logger) bool {
	if b.file == "" || b.get() == nil {
		log.Printf("reload: nothing to reread (no secret file)")
		return false
	}
	secret, warning, err := LoadSecret(b.file)
	if err != nil {
		log.Warnf("rereading %v; keeping the secret in use", err)
		return false
	}
	if warning != nil {
		log.Warnf("warning: %v", warning)
	}
	if bytes.Equal(secret, b.get()) {
		log.Printf("reread secret file %s: the secret is unchanged", b.file)
		return false
	}
	b.p.Store(&secret)
	log.Printf("reread secret file %s: links must prove the new secret from now on", b.file)
	return true
}
