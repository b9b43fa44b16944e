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
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, drop, err := store.ScratchSchema(ctx, base, "outpost_test")
	if err != nil {
		t.Fatalf("%s: %v", PostgresEnv, err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Errorf("dropping the test schema: %v", err)
		}
	})
	return dsn
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

// engineCase is one named case of a suite for an optional store
// interface E (store.SyncStore, store.SiteStore, store.DeliveryStore).
type engineCase[E any] struct {
	name string
	fn   func(t *testing.T, st store.Store, e E)
}

// runEngine runs each case in a subtest on a fresh store from open,
// failing when that store does not implement E.
func runEngine[E any](t *testing.T, open func(t *testing.T) store.Store, cases []engineCase[E]) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := open(t)
			e, ok := st.(E)
			if !ok {
				t.Fatalf("%T does not implement %v", st, reflect.TypeFor[E]())
			}
			tc.fn(t, st, e)
		})
	}
}

// Engine names a storage engine and gives a fresh database for it.
type Engine struct {
	Name string
	DSN  func(t testing.TB) string
}

// Engines are both engines, for tests that run on each.
var Engines = []Engine{{"sqlite", SQLitePath}, {"postgres", PostgresDSN}}

// Clock is a settable clock for tests, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now reads the clock.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }
