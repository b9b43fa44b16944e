package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync"

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
	r, w   *stmtCache
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
	e := &sqliteEngine{r: &stmtCache{db: r}, w: &stmtCache{db: w}}
	e.writes = newCommitter(e.applyWrites)
	return e, nil
}

func (e *sqliteEngine) name() string    { return "sqlite" }
func (e *sqliteEngine) reader() querier { return sqlQuerier{cache: e.r} }
func (e *sqliteEngine) ping(ctx context.Context) error {
	var one int
	return e.r.db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

func (e *sqliteEngine) close() error {
	e.writes.close()
	e.r.close()
	e.w.close()
	return errors.Join(e.r.db.Close(), e.w.db.Close())
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
// transaction. A batch of one write (one client at a time) needs no
// savepoint: its transaction is its own, rolled back when it fails.
func (e *sqliteEngine) applyWrites(batch []*pending[func(q querier) error]) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	failAll := func(err error) {
		err = classify(e, err)
		for _, p := range batch {
			p.err = err
		}
	}
	t, err := e.w.db.BeginTx(ctx, nil)
	if err != nil {
		failAll(err)
		return
	}
	defer func() { // a write that panics must not leave the write lock held
		if r := recover(); r != nil {
			_ = t.Rollback()
			panic(r)
		}
	}()
	q := batchQuerier{sqlQuerier{cache: e.w, tx: t}, ctx, &batchHead{}}
	if len(batch) == 1 {
		p := batch[0]
		if p.err = classify(e, p.req(q)); p.err != nil {
			_ = t.Rollback()
			return
		}
		if err := t.Commit(); err != nil {
			failAll(err)
		}
		e.w.prepareMissed(ctx)
		return
	}
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
	e.w.prepareMissed(ctx)
}

// batchQuerier runs statements under the batch's context. head is the
// audit log's newest entry as the batch's acceptances last wrote it
// (AcceptCode), so that they chain on from memory.
type batchQuerier struct {
	q    sqlQuerier
	ctx  context.Context
	head *batchHead
}

// batchHead is the newest audit entry's sequence number and hash, when
// known (ok). Only acceptances set it, after their INSERT; any other writer
// in the batch that appends makes it older than the log, which the next
// acceptance's INSERT finds out (the sequence number is taken) and
// re-reads: see AcceptCode.
type batchHead struct {
	ok   bool
	seq  uint64
	hash []byte
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

// stmtCache keeps the prepared statements of one pool. The store's
// statements are a fixed set, and SQLite takes longer to prepare one than to
// run it. database/sql prepares a cached statement once on each connection
// it meets, and reuses it inside transactions on that connection.
type stmtCache struct {
	db *sql.DB
	m  sync.Map // query → *sql.Stmt

	mu     sync.Mutex
	missed []string // met inside a transaction, to prepare after it
}

func (c *stmtCache) get(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := c.m.Load(q); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := c.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if prev, loaded := c.m.LoadOrStore(q, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// prepareMissed prepares the statements met inside a transaction, when the
// writer's one connection is free again.
func (c *stmtCache) prepareMissed(ctx context.Context) {
	c.mu.Lock()
	missed := c.missed
	c.missed = nil
	c.mu.Unlock()
	for _, q := range missed {
		_, _ = c.get(ctx, q) // a failure here only means preparing again next time
	}
}

func (c *stmtCache) close() {
	c.m.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
}

// sqlQuerier adapts database/sql to querier: on a pool, or inside tx when
// it is set. Queries, and exec with arguments, are the store's own
// statements and go through the cache; exec without arguments (DDL, a
// migration file of several statements) runs as it is.
type sqlQuerier struct {
	cache *stmtCache
	tx    *sql.Tx
}

// prepared returns the cached statement for s, bound to the transaction if
// there is one, or nil to run s unprepared.
func (q sqlQuerier) prepared(ctx context.Context, s string) (*sql.Stmt, error) {
	if q.tx == nil {
		return q.cache.get(ctx, s)
	}
	if st, ok := q.cache.m.Load(s); ok {
		return q.tx.StmtContext(ctx, st.(*sql.Stmt)), nil
	}
	// Preparing on the pool now would wait for the connection this
	// transaction holds: run it unprepared, and prepare it afterwards.
	q.cache.mu.Lock()
	q.cache.missed = append(q.cache.missed, s)
	q.cache.mu.Unlock()
	return nil, nil
}

func (q sqlQuerier) runner() sqlRunner {
	if q.tx != nil {
		return q.tx
	}
	return q.cache.db
}

// sqlRunner is what *sql.DB and *sql.Tx have in common.
type sqlRunner interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func (q sqlQuerier) exec(ctx context.Context, s string, args ...any) (int64, error) {
	var st *sql.Stmt
	var err error
	if len(args) > 0 {
		if st, err = q.prepared(ctx, s); err != nil {
			return 0, err
		}
	}
	var res sql.Result
	if st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = q.runner().ExecContext(ctx, s, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) query(ctx context.Context, s string, args ...any) (rows, error) {
	st, err := q.prepared(ctx, s)
	if err != nil {
		return nil, err
	}
	var r *sql.Rows
	if st != nil {
		r, err = st.QueryContext(ctx, args...)
	} else {
		r, err = q.runner().QueryContext(ctx, s, args...)
	}
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

func (q sqlQuerier) queryRow(ctx context.Context, s string, args ...any) row {
	st, err := q.prepared(ctx, s)
	switch {
	case err != nil:
		return errRow{err}
	case st != nil:
		return st.QueryRowContext(ctx, args...)
	}
	return q.runner().QueryRowContext(ctx, s, args...)
}

// errRow is a row whose statement could not be prepared.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// sqlRows drops the error of Close: Err reports what matters.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }
