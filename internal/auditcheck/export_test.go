package auditcheck

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestExporterFiles: one file per head, stamped with the injected clock,
// mode 0600, never overwritten, the newest Keep kept; after a restart the
// newest file still binds the notary.
func TestExporterFiles(t *testing.T) {
	for engine, newDSN := range engines() {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			dsn := newDSN(t)
			st := storetest.Open(t, dsn)
			signer := newSigner(t)
			now := t0
			clock := func() time.Time { return now }
			dir := filepath.Join(t.TempDir(), "checkpoints")
			x := &Exporter{Notary: &Notary{Store: st, Signer: signer, Now: clock}, Dir: dir, Keep: 2, Log: slog.Default()}
			for i, n := range []int{3, 0, 2, 4} {
				record(t, st, n)
				now = t0.Add(time.Duration(i) * 10 * time.Minute)
				path, err := x.Export(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					if path != "" {
						t.Fatalf("an unmoved head was exported again to %s", path)
					}
					continue
				}
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				s, err := Open(data, artifact.Keys{signer.Public})
				if err != nil || !s.Header.IssuedAt.Equal(now) || filepath.Base(path) != FileName(s.Seq) {
					t.Fatalf("%s: seq %d signed at %s (want %s): %v", path, s.Seq, s.Header.IssuedAt, now, err)
				}
				if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
					t.Fatalf("%s: %v, %v", path, fi, err)
				}
			}
			if got, want := dirNames(t, dir), []string{FileName(5), FileName(9)}; !slices.Equal(got, want) {
				t.Fatalf("files %v, want %v (the newest 2)", got, want)
			}
			// A file already there for a head is never overwritten.
			record(t, st, 1)
			planted := []byte("planted\n")
			if err := os.WriteFile(filepath.Join(dir, FileName(10)), planted, 0o600); err != nil {
				t.Fatal(err)
			}
			if path, err := x.Export(ctx); err != nil || path != "" {
				t.Fatalf("export over an existing file: %q %v", path, err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, FileName(10))); !bytes.Equal(b, planted) {
				t.Fatal("an existing checkpoint file was overwritten")
			}
			if err := os.Remove(filepath.Join(dir, FileName(10))); err != nil {
				t.Fatal(err)
			}
			// A restarted server resumes from the newest file, and refuses
			// to sign over a rewrite of what it exported.
			storetest.RewriteAudit(t, dsn, st, 2, `{"forged":1}`)
			y := &Exporter{Notary: &Notary{Store: st, Signer: signer, Now: clock}, Dir: dir, Keep: 2, Log: slog.Default()}
			if err := y.Resume(); err != nil {
				t.Fatal(err)
			}
			if s, ok := y.Notary.Latest(); !ok || s.Seq != 9 {
				t.Fatalf("resumed at %d, want 9", s.Seq)
			}
			if _, err := y.Export(ctx); !errors.Is(err, ErrBroken) {
				t.Fatalf("export after a rewrite: %v, want ErrBroken", err)
			}
		})
	}
}

// TestExporterRun: the scheduler exports on its own as the head moves and
// stops with its context. (Its error log on a rewritten log is checked
// end to end, in internal/e2e.)
func TestExporterRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	st := storetest.Open(t, storetest.SQLitePath(t))
	record(t, st, 4)
	x := &Exporter{Notary: &Notary{Store: st, Signer: newSigner(t), Now: fixedClock(t0)}, Dir: t.TempDir(),
		Log: slog.New(slog.DiscardHandler)}
	done := make(chan struct{})
	go func() { x.Run(ctx, 5*time.Millisecond); close(done) }()
	waitFor(t, func() bool { return slices.Contains(dirNames(t, x.Dir), FileName(4)) })
	record(t, st, 1)
	waitFor(t, func() bool { return slices.Contains(dirNames(t, x.Dir), FileName(5)) })
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// waitFor polls cond for up to 10 seconds: the scheduler runs on a real ticker.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out waiting")
}
