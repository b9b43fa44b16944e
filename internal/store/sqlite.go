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
// beside the writer) and one writer connection, which only a committer's
// goroutine uses. SQLite allows one writer at a time anyway; funnelling
// writes through one goroutine lets them queue in Go instead of sleeping in
// SQLite's busy handler, and lets the committer group them: every write
// queued while a commit was in progress runs, each in its own savepoint, in
// the next shared transaction, which costs one fsync for all (group.go).
// Writers of other processes on the same file meet the busy timeout
// sqlitedb sets.
type sqliteEngine struct {
	r, w   *sql.DB
	writes *committer[func(q querier) error]
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
	e := &sqliteEngine{r: r, w: w}
	e.writes = newCommitter(e.applyWrites)
	return e, nil
}

func (e *sqliteEngine) name() string    { return "sqlite" }
func (e *sqliteEngine) reader() querier { return sqlQuerier{e.r} }
func (e *sqliteEngine) ping(ctx context.Context) error {
	var one int
	return e.r.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

func (e *sqliteEngine) close() error {
	e.writes.close()
	return errors.Join(e.r.Close(), e.w.Close())
}

// write and transact are the same on SQLite: every write gets a savepoint
// of its own in a shared transaction.
func (e *sqliteEngine) write(ctx context.Context, fn func(q querier) error) error {
	return e.writes.do(ctx, fn)
}

func (e *sqliteEngine) transact(ctx context.Context, fn func(q querier) error) error {
	return e.writes.do(ctx, fn)
}

// applyWrites runs a batch of writes in one transaction (BEGIN IMMEDIATE:
// sqlitedb sets _txlock). Each runs inside SAVEPOINT w: a write that fails
// with an error the store expects (a constraint, a missing row) is rolled
// back to its savepoint alone and its caller gets the error; any other error
// (I/O, a lock held by another process past the busy timeout) may have ended
// the transaction, so the whole batch is rolled back and every caller in it
// gets the error. Statements run under the batch's context, not the
// callers': interrupting one statement would roll back the whole
// transaction.
func (e *sqliteEngine) applyWrites(batch []*pending[func(q querier) error]) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	failAll := func(err error) {
		err = classify(e, err)
		for _, p := range batch {
			p.err = err
		}
	}
	t, err := e.w.BeginTx(ctx, nil)
	if err != nil {
		failAll(err)
		return
	}
	q := batchQuerier{sqlQuerier{t}, ctx}
	for _, p := range batch {
		if _, err := t.ExecContext(ctx, "SAVEPOINT w"); err != nil {
			_ = t.Rollback()
			failAll(err)
			return
		}
		if err := classify(e, p.req(q)); err != nil {
			if !expected(err) {
				_ = t.Rollback()
				failAll(err)
				return
			}
			p.err = err
			if _, err := t.ExecContext(ctx, "ROLLBACK TO w"); err != nil {
				_ = t.Rollback()
				failAll(err)
				return
			}
		}
		if _, err := t.ExecContext(ctx, "RELEASE w"); err != nil {
			_ = t.Rollback()
			failAll(err)
			return
		}
	}
	if err := t.Commit(); err != nil {
		failAll(err)
	}
}

// batchQuerier runs statements under the batch's context.
type batchQuerier struct {
	q   sqlQuerier
	ctx context.Context
}

func (b batchQuerier) exec(_ context.Context, s string, args ...any) (int64, error) {
	return b.q.exec(b.ctx, s, args...)
}

func (b batchQuerier) query(_ context.Context, s string, args ...any) (rows, error) {
	return b.q.query(b.ctx, s, args...)
}

func (b batchQuerier) queryRow(_ context.Context, s string, args ...any) row {
	return b.q.queryRow(b.ctx, s, args...)
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
