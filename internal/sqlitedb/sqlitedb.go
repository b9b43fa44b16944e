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
	"fmt"
	"net/url"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Open opens (creating if needed) the SQLite database at path.
func Open(path string) (*sql.DB, error) {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(ON)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: opening %s: %w", path, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: opening %s: %w (is the directory writable, and the file an Outpost database?)", path, err)
	}
	return db, nil
}
