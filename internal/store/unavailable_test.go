package store_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestPostgresUnavailable: when PostgreSQL cuts a replica's connections
// and refuses new ones (at max_connections; here a role's CONNECTION
// LIMIT 0, which answers the same SQLSTATE 53300), the store answers
// ErrUnavailable, which servers turn into 503 and a retry, not an internal
// error; nothing is decided meanwhile, and it works again once PostgreSQL
// accepts connections. A store whose server does not listen at all fails
// the same way.
func TestPostgresUnavailable(t *testing.T) {
	pg := storetest.RefusablePostgres(t)
	st := storetest.Open(t, pg.DSN) // migrates the schema as the role
	admin := storetest.Open(t, pg.AdminDSN)
	if err := st.CreateRealm(ctx, store.Realm{ID: "r1", Name: "r1"}); err != nil {
		t.Fatal(err)
	}
	pg.Refuse(true)
	for i := range 3 {
		if _, err := st.GetRealm(ctx, "r1"); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("read %d while refused: %v, want ErrUnavailable", i, err)
		}
	}
	if err := st.CreateRealm(ctx, store.Realm{ID: "r2", Name: "r2"}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("write while refused: %v, want ErrUnavailable", err)
	}
	if _, err := admin.GetRealm(ctx, "r2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused write was kept: %v", err)
	}
	pg.Refuse(false) // the store recovers on its own
	if _, err := st.GetRealm(ctx, "r1"); err != nil {
		t.Fatalf("after: %v", err)
	}
	dead := "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2"
	if _, err := store.Open(ctx, dead); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("no server: %v, want ErrUnavailable", err)
	}
}

// TestPostgresMisconfigured: a role PostgreSQL does not know is a
// configuration error to fix, not ErrUnavailable to retry.
func TestPostgresMisconfigured(t *testing.T) {
	u, err := url.Parse(storetest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("outpost_no_such_role")
	if _, err := store.Open(ctx, u.String()); err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("unknown role: %v, want a configuration error", err)
	}
}

// TestPostgresConnectionLost: a connection lost in the middle of a query
// (no answer, just EOF: a partition, a failover, a crashed backend) is
// ErrUnavailable too, for reads and writes, and the store recovers.
func TestPostgresConnectionLost(t *testing.T) {
	pg := storetest.CuttablePostgres(t, storetest.PostgresDSN(t))
	st := storetest.Open(t, pg.DSN)
	if err := st.CreateRealm(ctx, store.Realm{ID: "r1", Name: "r1"}); err != nil {
		t.Fatal(err)
	}
	pg.Cut(true)
	if _, err := st.GetRealm(ctx, "r1"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("read on a lost connection: %v, want ErrUnavailable", err)
	}
	if err := st.CreateRealm(ctx, store.Realm{ID: "r2", Name: "r2"}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("write on a lost connection: %v, want ErrUnavailable", err)
	}
	pg.Cut(false)
	if _, err := st.GetRealm(ctx, "r1"); err != nil {
		t.Fatalf("after: %v", err)
	}
}

// TestPostgresReadOnly: a server that answers reads and refuses writes (a
// standby after a failover: SQLSTATE 25006) gives ErrUnavailable for the
// writes, which servers answer 503 to retry, not 500; reads go on.
func TestPostgresReadOnly(t *testing.T) {
	pg := storetest.RefusablePostgres(t)
	st := storetest.Open(t, pg.DSN)
	if err := st.CreateRealm(ctx, store.Realm{ID: "r1", Name: "r1"}); err != nil {
		t.Fatal(err)
	}
	pg.ReadOnly(true, st)
	if _, err := st.GetRealm(ctx, "r1"); err != nil {
		t.Fatalf("read on a read-only server: %v", err)
	}
	if err := st.CreateRealm(ctx, store.Realm{ID: "r2", Name: "r2"}); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "25006") {
		t.Fatalf("write on a read-only server: %v, want ErrUnavailable (25006)", err)
	}
}
