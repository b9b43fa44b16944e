package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// Migrations are the files migrations/NNNN_name.sql, numbered upwards from
// 0001, each applied once, in order, in its own transaction, by every Open.
// Numbers may skip (parallel branches each reserve their own number, and a
// branch may land before the one holding a lower number): a skipped number
// is applied when its file arrives, since each version is claimed on its
// own. To change the schema, add the next file; never edit one that
// has shipped (Open refuses a database whose recorded checksum of an applied
// migration differs from the file's). Write each in the SQL all three
// databases accept: CREATE TABLE / CREATE INDEX / ALTER TABLE ADD COLUMN,
// BIGINT, TEXT, BOOLEAN, BYTEA, no triggers, no functions. A file whose
// first line is "-- engine: NAME" (sqlite or postgres) runs only on that
// engine and is recorded as applied, without running, on the others: for a
// physical layout one engine needs (SQLite's rowid), never for the model.
//
// Applying is safe when several replicas start at once: a migration's first
// statement claims its version in schema_migrations with
// INSERT ... ON CONFLICT DO NOTHING. A replica that finds the row taken (or
// that waits on the claiming transaction and then finds it) skips the file.
// The claim and the file's statements commit together, so a replica that
// crashes halfway leaves nothing claimed. No advisory lock is needed, which
// CockroachDB does not offer.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int64
	name    string
	sql     string
	sum     []byte // SHA-256 of the file
	engine  string // "": every engine
}

// migrations parses the embedded files; a naming mistake is a programming
// error caught by the tests, reported rather than panicking.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	ms := make([]migration, 0, len(names))
	for _, path := range names { // Glob sorts, and the numbers have four digits
		name := strings.TrimPrefix(path, "migrations/")
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || len(num) != 4 || err != nil || v < 1 || (len(ms) > 0 && v <= ms[len(ms)-1].version) {
			return nil, fmt.Errorf("store: migration file %s: want NNNN_name.sql, numbered upwards from 0001, each number once", name)
		}
		body, err := migrationFiles.ReadFile(path)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(body)
		m := migration{version: v, name: name, sql: string(body), sum: sum[:]}
		if m.engine, err = migrationEngine(m.sql); err != nil {
			return nil, fmt.Errorf("store: migration file %s: %w", name, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// migrationEngine is the engine a migration's first line restricts it to
// ("-- engine: sqlite" or "-- engine: postgres"), or "" for every engine.
func migrationEngine(sql string) (string, error) {
	first, _, _ := strings.Cut(sql, "\n")
	name, ok := strings.CutPrefix(first, "-- engine:")
	if !ok {
		return "", nil
	}
	switch name = strings.TrimSpace(name); name {
	case "sqlite", "postgres":
		return name, nil
	}
	return "", fmt.Errorf("engine %q on its first line: want sqlite or postgres", name)
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT NOT NULL PRIMARY KEY,
	name       TEXT   NOT NULL,
	checksum   BYTEA  NOT NULL,
	applied_us BIGINT NOT NULL
)`

// migrate brings the database to the newest schema this binary knows.
func migrate(ctx context.Context, e engine, now func() time.Time) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	// Two PostgreSQL sessions running CREATE TABLE IF NOT EXISTS at once can
	// collide in the system catalogue (a unique violation): the loser retries
	// and then sees the table.
	for attempt := 0; ; attempt++ {
		err := classify(e, e.write(ctx, func(q querier) error {
			_, err := q.exec(ctx, createMigrationsTable)
			return err
		}))
		if err == nil {
			break
		}
		if attempt >= 10 || !(errors.Is(err, ErrExists) || errors.Is(err, ErrConflict)) {
			return fmt.Errorf("store: creating schema_migrations: %w", err)
		}
		if err := backoff(ctx, attempt+1); err != nil {
			return err
		}
	}
	applied, err := appliedMigrations(ctx, e)
	if err != nil {
		return err
	}
	known := make(map[int64]migration, len(ms))
	for _, m := range ms {
		known[m.version] = m
	}
	for v, sum := range applied {
		m, ok := known[v]
		if !ok {
			return fmt.Errorf("store: the database has schema version %d, which this outpost does not know: run a newer outpost against it", v)
		}
		if !bytes.Equal(sum, m.sum) {
			return fmt.Errorf("store: migration %s differs from the one applied to this database: migrations must never be edited once shipped; add a new one instead", m.name)
		}
	}
	for _, m := range ms {
		if _, ok := applied[m.version]; ok {
			continue
		}
		err := inTx(ctx, e, isConflict, func(q querier) error {
			n, err := q.exec(ctx, `INSERT INTO schema_migrations (version, name, checksum, applied_us) VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO NOTHING`,
				m.version, m.name, m.sum, now().UnixMicro())
			if err != nil || n == 0 { // n == 0: another replica applied it
				return err
			}
			if m.engine != "" && m.engine != e.name() {
				return nil // another engine's layout: recorded, nothing to run
			}
			_, err = q.exec(ctx, m.sql)
			return err
		})
		if err != nil {
			return fmt.Errorf("store: applying migration %s: %w", m.name, err)
		}
	}
	return nil
}

func appliedMigrations(ctx context.Context, e engine) (map[int64][]byte, error) {
	rs, err := e.reader().query(ctx, `SELECT version, checksum FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("store: reading schema_migrations: %w", err)
	}
	defer rs.Close()
	applied := map[int64][]byte{}
	for rs.Next() {
		var v int64
		var sum []byte
		if err := rs.Scan(&v, &sum); err != nil {
			return nil, fmt.Errorf("store: reading schema_migrations: %w", err)
		}
		applied[v] = sum
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("store: reading schema_migrations: %w", err)
	}
	return applied, nil
}
