package offline_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
	"github.com/outpost-auth/outpost/offline"
)

// hwCounter stands in for a hardware monotonic counter (a TPM NV counter):
// it lives outside the data directory, so no file copy takes it back.
type hwCounter struct {
	mu sync.Mutex
	n  uint64
}

func (c *hwCounter) Read(context.Context) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, nil
}
func (c *hwCounter) Increment(context.Context) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n, nil
}

// snapshot copies the listed files of dir (the attacker's copy).
func snapshot(t *testing.T, dir string, names ...string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		m[n] = data
	}
	return m
}

func restore(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for n, data := range files {
		p := filepath.Join(dir, n)
		os.Remove(p)
		if data != nil {
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

var dbFiles = []string{offline.DatabaseFile, offline.DatabaseFile + "-wal", offline.DatabaseFile + "-shm"}

// The attacker copies the store before a use and restores the copy after
// it. The software counter catches a database restored on its own; a
// restore of the whole directory takes the counter file back too — what a
// software store cannot prevent — while a hardware counter catches it.
func TestCounterCatchesRestoredStore(t *testing.T) {
	all := append([]string{offline.CounterFile}, dbFiles...)
	tests := []struct {
		name    string
		counter offline.Counter
		files   []string
		want    error // of Open after the restore
	}{
		{"software counter, field.db restored", nil, dbFiles, offline.ErrRolledBack},
		{"software counter, whole directory restored", nil, all, nil},
		{"hardware counter, whole directory restored", &hwCounter{n: 41}, all, offline.ErrRolledBack},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &fakeClock{t: t0}
			dir := t.TempDir()
			opts := offline.Options{Now: c.Now, Workers: 2, Counter: tc.counter}
			s, err := offline.Init(ctx, dir, offline.Config{DeviceID: "dev-1", ServerKey: testSigner(t).Public, Policy: quickPolicy}, opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Import(ctx, issue(t, hotpReq(0, 5))); err != nil {
				t.Fatal(err)
			}
			s.Close()
			copied := snapshot(t, dir, tc.files...)
			if s, err = offline.Open(ctx, dir, opts); err != nil {
				t.Fatal(err)
			}
			code := hotpCodes(t, 1)[0]
			if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: code}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			restore(t, dir, copied)
			s, err = offline.Open(ctx, dir, opts)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("open after the restore: %v, want %v", err, tc.want)
			}
			if err != nil {
				if !errors.Is(err, offline.ErrCorrupt) {
					t.Errorf("a rolled-back store is not reported as damaged: %v", err)
				}
				return
			}
			defer s.Close()
			// The software counter's limit: the copy accepts the code again
			// (the server sees it at the next sync or bundle: docs/offline.md).
			if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: code}); err != nil {
				t.Fatalf("the restored copy: %v", err)
			}
		})
	}
}

// A crash between a decision's commit and the counter's increment leaves
// the counter behind the log: no alarm, and the next open makes it up. A
// store whose counter file is gone refuses to open.
func TestCounterBehindAndMissing(t *testing.T) {
	s, _, dir := newStore(t, quickPolicy)
	if _, err := s.Import(ctx, issue(t, hotpReq(0, 5))); err != nil {
		t.Fatal(err)
	}
	last, err := devicelog.Last(ctx, s.DB())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	fc := &offline.FileCounter{Path: filepath.Join(dir, offline.CounterFile)}
	if n, err := fc.Read(ctx); err != nil || n != last.Seq {
		t.Fatalf("counter %d %v, log head %d", n, err, last.Seq)
	}
	if err := os.WriteFile(fc.Path, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := offline.Open(ctx, dir, offline.Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatalf("a counter behind the log: %v", err)
	}
	s2.Close()
	if n, _ := fc.Read(ctx); n != last.Seq {
		t.Fatalf("counter %d after open, want %d", n, last.Seq)
	}
	os.Remove(fc.Path)
	if _, err := offline.Open(ctx, dir, offline.Options{}); !errors.Is(err, offline.ErrCounterMissing) || !errors.Is(err, offline.ErrCorrupt) {
		t.Fatalf("a missing counter: %v", err)
	}
}

// A store made before the counter existed (schema version 1, no base)
// gets one at its next open, counting the log it already has.
func TestCounterSetUpOnOlderStore(t *testing.T) {
	s, _, dir := newStore(t, quickPolicy)
	if _, err := s.Import(ctx, issue(t, hotpReq(0, 5))); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sqlitedb.Open(filepath.Join(dir, offline.DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM field_meta WHERE k = 'counter_base'`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE field_meta SET v = CAST('1' AS BLOB) WHERE k = 'schema'`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	os.Remove(filepath.Join(dir, offline.CounterFile))
	s, err = offline.Open(ctx, dir, offline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := (&offline.FileCounter{Path: filepath.Join(dir, offline.CounterFile)}).Read(ctx); err != nil || n != 2 {
		t.Fatalf("counter %d %v, want 2 (init, import)", n, err)
	}
}

// Two processes (two Store handles) deciding at once never leave the
// counter ahead of the log.
func TestCounterSharedStore(t *testing.T) {
	s, c, dir := newStore(t, quickPolicy)
	other, err := offline.Open(ctx, dir, offline.Options{Now: c.Now, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var wg sync.WaitGroup
	for i, st := range []*offline.Store{s, other, s, other} {
		wg.Go(func() {
			r := hotpReq(0, 2)
			r.Serial = uint64(100 + i)
			r.TokenID = "tok-" + string(rune('a'+i))
			if _, err := st.Import(ctx, issue(t, r)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	s.Close()
	other.Close()
	if s, err = offline.Open(ctx, dir, offline.Options{Now: c.Now}); err != nil {
		t.Fatalf("after parallel decisions: %v", err)
	}
	s.Close()
}
