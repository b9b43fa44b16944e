package storetest

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
	"github.com/outpost-auth/outpost/internal/store"
)

// Tampering: what someone with write access to the database, and no key,
// can do behind the store's back. Tests of integrity checks use these.

// RawDB opens the database dsn names directly (not through the store) and
// closes it when the test ends.
func RawDB(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		db, err = sql.Open("pgx", dsn)
	} else {
		db, err = sqlitedb.Open(dsn)
	}
	if err != nil {
		t.Fatalf("opening the database directly: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// RewriteAudit rewrites the audit log from seq from on: each entry's data
// becomes data, and every hash from there on is recomputed, so that the
// chain itself still verifies. Only a head held elsewhere (a checkpoint)
// can tell.
func RewriteAudit(t testing.TB, dsn string, st store.Store, from uint64, data string) {
	t.Helper()
	ctx := context.Background()
	var prev *eventlog.Entry
	if from > 1 {
		es, err := st.ListAudit(ctx, from-2, 1)
		if err != nil || len(es) != 1 {
			t.Fatalf("reading entry %d: %v", from-1, err)
		}
		prev = &es[0]
	}
	es, err := st.ListAudit(ctx, from-1, store.MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	db := RawDB(t, dsn)
	for _, e := range es {
		e.Data = []byte(data)
		forged, err := eventlog.Next(prev, e, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `UPDATE audit_log SET data = $1, prev = $2, hash = $3 WHERE seq = $4`,
			forged.Data, forged.Prev, forged.Hash, int64(forged.Seq)); err != nil {
			t.Fatalf("rewriting entry %d: %v", forged.Seq, err)
		}
		prev = &forged
	}
}

// TruncateAudit deletes the audit entries after seq.
func TruncateAudit(t testing.TB, dsn string, after uint64) {
	t.Helper()
	if _, err := RawDB(t, dsn).Exec(`DELETE FROM audit_log WHERE seq > $1`, int64(after)); err != nil {
		t.Fatalf("truncating the audit log: %v", err)
	}
}
