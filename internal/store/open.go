package store

import (
	"context"
	"errors"
)

// Open opens the store dsn names and brings its schema up to date (see
// migrate.go), then returns it ready for use:
//
//   - postgres://… or postgresql://… opens PostgreSQL (or CockroachDB)
//     through a pgx pool. Every pgx connection parameter works, among them
//     search_path=SCHEMA (to keep Outpost's tables in their own schema) and
//     pool_max_conns=N.
//   - anything else is the path of a SQLite file, created if missing, opened
//     with the settings of internal/sqlitedb (WAL, synchronous=FULL, busy
//     timeout, foreign keys).
//
// Opening is safe while other processes open the same database: migrations
// are applied exactly once.
func Open(ctx context.Context, dsn string) (Store, error) {
	if dsn == "" {
		return nil, errors.New("store: empty database DSN: give a SQLite file path or a postgres:// URL")
	}
	var e engine
	var err error
	if isPostgresDSN(dsn) {
		e, err = openPostgres(ctx, dsn)
	} else {
		e, err = openSQLite(dsn)
	}
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, e); err != nil {
		e.close()
		return nil, err
	}
	return newSQLStore(e), nil
}
