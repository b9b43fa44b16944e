package offline_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/outpost-auth/outpost/internal/sqlitedb"
	"github.com/outpost-auth/outpost/offline"
)

// Only a store whose schema predates the marker (version 1) may lack the
// counter's base; every store this Outpost opens is marked version 2, and
// a version 2 store without a base refuses to open.
func TestCounterBaseBySchema(t *testing.T) {
	tests := []struct {
		name       string
		schema     string // set before opening ("" leaves Init's)
		deleteBase bool
		want       error
	}{
		{"new store", "", false, nil},
		{"new store, base deleted", "", true, offline.ErrRolledBack},
		{"version 1 with a base (made since the counter)", "1", false, nil},
		{"version 1 without a base (made before the counter)", "1", true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c, dir := newStore(t, quickPolicy)
			if _, err := s.Import(ctx, issue(t, hotpReq(0, 5))); err != nil {
				t.Fatal(err)
			}
			s.Close()
			editMeta(t, dir, tc.schema, tc.deleteBase)
			opts := offline.Options{Now: c.Now, Workers: 2}
			s, err := offline.Open(ctx, dir, opts)
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Fatalf("open: %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			s.Close()
			// Marked version 2 now: the base can no longer be dropped.
			editMeta(t, dir, "", true)
			if _, err := offline.Open(ctx, dir, opts); !errors.Is(err, offline.ErrRolledBack) {
				t.Fatalf("open after the base was deleted from an opened store: %v, want ErrRolledBack", err)
			}
		})
	}
}

// editMeta sets the store's schema version (unless "") and deletes the counter's base.
func editMeta(t *testing.T, dir, schema string, deleteBase bool) {
	t.Helper()
	db, err := sqlitedb.Open(filepath.Join(dir, offline.DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if schema != "" {
		if _, err := db.Exec(`UPDATE field_meta SET v = CAST(? AS BLOB) WHERE k = 'schema'`, schema); err != nil {
			t.Fatal(err)
		}
	}
	if deleteBase {
		if _, err := db.Exec(`DELETE FROM field_meta WHERE k = 'counter_base'`); err != nil {
			t.Fatal(err)
		}
	}
}
