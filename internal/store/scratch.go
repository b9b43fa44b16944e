package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ScratchSchema creates an empty PostgreSQL schema named prefix_<random> on
// the database dsn names, for one benchmark or test run, and returns a DSN
// selecting it (search_path) and a function that drops it with everything
// in it. It never touches existing data.
func ScratchSchema(ctx context.Context, dsn, prefix string) (string, func() error, error) {
	if !isPostgresDSN(dsn) {
		return "", nil, errors.New("store: a scratch schema needs a postgres:// DSN")
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema := prefix + "_" + hex.EncodeToString(b[:])
	cfg, err := pgxpool.ParseConfig(dsn) // accepts the pool_* parameters Open does
	if err != nil {
		return "", nil, errors.New("store: the PostgreSQL DSN does not parse")
	}
	exec := func(ctx context.Context, stmt string) error {
		c, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
		if err != nil {
			return fmt.Errorf("store: connecting to PostgreSQL: %w", err)
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, stmt)
		return err
	}
	if err := exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("store: creating scratch schema: %w", err)
	}
	scratch, err := WithDSNParam(dsn, "search_path", schema)
	if err != nil {
		return "", nil, err
	}
	drop := func() error { // its own context: the caller's may be over by the time it runs
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return exec(dctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	}
	return scratch, drop, nil
}

// WithDSNParam returns the postgres:// URL dsn with its query parameter
// key set to value (a connection parameter such as search_path or
// application_name), replacing any value it had.
func WithDSNParam(dsn, key, value string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || !isPostgresDSN(dsn) {
		return "", errors.New("store: the PostgreSQL DSN does not parse: give a postgres:// URL")
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
