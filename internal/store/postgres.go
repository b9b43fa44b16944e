package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgEngine is PostgreSQL (or CockroachDB) through one pgx pool, used for
// reads, writes and transactions alike. Transactions run at the server's
// default isolation (READ COMMITTED on PostgreSQL, SERIALIZABLE on
// CockroachDB); the conditional UPDATEs and the audit sequence number's
// primary key make both correct.
type pgEngine struct {
	pool *pgxpool.Pool
}

// isPostgresDSN reports whether dsn names a PostgreSQL server.
func isPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// defaultPGConns is the pool size when the DSN sets no pool_max_conns.
// pgxpool's own default (4 on a 2-core machine) leaves PostgreSQL too few
// concurrent commits to group; 16 lets it share one WAL flush among many
// verifications, and several replicas still fit in PostgreSQL's default
// max_connections of 100.
func defaultPGConns() int32 { return int32(max(16, 4*runtime.GOMAXPROCS(0))) }

func openPostgres(ctx context.Context, dsn string) (*pgEngine, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors quote the DSN, password included: say only what to fix.
		return nil, errors.New("postgres: the DSN does not parse; use postgres://USER[:PASSWORD]@HOST:PORT/DB?sslmode=...[&search_path=SCHEMA][&pool_max_conns=N]")
	}
	if u, err := url.Parse(dsn); err == nil && !u.Query().Has("pool_max_conns") {
		cfg.MaxConns = defaultPGConns()
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connecting to %s:%d/%s: %w (is the server running and the DSN right?)",
			cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, (&pgEngine{}).classify(err))
	}
	return &pgEngine{pool: pool}, nil
}

func (e *pgEngine) name() string                   { return "postgres" }
func (e *pgEngine) reader() querier                { return pgQuerier{e.pool} }
func (e *pgEngine) ping(ctx context.Context) error { return e.pool.Ping(ctx) }
func (e *pgEngine) close() error                   { e.pool.Close(); return nil }

// write runs fn's statements on the pool, each its own implicit transaction:
// the server commits them together with its other sessions' commits (group
// commit happens in PostgreSQL itself).
func (e *pgEngine) write(ctx context.Context, fn func(q querier) error) error {
	return fn(pgQuerier{e.pool})
}

func (e *pgEngine) transact(ctx context.Context, fn func(q querier) error) error {
	var fnErr error
	err := pgx.BeginFunc(ctx, e.pool, func(t pgx.Tx) error { fnErr = fn(pgQuerier{t}); return fnErr })
	if err != nil && fnErr == nil {
		return lost(err) // BEGIN's or COMMIT's: pgx's own
	}
	return err
}

// SQLSTATE codes classify maps.
const (
	pgUniqueViolation      = "23505"
	pgDuplicateTable       = "42P07" // CREATE TABLE IF NOT EXISTS racing another session
	pgDuplicateObject      = "42710"
	pgForeignKeyViolation  = "23503"
	pgSerializationFailure = "40001"
	pgDeadlockDetected     = "40P01"
	pgTooManyConnections   = "53300"
	pgAdminShutdown        = "57P01"
	pgCrashShutdown        = "57P02"
	pgCannotConnectNow     = "57P03" // starting up or in recovery
	pgReadOnlyTransaction  = "25006" // a write on a standby: a failover not followed yet
	pgDiskFull             = "53100"
	pgOutOfMemory          = "53200"
)

func (e *pgEngine) classify(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		var ce *pgconn.ConnectError
		if errors.As(err, &ce) { // no answer: refused, unreachable, timed out
			return fmt.Errorf("%w (%w)", ErrUnavailable, err)
		}
		return err // a connection lost mid-request was marked where pgx returned it (lost)
	}
	// A server's answer, on a connection or refusing one. A wrong password
	// or database name (classes 28, 3D) is a configuration error, not this.
	switch pe.Code {
	case pgTooManyConnections, pgAdminShutdown, pgCrashShutdown, pgCannotConnectNow, pgReadOnlyTransaction, pgDiskFull, pgOutOfMemory,
		"08000", "08001", "08003", "08004", "08006": // class 08, but not 08P01 protocol_violation: a bug, not an outage
		return fmt.Errorf("%w (%w)", ErrUnavailable, err)
	case pgUniqueViolation, pgDuplicateTable, pgDuplicateObject:
		return fmt.Errorf("%w (%w)", ErrExists, err)
	case pgForeignKeyViolation:
		return fmt.Errorf("%w (%w)", errForeignKey, err)
	case pgSerializationFailure, pgDeadlockDetected:
		return fmt.Errorf("%w (%w)", ErrConflict, err)
	}
	return err
}

// lost marks err, returned by a pgx call, as ErrUnavailable when it is a
// connection that ended in the middle of a request without an answer:
// pgx's io.ErrUnexpectedEOF (it turns the end of the stream into that), a
// reset or broken pipe, or a connection already closed. A partition, a
// failover or a crashed backend does this; whether a write sent before it
// committed is unknown. It is applied where pgx answers (pgQuerier, its
// rows, BEGIN and COMMIT, the acceptance batch), never to what a caller's
// callback returns inside a transaction, whose io.ErrUnexpectedEOF may be
// a truncated input of its own.
func lost(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	for _, cut := range []error{io.ErrUnexpectedEOF, syscall.ECONNRESET, syscall.EPIPE, syscall.ETIMEDOUT, net.ErrClosed} {
		if errors.Is(err, cut) {
			return fmt.Errorf("%w (%w)", ErrUnavailable, err)
		}
	}
	return err
}

// pgRunner is what *pgxpool.Pool and pgx.Tx have in common.
type pgRunner interface {
	Exec(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, q string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, q string, args ...any) pgx.Row
}

// pgQuerier adapts pgx to querier.
type pgQuerier struct{ db pgRunner }

func (q pgQuerier) exec(ctx context.Context, s string, args ...any) (int64, error) {
	tag, err := q.db.Exec(ctx, s, args...)
	return tag.RowsAffected(), lost(err)
}

func (q pgQuerier) query(ctx context.Context, s string, args ...any) (rows, error) {
	r, err := q.db.Query(ctx, s, args...)
	if err != nil {
		return nil, lost(err)
	}
	return pgRows{r}, nil
}

func (q pgQuerier) queryRow(ctx context.Context, s string, args ...any) row {
	return pgRow{q.db.QueryRow(ctx, s, args...)}
}

// pgRows and pgRow mark a lost connection in pgx's results (lost).
type pgRows struct{ pgx.Rows }

func (r pgRows) Scan(dest ...any) error { return lost(r.Rows.Scan(dest...)) }
func (r pgRows) Err() error             { return lost(r.Rows.Err()) }

type pgRow struct{ pgx.Row }

func (r pgRow) Scan(dest ...any) error { return lost(r.Row.Scan(dest...)) }
