package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/outpost-auth/outpost/internal/clock"
)

// The SQL of this package is written once (sql.go) and runs on both engines:
// SQLite and PostgreSQL both accept $N placeholders, ON CONFLICT, RETURNING,
// TRUE/FALSE, BIGINT and BYTEA (a type name SQLite stores blobs under
// unchanged). What differs between the engines is only how a connection is
// held and how an error is classified, and that is all an engine provides.

// querier runs statements, on a pool or inside a transaction.
type querier interface {
	// exec runs a statement and returns the number of rows it changed.
	exec(ctx context.Context, q string, args ...any) (int64, error)
	query(ctx context.Context, q string, args ...any) (rows, error)
	queryRow(ctx context.Context, q string, args ...any) row
}

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// row is one result row; Scan returns an error matching sql.ErrNoRows when
// there is none (pgx.ErrNoRows does too).
type row interface {
	Scan(dest ...any) error
}

// engine is what each database provides to the shared SQL code.
type engine interface {
	name() string
	// reader is where reads run.
	reader() querier
	// write runs fn, whose statements need not be atomic together (one
	// statement, usually), and returns once its effects are durable.
	write(ctx context.Context, fn func(q querier) error) error
	// transact runs fn's statements as one atomic, durable transaction.
	transact(ctx context.Context, fn func(q querier) error) error
	ping(ctx context.Context) error
	close() error
	// classify maps an engine error to a sentinel it wraps: ErrExists for a
	// unique violation, errForeignKey for a foreign-key violation,
	// ErrConflict for a serialisation failure, deadlock or lock timeout.
	// Other errors are returned unchanged.
	classify(err error) error
}

// classify is engine.classify for errors that may already be classified (an
// error from inside a transaction passes through it twice).
func classify(e engine, err error) error {
	for _, sentinel := range []error{ErrExists, ErrNotFound, ErrConflict, ErrReplayed, ErrInvalid, ErrUnavailable, errForeignKey} {
		if errors.Is(err, sentinel) {
			return err
		}
	}
	return e.classify(err)
}

// errForeignKey marks a foreign-key violation; callers turn it into the
// ErrNotFound that names what is missing.
var errForeignKey = errors.New("store: referenced record does not exist")

// expected reports whether err is an answer about the data (a duplicate, a
// missing row, a bad record) rather than a failure of the database.
func expected(err error) bool {
	for _, sentinel := range []error{ErrExists, ErrNotFound, ErrReplayed, ErrStale, ErrInvalid, errForeignKey, sql.ErrNoRows} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}

// batchTimeout bounds one group-commit batch (group.go).
const batchTimeout = 30 * time.Second

// maxTxAttempts bounds how often inTx retries a transaction that lost a race
// (ErrConflict). AppendAudit also retries on ErrExists: a concurrent appender
// took the sequence number.
const maxTxAttempts = 64

// inTx runs fn in a transaction (engine.transact), retrying the whole
// transaction after a short, growing, jittered pause when it fails with an
// error for which retry returns true. Errors come back classified.
func inTx(ctx context.Context, e engine, retry func(error) bool, fn func(q querier) error) error {
	var err error
	for attempt := 0; attempt < maxTxAttempts; attempt++ {
		if attempt > 0 {
			if werr := backoff(ctx, attempt); werr != nil {
				return werr
			}
		}
		err = classify(e, e.transact(ctx, fn))
		if err == nil || !retry(err) {
			return err
		}
	}
	return fmt.Errorf("%w: gave up after %d attempts: %w", ErrConflict, maxTxAttempts, err)
}

// isConflict is the retry rule of ordinary transactions.
func isConflict(err error) bool { return errors.Is(err, ErrConflict) }

// backoff sleeps about attempt milliseconds (capped at 20), jittered so that
// racing replicas spread out.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(min(attempt, 20)) * time.Millisecond
	d = d/2 + time.Duration(rand.Int64N(int64(d)/2+1)) // not a secret: math/rand is enough
	return clock.Sleep(ctx, d)
}
