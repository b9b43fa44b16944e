package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/outpost-auth/outpost/internal/store"
)

// Refusable is a PostgreSQL scratch schema reached as a role of its own,
// whose connections a test can cut and refuse, as a server at
// max_connections, shutting down or restarting does.
type Refusable struct {
	// DSN names the schema as the role (no superuser: PostgreSQL applies
	// connection limits to it), with a pool of at most 4 connections.
	DSN string
	// AdminDSN names the same schema as the superuser of PostgresEnv,
	// which is never refused.
	AdminDSN string
	t        testing.TB
	role     string
	su       *pgx.Conn
}

// RefusablePostgres makes a Refusable on a fresh scratch schema
// (PostgresDSN: it skips the test when PostgresEnv is unset); the role is
// dropped when the test ends.
func RefusablePostgres(t testing.TB) *Refusable {
	t.Helper()
	admin := PostgresDSN(t)
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	schema := u.Query().Get("search_path")
	var b [6]byte
	_, _ = rand.Read(b[:])
	r := &Refusable{AdminDSN: admin, t: t, role: "outpost_refusable_" + hex.EncodeToString(b[:])}
	if r.su, err = pgx.Connect(context.Background(), admin); err != nil {
		t.Fatal(err)
	}
	role := pgx.Identifier{r.role}.Sanitize()
	t.Cleanup(func() { // roles are cluster-wide: one left behind outlives the test run
		ctx := context.Background()
		for _, q := range []string{terminate, "DROP OWNED BY " + role, "DROP ROLE " + role} { // before PostgresDSN drops the schema
			args := []any{}
			if q == terminate {
				args = append(args, r.role)
			}
			if _, err := r.su.Exec(ctx, q, args...); err != nil {
				t.Errorf("removing test role %s: %s: %v", r.role, q, err)
			}
		}
		r.su.Close(ctx)
	})
	r.exec("CREATE ROLE " + role + " LOGIN")
	r.exec("GRANT ALL ON SCHEMA " + pgx.Identifier{schema}.Sanitize() + " TO " + role)
	u.User = url.User(r.role)
	q := u.Query()
	q.Set("pool_max_conns", "4")
	u.RawQuery = q.Encode()
	r.DSN = u.String()
	return r
}

// Refuse cuts the role's connections and refuses new ones (SQLSTATE 53300,
// as at max_connections) when on is set, and accepts them again otherwise.
func (r *Refusable) Refuse(on bool) {
	r.t.Helper()
	role := pgx.Identifier{r.role}.Sanitize()
	if !on {
		r.exec("ALTER ROLE " + role + " CONNECTION LIMIT -1")
		return
	}
	r.exec("ALTER ROLE " + role + " CONNECTION LIMIT 0")
	if _, err := r.su.Exec(context.Background(), terminate, r.role); err != nil {
		r.t.Fatal(err)
	}
}

// ReadOnly makes the role's sessions read-only (default_transaction_read_only,
// as on a standby: a write fails with SQLSTATE 25006) when on is set, and
// writable again otherwise. Its open sessions are ended so that the next
// ones take the setting, and st, a store on DSN, is read until its pool has
// dropped the ended ones (each fails once).
func (r *Refusable) ReadOnly(on bool, st store.Store) {
	r.t.Helper()
	role := pgx.Identifier{r.role}.Sanitize()
	if on {
		r.exec("ALTER ROLE " + role + " SET default_transaction_read_only = on")
	} else {
		r.exec("ALTER ROLE " + role + " RESET default_transaction_read_only")
	}
	if _, err := r.su.Exec(context.Background(), terminate, r.role); err != nil {
		r.t.Fatal(err)
	}
	var err error
	for range 20 {
		if _, err = st.GetRealm(context.Background(), "storetest-probe"); err == nil || errors.Is(err, store.ErrNotFound) {
			return // the database answered
		}
	}
	r.t.Fatalf("reads after the switch (read-only %v): %v", on, err)
}

// terminate ends a role's sessions ($1), waiting up to 5 s for each to exit.
const terminate = "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1"

func (r *Refusable) exec(q string) {
	r.t.Helper()
	if _, err := r.su.Exec(context.Background(), q); err != nil {
		r.t.Fatalf("%s: %v", q, err)
	}
}
