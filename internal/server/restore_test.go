package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/offline"
)

// copyDir copies every file of the directory src to dst (the attacker's
// backup of a field store, or its restore).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

// Issue 9, part 9. The attacker holds a field device: they copy its whole
// store before a use, let the use reach the server, and restore the copy.
// The restored store is caught at each contact with the server: a sync is
// refused as a replayed upload, then as a truncated log; the next bundle (which names the log entry
// the server acknowledged) is refused as a fork and logged, and the code the
// restored copy accepts a second time — which a software store cannot
// prevent — makes its next sync a rewritten log. Each is an incident.
func TestRestoredFieldStoreIsCaught(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name, func(t *testing.T) {
			f := syncFixture(t, dsn(t))
			uri := f.enrol("rex", map[string]any{"type": "hotp"})
			dev, dir := f.fieldDeviceAt("truck-5")
			issue := func() []byte {
				t.Helper()
				r := f.call(f.admin, "POST", "/v1/offline/bundles", map[string]any{"user": "rex", "device": "truck-5", "count": 10})
				if r.status != 200 {
					t.Fatalf("bundle: %d %s", r.status, r.raw)
				}
				return r.raw
			}
			reopen := func() *offline.Store {
				t.Helper()
				s, err := offline.Open(ctx, dir, offline.Options{Now: f.clock.Now})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			c := f.syncClient()
			if _, err := dev.Import(ctx, issue()); err != nil {
				t.Fatal(err)
			}
			if _, err := dev.Sync(ctx, c); err != nil {
				t.Fatal(err)
			}
			backup := filepath.Join(t.TempDir(), "backup")
			dev.Close()
			copyDir(t, dir, backup)
			dev = reopen()
			code := hotpCode(t, uri, 3)
			if _, err := dev.Verify(ctx, offline.Attempt{User: "rex", Code: code}); err != nil {
				t.Fatal(err)
			}
			if _, err := dev.Sync(ctx, c); err != nil {
				t.Fatal(err)
			}
			dev.Close()
			copyDir(t, backup, dir)
			restored := reopen()

			// Its upload serial went back with it: a replay; once past it, a truncated log.
			var se *offline.ServerError
			for _, want := range []string{"replayed_upload", "log_truncated"} {
				if _, err := restored.Sync(ctx, c); !errors.As(err, &se) || se.Status != 409 || se.Code != want {
					t.Fatalf("sync of the restored store: %v, want %s", err, want)
				}
			}
			if _, err := restored.Import(ctx, issue()); !errors.Is(err, offline.ErrForkedLog) {
				t.Fatalf("a new bundle on the restored store: %v", err)
			}
			if log, err := devicelog.ReadFile(ctx, filepath.Join(dir, offline.DatabaseFile)); err != nil || len(log) == 0 || log[len(log)-1].Kind != "fork" {
				t.Fatalf("the refusal is not logged as a fork: %v", err)
			}
			// What software cannot prevent: the copy accepts the code again...
			if _, err := restored.Verify(ctx, offline.Attempt{User: "rex", Code: code}); err != nil {
				t.Fatalf("the restored copy (software counter): %v", err)
			}
			// ... and its next contact with the server shows it.
			if _, err := restored.Sync(ctx, c); !errors.As(err, &se) || se.Status != 409 || se.Code != "log_rewritten" {
				t.Fatalf("sync after the second use: %v", err)
			}
			m := string(f.call("", "GET", "/metrics", nil).raw)
			for _, kind := range []string{"replay", "truncated", "rewritten"} {
				if !strings.Contains(m, `outpost_sync_incidents_total{kind="`+kind+`"} 1`) {
					t.Errorf("metrics lack the %s incident", kind)
				}
			}
			if incidents := len(f.auditOf("sync.incident")); incidents != 3 {
				t.Errorf("%d incidents in the audit log, want 3", incidents)
			}
		})
	}
}
