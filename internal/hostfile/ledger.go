package hostfile

import (
	"context"
	"sync"
)

// Ledger accumulates byte counts moved through host-file entries in memory and adds them to
// the file when flushed. Safe for concurrent use.
type Ledger struct {
	path string

	flushMu sync.Mutex // one Flush at a time, so a count is never taken by two

	mu      sync.Mutex
	pending map[string]uint64
}

// NewLedger returns an empty Ledger for the host file at path.
func NewLedger(path string) *Ledger {
	return &Ledger{path: path, pending: make(map[string]uint64)}
}

// Path returns the host file's path.
func (l *Ledger) Path() string { return l.path }

// Add records n more bytes for the entry named name, saturating at 2^64-1. Nothing is
// written until Flush.
func (l *Ledger) Add(name string, n uint64) {
	if n == 0 {
		return
	}
	l.mu.Lock()
	l.pending[name] = SaturatingAdd(l.pending[name], n)
	l.mu.Unlock()
}

// Pending returns the bytes recorded for name and not yet written.
func (l *Ledger) Pending(name string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending[name]
}

// Flush adds every pending count to the file under Update (create=false) and clears what it
// wrote. The count of a name the file no longer has is dropped, not appended: removing a
// host (tcppipe-least --remove) takes it out of rotation even while processes that used it
// still run. Counts added while a Flush
// runs stay pending for the next one. It returns the entries as written, in file order.
//
// On error the pending counts are kept for the next Flush, so no count is ever lost or
// added twice. A Flush with nothing pending does not write: it reads the file (without the
// lock, as Read does) and returns its entries, which lets a caller refresh its view of the
// counts that other processes wrote.
func (l *Ledger) Flush() ([]Entry, error) {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()

	l.mu.Lock()
	batch := make(map[string]uint64, len(l.pending))
	for name, n := range l.pending {
		batch[name] = n
	}
	l.mu.Unlock()

	if len(batch) == 0 {
		f, _, err := Read(l.path)
		if err != nil {
			return nil, err
		}
		return f.Entries(), nil
	}

	written, err := NewStore(l.path).Add(context.Background(), batch)
	if err != nil {
		return nil, err
	}

	l.mu.Lock()
	for name, n := range batch {
		// Only Flush lowers a count, and Flushes are serialised, so pending >= n:
		// what was added since the snapshot stays.
		if left := l.pending[name] - n; left > 0 {
			l.pending[name] = left
		} else {
			delete(l.pending, name)
		}
	}
	l.mu.Unlock()
	return written, nil
}
