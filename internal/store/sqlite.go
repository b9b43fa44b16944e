package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/outpost-auth/outpost/internal/sqlitedb"
)

// sqliteEngine holds two pools on one file: readers (WAL lets them run
// beside the writer) and a single writer connection. SQLite allows one
// writer at a time anyway; with one connection, writers of this process wait
// their turn in database/sql's queue instead of in SQLite's busy handler,
// which sleeps in steps of milliseconds. Writers of other processes on the
// same file still meet the busy timeout sqlitedb sets.
type sqliteEngine struct {
	r, w *sql.DB
}

func openSQLite(path string) (*sqliteEngine, error) {
	w, err := sqlitedb.Open(path)
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	r, err := sqlitedb.Open(path)
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(max(4, 2*runtime.GOMAXPROCS(0)))
	r.SetMaxIdleConns(max(4, 2*runtime.GOMAXPROCS(0)))
	return &sqliteEngine{r: r, w: w}, nil
}

func (e *sqliteEngine) name() string    { return "sqlite" }
func (e *sqliteEngine) reader() querier { return sqlQuerier{e.r} }
func (e *sqliteEngine) writer() querier { return sqlQuerier{e.w} }
func (e *sqliteEngine) close() error    { return errors.Join(e.r.Close(), e.w.Close()) }
func (e *sqliteEngine) ping(ctx context.Context) error {
	var one int
	return e.r.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

func (e *sqliteEngine) begin(ctx context.Context) (tx, error) {
	t, err := e.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: sqlitedb sets _txlock
	if err != nil {
		return nil, err
	}
	return sqlTx{sqlQuerier{t}, t}, nil
}

func (e *sqliteEngine) classify(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return fmt.Errorf("%w (%w)", ErrExists, err)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return fmt.Errorf("%w (%w)", errForeignKey, err)
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_BUSY_SNAPSHOT, sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("%w: database is locked by another process for longer than the busy timeout (%w)", ErrConflict, err)
	}
	return err
}

// sqlRunner is what *sql.DB and *sql.Tx have in common.
type sqlRunner interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// sqlQuerier adapts database/sql to querier.
type sqlQuerier struct{ db sqlRunner }

func (q sqlQuerier) exec(ctx context.Context, s string, args ...any) (int64, error) {
	res, err := q.db.ExecContext(ctx, s, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) query(ctx context.Context, s string, args ...any) (rows, error) {
	r, err := q.db.QueryContext(ctx, s, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

func (q sqlQuerier) queryRow(ctx context.Context, s string, args ...any) row {
	return q.db.QueryRowContext(ctx, s, args...)
}

// sqlRows drops the error of Close: Err reports what matters.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

type sqlTx struct {
	sqlQuerier
	t *sql.Tx
}

func (t sqlTx) commit(context.Context) error   { return t.t.Commit() }
func (t sqlTx) rollback(context.Context) error { return t.t.Rollback() }
