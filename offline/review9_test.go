package offline_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/outpost-auth/outpost/internal/sqlitedb"
	"github.com/outpost-auth/outpost/offline"
)

// Review of issue 9 (an attacker's read).

// TestCounterBaseCannotBeDropped: the monotonic counter is compared with
// the log through counter_base, a row of field_meta in the very database the
// counter guards. The device's holder restores the whole directory from a
// copy taken before a use (which a hardware counter is meant to catch),
// then deletes that one row: Open takes the store for one made before the
// counter existed, sets a fresh base from the counter's current value, and
// the copy accepts the same code again. No TPM counter behind the
// interface can stop this while the base lives in field.db.
func TestCounterBaseCannotBeDropped(t *testing.T) {
	all := append([]string{offline.CounterFile}, dbFiles...)
	c := &fakeClock{t: t0}
	dir := t.TempDir()
	opts := offline.Options{Now: c.Now, Workers: 2, Counter: &hwCounter{n: 41}}
	s, err := offline.Init(ctx, dir, offline.Config{DeviceID: "dev-1", ServerKey: testSigner(t).Public, Policy: quickPolicy}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, issue(t, hotpReq(0, 5))); err != nil {
		t.Fatal(err)
	}
	s.Close()
	copied := snapshot(t, dir, all...)
	if s, err = offline.Open(ctx, dir, opts); err != nil {
		t.Fatal(err)
	}
	code := hotpCodes(t, 1)[0]
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: code}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	restore(t, dir, copied)
	db, err := sqlitedb.Open(filepath.Join(dir, offline.DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM field_meta WHERE k = 'counter_base'`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = offline.Open(ctx, dir, opts)
	if errors.Is(err, offline.ErrRolledBack) {
		return
	}
	if err != nil {
		t.Fatalf("open after the restore: %v, want ErrRolledBack", err)
	}
	defer s.Close()
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: code}); err == nil {
		t.Fatal("a restored store with its counter_base row deleted opens under a hardware counter and accepts the same code a second time")
	}
}
