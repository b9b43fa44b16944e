package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

var ctx = context.Background()

// engines names each engine with a function giving a fresh, empty database.
var engines = []struct {
	name string
	dsn  func(t testing.TB) string
}{
	{"sqlite", storetest.SQLitePath},
	{"postgres", storetest.PostgresDSN},
}

func TestContract(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store { return storetest.Open(t, eng.dsn(t)) })
		})
	}
}

func TestOpenDispatch(t *testing.T) {
	if _, err := store.Open(ctx, ""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
	st := storetest.Open(t, storetest.SQLitePath(t))
	if st.Engine() != "sqlite" {
		t.Errorf("a file path opened %s", st.Engine())
	}
	_, err := store.Open(ctx, "postgres://nobody:secret-password@127.0.0.1:1/x?sslmode=disable&connect_timeout=1")
	if err == nil || strings.Contains(err.Error(), "secret-password") {
		t.Errorf("Open on a closed port: %v (must fail without quoting the password)", err)
	}
	_, err = store.Open(ctx, "postgres://nobody:secret-password@[::1/x?bad=%zz")
	if err == nil || strings.Contains(err.Error(), "secret-password") {
		t.Errorf("Open with a malformed DSN: %v (must fail without quoting the password)", err)
	}
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			if got := storetest.Open(t, eng.dsn(t)).Engine(); got != eng.name {
				t.Errorf("Engine() = %q", got)
			}
		})
	}
}

// rawExec runs a statement on the database directly, as an operator would.
func rawExec(t *testing.T, engine, dsn, stmt string) {
	t.Helper()
	if engine == "postgres" {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
		return
	}
	db, err := sqlitedb.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatal(err)
	}
}

func TestMigrations(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			dsn := eng.dsn(t)
			// Several replicas starting at once all open, and the schema is applied once.
			const n = 6
			stores := make([]store.Store, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { stores[i], errs[i] = store.Open(ctx, dsn) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("concurrent Open %d: %v", i, err)
				}
				t.Cleanup(func() { stores[i].Close() })
			}
			must(t, stores[0].CreateRealm(ctx, store.Realm{ID: "r1"}))
			if _, err := stores[n-1].GetRealm(ctx, "r1"); err != nil {
				t.Errorf("replicas do not share the database: %v", err)
			}

			// Reopening finds everything applied and keeps the data.
			st := storetest.Open(t, dsn)
			if _, err := st.GetRealm(ctx, "r1"); err != nil {
				t.Errorf("data lost on reopen: %v", err)
			}

			// A database from a newer outpost is refused.
			rawExec(t, eng.name, dsn, `INSERT INTO schema_migrations (version, name, checksum, applied_us) VALUES (9999, '9999_future.sql', 'x', 0)`)
			if _, err := store.Open(ctx, dsn); err == nil || !strings.Contains(err.Error(), "newer outpost") {
				t.Errorf("Open on a newer schema: %v", err)
			}
			rawExec(t, eng.name, dsn, `DELETE FROM schema_migrations WHERE version = 9999`)

			// An applied migration edited afterwards is refused.
			rawExec(t, eng.name, dsn, `UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1`)
			if _, err := store.Open(ctx, dsn); err == nil || !strings.Contains(err.Error(), "never be edited") {
				t.Errorf("Open after a migration changed: %v", err)
			}
		})
	}
}

// TestTwoStoresOneDatabase runs the races of the contract suite across two
// Store values on one database, as two replicas would: nothing in-process
// (the audit queue, SQLite's single writer connection) serialises them.
func TestTwoStoresOneDatabase(t *testing.T) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			dsn := eng.dsn(t)
			a, b := storetest.Open(t, dsn), storetest.Open(t, dsn)
			must(t, a.CreateRealm(ctx, store.Realm{ID: "r1"}))
			must(t, a.CreateUser(ctx, store.User{Realm: "r1", ID: "alice"}))
			const tokens = 20
			for i := range tokens {
				must(t, a.CreateToken(ctx, store.Token{Realm: "r1", UserID: "alice", ID: fmt.Sprint("t", i), Type: "totp",
					Algorithm: "SHA1", Digits: 6, Period: 30, SeedMode: store.SeedDerived, Status: store.TokenActive}))
			}
			const perStore = 8
			var mu sync.Mutex
			wins := map[string]int{}
			var wg sync.WaitGroup
			for i := range 2 * perStore {
				st := []store.Store{a, b}[i%2]
				wg.Go(func() {
					for tok := range tokens {
						id := fmt.Sprint("t", tok)
						err := st.AdvanceToken(ctx, "r1", "alice", id, 1000)
						if err != nil && !errors.Is(err, store.ErrReplayed) {
							t.Error(err)
						}
						if _, aerr := st.AppendAudit(ctx, eventlog.Entry{Kind: "verify.ok", Subject: fmt.Sprint(i, "/", tok)}); aerr != nil {
							t.Error(aerr)
						}
						if err == nil {
							mu.Lock()
							wins[id]++
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
			for tok := range tokens {
				if id := fmt.Sprint("t", tok); wins[id] != 1 {
					t.Errorf("token %s: value accepted %d times, want once", id, wins[id])
				}
			}
			checkAudit(t, a, 2*perStore*tokens)
		})
	}
}

// checkAudit reads the whole audit log and checks it has n entries in one
// unbroken chain.
func checkAudit(t *testing.T, st store.Store, n int) {
	t.Helper()
	var all []eventlog.Entry
	for {
		page, err := st.ListAudit(ctx, uint64(len(all)), store.MaxListLimit)
		must(t, err)
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
	}
	if len(all) != n {
		t.Errorf("audit log has %d entries, want %d", len(all), n)
	}
	if i, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		t.Errorf("audit chain broken at %d: %v", i, err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSQLiteBackup makes the backup docs/storage.md recommends (VACUUM INTO)
// while another goroutine keeps writing, and opens the copy as a store.
func TestSQLiteBackup(t *testing.T) {
	path := storetest.SQLitePath(t)
	st := storetest.Open(t, path)
	must(t, st.CreateRealm(ctx, store.Realm{ID: "r1"}))
	must(t, st.CreateUser(ctx, store.User{Realm: "r1", ID: "alice"}))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := st.AppendAudit(ctx, eventlog.Entry{Kind: "verify.ok", Subject: fmt.Sprint(i)}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 20 { // let some entries land first
		if page, _ := st.ListAudit(ctx, 0, 20); len(page) == 20 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	rawExec(t, "sqlite", path, "VACUUM INTO '"+backup+"'")
	close(stop)
	wg.Wait()

	copied := storetest.Open(t, backup)
	if _, err := copied.GetUser(ctx, "r1", "alice"); err != nil {
		t.Errorf("backup lacks the user: %v", err)
	}
	page, err := copied.ListAudit(ctx, 0, store.MaxListLimit)
	must(t, err)
	if len(page) == 0 {
		t.Error("backup has no audit entries")
	}
	if i, err := eventlog.VerifyChain(nil, page, nil); err != nil {
		t.Errorf("backup's audit chain broken at %d: %v", i, err)
	}
}

// TestSQLiteAuditRowid: migration 0015 turns a SQLite audit_log whose seq
// was a column beside the rowid (0001's layout) into one whose seq is the
// rowid, keeping every entry and the chain; on PostgreSQL it is recorded
// and not run.
func TestSQLiteAuditRowid(t *testing.T) {
	path := storetest.SQLitePath(t)
	st, err := store.Open(ctx, path)
	must(t, err)
	for i := range 5 {
		_, err := st.AppendAudit(ctx, eventlog.Entry{Time: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), Kind: "k", Actor: "a", Subject: fmt.Sprint(i)})
		must(t, err)
	}
	must(t, st.Close())
	autoindexes := func() int {
		db, err := sqlitedb.Open(path)
		must(t, err)
		defer db.Close()
		var n int
		must(t, db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_log' AND name LIKE 'sqlite_autoindex_%'`).Scan(&n))
		return n
	}
	if n := autoindexes(); n != 0 {
		t.Fatalf("a new database's audit_log has %d automatic indexes: seq is not the rowid", n)
	}
	// Back to 0001's layout, as a database made before 0015 has it.
	rawExec(t, "sqlite", path, `CREATE TABLE old (seq BIGINT NOT NULL PRIMARY KEY, at_us BIGINT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL,
		subject TEXT NOT NULL, data BYTEA, prev BYTEA NOT NULL, hash BYTEA NOT NULL);
		INSERT INTO old SELECT * FROM audit_log; DROP TABLE audit_log; ALTER TABLE old RENAME TO audit_log;
		CREATE INDEX audit_log_kind_subject ON audit_log (kind, subject, seq);
		DELETE FROM schema_migrations WHERE version = 15`)
	if n := autoindexes(); n != 1 {
		t.Fatalf("the old layout has %d automatic indexes, want 1", n)
	}
	st = storetest.Open(t, path)
	if n := autoindexes(); n != 0 {
		t.Fatalf("after 0015 audit_log has %d automatic indexes, want 0", n)
	}
	_, err = st.AppendAudit(ctx, eventlog.Entry{Time: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), Kind: "k", Actor: "a", Subject: "after"})
	must(t, err)
	es, err := st.ListAudit(ctx, 0, 100)
	must(t, err)
	if len(es) != 6 {
		t.Fatalf("%d entries after the migration, want 6", len(es))
	}
	if i, err := eventlog.VerifyChain(nil, es, nil); err != nil {
		t.Fatalf("chain broken at %d after the migration: %v", i, err)
	}
	if found, err := st.(store.SyncStore).FindAudit(ctx, "k", "3", 0, 10); err != nil || len(found) != 1 {
		t.Fatalf("FindAudit after the migration: %v, %v", found, err)
	}
}
