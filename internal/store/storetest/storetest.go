// Package storetest is the contract test suite of [store.Store]: every engine
// runs the same [Run], against a real database.
//
// It also gives other packages' tests a real database to work with:
//
//	st := storetest.Open(t, storetest.SQLitePath(t))   // a fresh SQLite file
//	st := storetest.Open(t, storetest.PostgresDSN(t))  // a fresh PostgreSQL schema
//
// PostgresDSN reads the server from OUTPOST_TEST_POSTGRES_DSN and skips the
// test when it is unset. It creates a schema of its own (outpost_test_…),
// returns a DSN whose search_path points at it, and drops it when the test
// ends, so that tests and packages running at the same time never see each
// other's rows.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-auth/outpost/internal/store"
)

// PostgresEnv is the environment variable that names the test PostgreSQL server.
const PostgresEnv = "OUTPOST_TEST_POSTGRES_DSN"

// SkipMessage is why PostgreSQL tests skip when PostgresEnv is unset.
const SkipMessage = "set " + PostgresEnv + "=postgres://postgres@127.0.0.1:5432/test?sslmode=disable to run the PostgreSQL engine tests"

// SQLitePath returns the path of a new SQLite file in a temporary directory
// removed when the test ends.
func SQLitePath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "outpost.db")
}

// PostgresDSN creates an empty schema on the server OUTPOST_TEST_POSTGRES_DSN
// names and returns a DSN with search_path set to it; the schema is dropped
// when the test ends. It skips the test when the variable is unset.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Skip(SkipMessage)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s must be a postgres:// URL", PostgresEnv)
	}
	var b [8]byte
	rand.Read(b[:])
	schema := "outpost_test_" + hex.EncodeToString(b[:])
	admin(t, base, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { admin(t, base, "DROP SCHEMA "+schema+" CASCADE") })
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// admin runs one statement on its own connection.
func admin(t testing.TB, dsn, stmt string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(dsn) // accepts the pool_* parameters store.Open does
	if err != nil {
		t.Fatalf("%s does not parse", PostgresEnv)
	}
	c, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		t.Fatalf("connecting to the test PostgreSQL (%s): %v", PostgresEnv, err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

// Open opens the store dsn names and closes it when the test ends.
func Open(t testing.TB, dsn string) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	return st
}
