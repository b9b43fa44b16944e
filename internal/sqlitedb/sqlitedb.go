// Package sqlitedb opens embedded SQLite databases (the pure-Go
// modernc.org/sqlite driver) the one way Outpost uses them everywhere: the
// server's default store, the field client's store and the site store.
//
// Open sets WAL journaling (readers never block the writer), synchronous=FULL
// (a committed transaction survives power loss: replay state must), a busy
// timeout so concurrent writers wait instead of failing, and foreign keys on.
// Every pooled connection gets the same pragmas through the DSN.
package sqlitedb

import (
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"

	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Open opens (creating if needed) the SQLite database at path. A new file is
// created with mode 0600 (it holds secrets and replay state), and an existing
// one that group or others may read is tightened to 0600 with its -wal and
// -shm files (SQLite gives new ones the database file's mode).
func Open(path string) (*sql.DB, error) {
	if err := private(path); err != nil {
		return nil, err
	}
	q := url.Values{}
	// busy_timeout first, for everything after it. The switch to WAL needs
	// the file to itself and SQLite runs no busy handler for it: two
	// processes opening a new file at once (TestMigrations opens six) can
	// meet SQLITE_BUSY there whatever the timeout, so open retries that.
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(ON)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()
	for attempt := 1; ; attempt++ {
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			return nil, fmt.Errorf("sqlite: opening %s: %w", path, err)
		}
		err = db.Ping()
		if err == nil {
			return db, nil
		}
		db.Close()
		if !busy(err) || attempt == maxOpenAttempts {
			return nil, fmt.Errorf("sqlite: opening %s: %w (is the directory writable, and the file an Outpost database?)", path, err)
		}
		time.Sleep(time.Duration(min(attempt, 10)) * 10 * time.Millisecond) // about 10 s in all
	}
}

// maxOpenAttempts bounds Open's retries of a busy first connection.
const maxOpenAttempts = 100

// busy reports whether err is SQLite's SQLITE_BUSY (or an extended code of it).
func busy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// FileMode is the mode of every Outpost SQLite file.
const FileMode = 0o600

// private creates path with FileMode when it does not exist, and takes
// group's and others' permissions away from an existing database and its
// -wal and -shm files.
func private(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return fmt.Errorf("sqlite: opening %s: %w", path, err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil && fi.Mode().Perm()&0o077 != 0 {
			err = os.Chmod(p, fi.Mode().Perm()&0o700)
		}
		if err != nil {
			return fmt.Errorf("sqlite: making %s private (mode 0600): %w", p, err)
		}
	}
	return nil
}
