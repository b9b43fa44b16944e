package store

import (
	"context"
	"errors"
	"time"

	"github.com/outpost-auth/outpost/internal/clock"
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
//
// Options: [WithClock].
func Open(ctx context.Context, dsn string, opts ...Option) (Store, error) {
	o := options{}
	for _, f := range opts {
		f(&o)
	}
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
	now := clock.Or(o.now)
	if err := migrate(ctx, e, now); err != nil {
		e.close()
		return nil, err
	}
	s := newSQLStore(e)
	s.now = now
	return s, nil
}

// Option changes how Open opens a store.
type Option func(*options)

type options struct{ now func() time.Time }

// WithClock sets the clock that stamps records written without a time (a
// zero CreatedAt, an audit entry without Time) and migrations; the default
// is clock.System. The store decides nothing with it.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }
