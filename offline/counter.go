package offline

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/devicelog"
)

// Counter is a monotonic counter: a number that only goes up, kept where a
// copy of the store cannot take it back. The store advances it after each
// decision so that it counts the entries of the device log, and refuses to
// work when its log holds fewer entries than the counter has counted: the
// store was restored from an older copy (ErrRolledBack).
//
// The default, [FileCounter], is software: a file in the data directory. It
// catches a database restored on its own (field.db from a backup), but not a
// copy of the whole directory restored whole — nothing kept beside the store
// can. A hardware counter that no file copy can roll back (a TPM 2.0 NV
// index of type counter, a secure element's monotonic counter) implements
// this interface and is passed as Options.Counter; docs/offline.md says what
// each one prevents.
type Counter interface {
	// Read returns the counter's value.
	Read(ctx context.Context) (uint64, error)
	// Increment adds one to the counter and returns the new value.
	Increment(ctx context.Context) (uint64, error)
}

// CounterFile is the FileCounter's file in a field data directory.
const CounterFile = "monotonic.counter"

// ErrCounterMissing: the monotonic counter of a store that has one is gone.
var ErrCounterMissing = errors.New("offline: the device's monotonic counter is missing")

// FileCounter is the software Counter: a decimal number in a file, replaced
// atomically (and synced) at each increment. It does not stop a restore of
// the whole data directory; see [Counter].
type FileCounter struct {
	Path string
}

// Read returns the file's value; ErrCounterMissing when there is no file.
func (c *FileCounter) Read(ctx context.Context) (uint64, error) {
	raw, err := datadir.ReadFileLimit(c.Path, 64)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%w: %s", ErrCounterMissing, c.Path)
	}
	if err != nil {
		return 0, fmt.Errorf("offline: reading the monotonic counter: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 63)
	if err != nil {
		return 0, fmt.Errorf("offline: the monotonic counter %s is unreadable", c.Path)
	}
	return n, nil
}

// Increment adds one and writes the file atomically.
func (c *FileCounter) Increment(ctx context.Context) (uint64, error) {
	n, err := c.Read(ctx)
	if err != nil {
		return 0, err
	}
	return n + 1, c.write(n + 1)
}

func (c *FileCounter) write(n uint64) error {
	if err := datadir.WriteFileAtomic(c.Path, []byte(strconv.FormatUint(n, 10)+"\n"), 0o600); err != nil {
		return fmt.Errorf("offline: writing the monotonic counter: %w", err)
	}
	return nil
}

// create makes the file at n unless it exists (a new store, or one made
// before the counter, whose log ends at n).
func (c *FileCounter) create(n uint64) error {
	if _, err := os.Stat(c.Path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return c.write(n)
}

// startCounter readies the counter of a store whose log ends at head (a new
// store, or one made before the counter) and returns its base.
func (s *Store) startCounter(ctx context.Context, head uint64) (int64, error) {
	if fc, ok := s.counter.(*FileCounter); ok {
		if err := fc.create(head); err != nil {
			return 0, fmt.Errorf("offline: creating the monotonic counter: %w", err)
		}
	}
	c, err := s.counter.Read(ctx)
	if err != nil {
		return 0, err
	}
	return int64(c) - int64(head), nil
}

// openCounter reads the counter's base and checks the counter against the
// log. Only a store whose schema predates the marker (version 1) may lack
// a base: it is set up from the log it has. Either way the store is then
// marked version 2, whose stores must have a base: without one (only an
// edit removes it, and it would let a restored copy pass for a store made
// before the counter) the store refuses to open with ErrRolledBack.
func (s *Store) openCounter(ctx context.Context) error {
	var v []byte
	err := s.db.QueryRowContext(ctx, `SELECT v FROM field_meta WHERE k = 'counter_base'`).Scan(&v)
	switch {
	case errors.Is(err, sql.ErrNoRows) && s.schema != schemaNoMarker:
		return fmt.Errorf("%w: this store was made with one (schema %s) but the counter's base is gone from %s: "+
			"the store was edited, perhaps after a restore from an older copy; re-initialise the device ('outpost field init' in a new directory) and re-register it",
			ErrRolledBack, s.schema, DatabaseFile)
	case errors.Is(err, sql.ErrNoRows):
		last, err := devicelog.Last(ctx, s.db)
		if err != nil || last == nil {
			return fmt.Errorf("%w: reading the device log: %v", ErrCorrupt, err)
		}
		if s.base, err = s.startCounter(ctx, last.Seq); err != nil {
			return err
		}
		if err := s.markSchema(ctx, true); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("%w: reading the monotonic counter's base: %v", ErrCorrupt, err)
	default:
		if s.base, err = strconv.ParseInt(string(v), 10, 64); err != nil {
			return fmt.Errorf("%w: the monotonic counter's base is unreadable", ErrCorrupt)
		}
		if s.schema == schemaNoMarker {
			if err := s.markSchema(ctx, false); err != nil {
				return err
			}
		}
	}
	return s.advance(ctx)
}

// markSchema marks a version 1 store version 2, recording s.base with it
// when withBase, in one transaction.
func (s *Store) markSchema(ctx context.Context, withBase bool) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("offline: %w", err)
	}
	defer tx.Rollback()
	if withBase {
		if _, err := tx.ExecContext(ctx, `INSERT INTO field_meta (k, v) VALUES ('counter_base', ?)`, []byte(strconv.FormatInt(s.base, 10))); err != nil {
			return fmt.Errorf("offline: recording the monotonic counter: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE field_meta SET v = ? WHERE k = 'schema'`, []byte(schemaVersion)); err != nil {
		return fmt.Errorf("offline: recording the schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("offline: recording the monotonic counter: %w", err)
	}
	s.schema = schemaVersion
	return nil
}

// advance brings the counter up to the log's head after a decision's
// transaction has committed, in a transaction of its own that holds
// SQLite's write lock, so that processes sharing the store never increment
// twice for one entry. A crash between the two leaves the counter behind the
// log, which the next decision makes up: never a false alarm. The counter
// ahead of the log means the log lost entries it had: ErrRolledBack.
func (s *Store) advance(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("offline: %w", err)
	}
	defer tx.Rollback()
	last, err := devicelog.Last(ctx, tx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	var head int64
	if last != nil {
		head = int64(last.Seq)
	}
	c, err := s.counter.Read(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	counted := int64(c) - s.base
	if counted > head {
		return fmt.Errorf("%w: this store's log ends at entry %d but the device's monotonic counter counted %d entries: "+
			"the store was restored from an older copy; re-initialise the device ('outpost field init' in a new directory) and re-register it",
			ErrRolledBack, head, counted)
	}
	for ; counted < head; counted++ {
		if _, err := s.counter.Increment(ctx); err != nil {
			return err
		}
	}
	return nil
}
