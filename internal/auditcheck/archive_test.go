package auditcheck

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// newArchive is newLog with an audited notary and an Archive over a fresh
// directory, writing segments of 10 entries.
func newArchive(t *testing.T, newDSN func(testing.TB) string) (string, store.Store, *Archive) {
	t.Helper()
	dsn, st, n := newLog(t, newDSN)
	n.Audit = &audit.Log{Store: st, Now: n.Now}
	return dsn, st, &Archive{Notary: n, Dir: t.TempDir(), SegmentEntries: 10}
}

// onEngines runs fn on a fresh archive (newArchive) on each engine.
func onEngines(t *testing.T, fn func(t *testing.T, dsn string, st store.Store, a *Archive)) {
	for engine, newDSN := range engines() {
		t.Run(engine, func(t *testing.T) {
			dsn, st, a := newArchive(t, newDSN)
			fn(t, dsn, st, a)
		})
	}
}

func kinds(t *testing.T, st store.Store, kind string) []eventlog.Entry {
	t.Helper()
	es, err := st.ListAudit(context.Background(), 0, store.MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	var out []eventlog.Entry
	for _, e := range es {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// verifyOK checks st's whole log and fails unless it is intact.
func verifyOK(t *testing.T, st store.Store) audit.Report {
	t.Helper()
	rep, err := audit.VerifyStore(context.Background(), st)
	if err != nil || !rep.OK {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	return rep
}

// segmentsOK checks a's segments against st with parallel workers and fails unless they are intact.
func segmentsOK(t *testing.T, a *Archive, st store.Store, parallel int) SegmentsReport {
	t.Helper()
	rep, err := VerifySegments(context.Background(), a.Dir, a.ring(), parallel, st)
	if err != nil || !rep.OK {
		t.Fatalf("verify segments: %+v, %v", rep, err)
	}
	return rep
}

// TestArchiveRoundTrip: export, prune, verify, append, export and prune
// again — on both engines; the database and the segments together still
// verify as one chain, and every step is audited.
func TestArchiveRoundTrip(t *testing.T) {
	onEngines(t, func(t *testing.T, _ string, st store.Store, a *Archive) {
		ctx := context.Background()
		record(t, st, 25)
		ex, err := a.Export(ctx, "api:admin", 0)
		if err != nil || len(ex.Files) != 3 || ex.From != 1 || ex.To != 25 || ex.Entries != 25 {
			t.Fatalf("export: %+v, %v", ex, err)
		}
		if got := kinds(t, st, audit.Export); len(got) != 3 || got[0].Actor != "api:admin" {
			t.Fatalf("%d audit.export entries, want 3", len(got))
		}
		// Exported, not pruned: the segments overlap the database.
		segmentsOK(t, a, st, 2)

		pr, err := a.Prune(ctx, "api:admin", PruneLimit{Before: 21})
		if err != nil || pr.Segments != 2 || pr.From != 1 || pr.Through != 20 || pr.Entries != 20 {
			t.Fatalf("prune: %+v, %v", pr, err)
		}
		rep := verifyOK(t, st)
		if rep.Pruned != 20 {
			t.Fatalf("report %+v, want pruned through 20", rep)
		}
		srep := segmentsOK(t, a, st, 2)
		if srep.Segments != 3 || srep.From != 1 || srep.To != 25 || srep.Database != 21 {
			t.Fatalf("segments report %+v", srep)
		}
		// Nothing more to export up to the checkpoint; new entries follow.
		record(t, st, 7)
		ex, err = a.Export(ctx, "api:admin", 0)
		if err != nil || ex.From != 26 || len(ex.Files) != 2 { // 26..35 and the rest up to the new head
			t.Fatalf("second export: %+v, %v", ex, err)
		}
		pr, err = a.Prune(ctx, "api:admin", PruneLimit{Before: 1 << 40})
		if err != nil || pr.From != 21 || pr.Through != ex.To {
			t.Fatalf("second prune: %+v, %v", pr, err)
		}
		if got := kinds(t, st, audit.Prune); len(got) != pr.Segments {
			t.Fatalf("%d audit.prune entries in the database, want the last prune's %d (one per segment, each after what it deletes)", len(got), pr.Segments)
		}
		verifyOK(t, st)
		segmentsOK(t, a, st, 1)
		// The notary still chains on from its last checkpoint, whose entry is pruned.
		last, _ := a.Notary.Latest()
		cp, err := a.Notary.Checkpoint(ctx)
		if err != nil {
			t.Fatalf("checkpoint after the prune: %v", err)
		}
		// Checkpoints at the anchor, before it (pruned: not checked here) and the newest.
		first, _, _ := entryAt(ctx, st, 1, false)
		rep, err = VerifyFromCheckpoint(ctx, st, last.Checkpoint, Checkpoint{Seq: 3, Hash: make([]byte, 32)}, cp.Checkpoint)
		if err != nil || !rep.OK || last.Seq != first.Seq-1 {
			t.Fatalf("verify from checkpoints around the anchor (%d, first kept %d): %+v %v", last.Seq, first.Seq, rep, err)
		}
	})
}

// TestPruneRefused: a prune deletes nothing that no segment holds, nor
// anything a segment that does not verify holds.
func TestPruneRefused(t *testing.T) {
	onEngines(t, func(t *testing.T, _ string, st store.Store, a *Archive) {
		ctx := context.Background()
		record(t, st, 15)
		if _, err := a.Prune(ctx, "api:admin", PruneLimit{Before: 10}); !errors.Is(err, ErrNotExported) {
			t.Fatalf("prune without export: %v, want ErrNotExported", err)
		}
		if _, err := a.Export(ctx, "api:admin", 0); err != nil {
			t.Fatal(err)
		}
		flipByte(t, filepath.Join(a.Dir, SegmentName(1, 10)), 40)
		_, err := a.Prune(ctx, "api:admin", PruneLimit{Before: 100})
		if !errors.Is(err, ErrNotExported) || !errors.Is(err, ErrSegment) {
			t.Fatalf("prune of an altered segment: %v, want ErrNotExported wrapping ErrSegment", err)
		}
		if rep := verifyOK(t, st); rep.Pruned != 0 || len(kinds(t, st, audit.Prune)) != 0 {
			t.Fatalf("refused prunes pruned: %+v", rep)
		}
		if _, err := a.Prune(ctx, "api:admin", PruneLimit{}); err == nil {
			t.Fatal("a prune without a limit ran")
		}
	})
}

// TestCrashBetweenExportAndPrune: a prune that fails after the export
// (here the store's, injected) loses nothing: the entries are in both
// places, the log verifies, and a new Archive (a restarted server)
// prunes them from the files alone.
func TestCrashBetweenExportAndPrune(t *testing.T) {
	onEngines(t, func(t *testing.T, _ string, st store.Store, a *Archive) {
		ctx := context.Background()
		record(t, st, 12)
		if _, err := a.Export(ctx, "api:admin", 0); err != nil {
			t.Fatal(err)
		}
		n := a.Notary
		crashed := &Archive{Notary: &Notary{Store: failingPruner{st}, Signer: n.Signer, Audit: n.Audit, Now: n.Now}, Dir: a.Dir}
		if _, err := crashed.Prune(ctx, "api:admin", PruneLimit{Before: 100}); !errors.Is(err, errInjected) {
			t.Fatalf("injected failure: %v", err)
		}
		verifyOK(t, st)
		segmentsOK(t, a, st, 2)

		restarted := &Archive{Notary: &Notary{Store: st, Signer: a.Notary.Signer, Audit: a.Notary.Audit, Now: a.Notary.Now}, Dir: a.Dir}
		pr, err := restarted.Prune(ctx, "api:admin", PruneLimit{Before: 100})
		if err != nil || pr.Through != 12 {
			t.Fatalf("prune after the crash: %+v, %v", pr, err)
		}
		verifyOK(t, st)
		segmentsOK(t, a, st, 2)
	})
}

var errInjected = errors.New("injected failure")

type failingPruner struct{ store.Store }

func (failingPruner) PruneAudit(context.Context, uint64, []byte, eventlog.Entry) (eventlog.Entry, error) {
	return eventlog.Entry{}, errInjected
}

// TestExportRefusesARewrite: an export ends at a signed checkpoint, and a
// log rewritten before it is not exported (no file is left).
func TestExportRefusesARewrite(t *testing.T) {
	onEngines(t, func(t *testing.T, dsn string, st store.Store, a *Archive) {
		ctx := context.Background()
		record(t, st, 15)
		if _, err := a.Notary.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		storetest.RewriteAudit(t, dsn, st, 4, `{"forged":1}`)
		if _, err := a.Export(ctx, "api:admin", 15); !errors.Is(err, ErrBroken) {
			t.Fatalf("export of a rewritten log: %v, want ErrBroken", err)
		}
		if _, err := a.Export(ctx, "api:admin", 3); !errors.Is(err, ErrNoCheckpoint) {
			t.Fatalf("export with no checkpoint before seq 3: %v, want ErrNoCheckpoint", err)
		}
		if segs, _ := listSegments(a.Dir); len(segs) != 0 {
			t.Fatalf("a refused export left %d files", len(segs))
		}
	})
}

// TestPrunedRowsDeletedBehindTheBack: after a real prune, rows deleted
// straight from the database (no prune records them) break the check.
func TestPrunedRowsDeletedBehindTheBack(t *testing.T) {
	for engine, newDSN := range engines() {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			dsn, st, _ := newArchive(t, newDSN)
			record(t, st, 20)
			storetest.RawDB(t, dsn).Exec(`DELETE FROM audit_log WHERE seq <= 5`)
			rep, err := audit.VerifyStore(ctx, st)
			if err != nil || rep.OK || rep.BrokenAt != 6 || !strings.Contains(rep.Problem, "behind the server's back") {
				t.Fatalf("front rows deleted without a prune: %+v, %v", rep, err)
			}

			dsn, st, a := newArchive(t, newDSN)
			record(t, st, 20)
			if _, err := a.Export(ctx, "api:admin", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Prune(ctx, "api:admin", PruneLimit{Before: 100}); err != nil {
				t.Fatal(err)
			}
			verifyOK(t, st)
			storetest.RawDB(t, dsn).Exec(`DELETE FROM audit_log WHERE seq <= 21`)
			rep, err = audit.VerifyStore(ctx, st)
			if err != nil || rep.OK || rep.BrokenAt != 22 {
				t.Fatalf("rows deleted after a prune: %+v, %v", rep, err)
			}
			srep, err := VerifySegments(ctx, a.Dir, a.ring(), 2, st)
			if err != nil || srep.OK || srep.BrokenAt != 21 || !strings.Contains(srep.Problem, "missing") {
				t.Fatalf("segments against a database missing rows: %+v, %v", srep, err)
			}
		})
	}
}

// TestSegmentTampering: every way to spoil a directory of segments is
// reported with the file and the seq where it breaks.
func TestSegmentTampering(t *testing.T) {
	other := artifact.Keys{newSigner(t).Public}
	cases := []struct {
		name    string
		tamper  func(t *testing.T, dir string)
		ring    artifact.Keyring // nil: the server's key
		at      uint64
		problem string
	}{
		{"untouched", func(*testing.T, string) {}, nil, 0, ""},
		{"one byte of an entry", func(t *testing.T, dir string) { flipByte(t, filepath.Join(dir, SegmentName(11, 20)), 30) }, nil, 11, ""},
		{"one byte of an entry's kind", func(t *testing.T, dir string) {
			editFile(t, filepath.Join(dir, SegmentName(11, 20)), func(b []byte) []byte {
				lines := strings.SplitAfter(string(b), "\n")
				lines[4] = strings.Replace(lines[4], "user.create", "user.cre4te", 1) // seq 15
				return []byte(strings.Join(lines, ""))
			})
		}, nil, 15, "content does not match its hash"},
		{"one byte of the trailer", func(t *testing.T, dir string) { flipByte(t, filepath.Join(dir, SegmentName(11, 20)), -20) }, nil, 11, "trailer"},
		{"a space added", func(t *testing.T, dir string) {
			editFile(t, filepath.Join(dir, SegmentName(1, 10)), func(b []byte) []byte { return append([]byte(" "), b...) })
		}, nil, 1, "truncated or extended"},
		{"missing segment", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, SegmentName(11, 20))) }, nil, 11, "missing"},
		{"missing last segment", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, SegmentName(21, 25))) }, nil, 21, "missing"},
		{"swapped segments", func(t *testing.T, dir string) {
			a, b := filepath.Join(dir, SegmentName(1, 10)), filepath.Join(dir, SegmentName(11, 20))
			tmp := filepath.Join(dir, "swap")
			must(t, os.Rename(a, tmp), os.Rename(b, a), os.Rename(tmp, b))
		}, nil, 11, "renamed or swapped"},
		{"truncated", func(t *testing.T, dir string) {
			editFile(t, filepath.Join(dir, SegmentName(11, 20)), func(b []byte) []byte { return b[:len(b)-15] })
		}, nil, 11, "truncated"},
		{"truncated at an entry", func(t *testing.T, dir string) {
			editFile(t, filepath.Join(dir, SegmentName(11, 20)), func(b []byte) []byte {
				lines := strings.SplitAfter(string(b), "\n")
				return []byte(strings.Join(append(lines[:5:5], lines[len(lines)-2]), ""))
			})
		}, nil, 11, "truncated"},
		{"signed by another key", func(*testing.T, string) {}, other, 1, "does not trust"},
	}
	for engine, newDSN := range engines() {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				_, st, a := newArchive(t, newDSN)
				recordFast(t, st, 25)
				if _, err := a.Export(ctx, "api:admin", 0); err != nil {
					t.Fatal(err)
				}
				if _, err := a.Prune(ctx, "api:admin", PruneLimit{Before: 1 << 40}); err != nil {
					t.Fatal(err)
				}
				tc.tamper(t, a.Dir)
				ring := tc.ring
				if ring == nil {
					ring = a.ring()
				}
				for _, parallel := range []int{1, 2} {
					rep, err := VerifySegments(ctx, a.Dir, ring, parallel, st)
					if err != nil {
						t.Fatal(err)
					}
					if tc.at == 0 {
						if !rep.OK {
							t.Fatalf("parallel %d: report %+v", parallel, rep)
						}
						continue
					}
					if rep.OK || rep.BrokenAt != tc.at || !strings.Contains(rep.Problem, tc.problem) {
						t.Fatalf("parallel %d: report %+v, want broken at %d with %q", parallel, rep, tc.at, tc.problem)
					}
				}
			})
		}
	}
}

// TestVerifyFromCheckpoint: the incremental check reads only the entries
// after the newest checkpoint, and still catches an entry altered after
// it, a rewrite before it and a log cut short before it.
func TestVerifyFromCheckpoint(t *testing.T) {
	cases := []struct {
		name    string
		tamper  func(t *testing.T, dsn string, st store.Store)
		at      uint64
		problem string
	}{
		{"intact", func(*testing.T, string, store.Store) {}, 0, ""},
		{"entry altered after the checkpoint", func(t *testing.T, dsn string, _ store.Store) {
			if _, err := storetest.RawDB(t, dsn).Exec(`UPDATE audit_log SET subject = 'forged' WHERE seq = 205`); err != nil {
				t.Fatal(err)
			}
		}, 205, "altered"},
		{"rewritten from before the checkpoint", func(t *testing.T, dsn string, st store.Store) {
			storetest.RewriteAudit(t, dsn, st, 150, `{"forged":1}`)
		}, 200, "differs from the checkpoint"},
		{"rewritten from before the older checkpoint", func(t *testing.T, dsn string, st store.Store) { storetest.RewriteAudit(t, dsn, st, 20, `{"forged":1}`) }, 50, "differs from the checkpoint"},
		{"cut before the checkpoint", func(t *testing.T, dsn string, _ store.Store) { storetest.TruncateAudit(t, dsn, 150) }, 200, "cut from its end"},
	}
	for engine, newDSN := range engines() {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				dsn, st, n := newLog(t, newDSN)
				recordFast(t, st, 50)
				old, err := n.Checkpoint(ctx)
				if err != nil {
					t.Fatal(err)
				}
				recordFast(t, st, 150)
				cp, err := n.Checkpoint(ctx)
				if err != nil || cp.Seq != 200 {
					t.Fatalf("checkpoint %d, %v", cp.Seq, err)
				}
				record(t, st, 10)
				tc.tamper(t, dsn, st)
				rep, err := VerifyFromCheckpoint(ctx, st, cp.Checkpoint, old.Checkpoint)
				if err != nil {
					t.Fatal(err)
				}
				if tc.at == 0 {
					// The checkpoint's entry, the 10 after it, and one per older checkpoint.
					if !rep.OK || rep.Read != 1+10+1 || rep.Entries != 210 || rep.Anchored != 200 {
						t.Fatalf("report %+v, want ok after reading 12 entries", rep)
					}
					return
				}
				if rep.OK || rep.BrokenAt != tc.at || !strings.Contains(rep.Problem, tc.problem) {
					t.Fatalf("report %+v, want broken at %d with %q", rep, tc.at, tc.problem)
				}
			})
		}
	}
}

// TestRetain: the policy exports and prunes only entries older than the
// retention, and only up to a checkpoint it marked on an earlier run.
func TestRetain(t *testing.T) {
	onEngines(t, func(t *testing.T, _ string, st store.Store, a *Archive) {
		ctx := context.Background()
		now := t0
		a.Notary.Now = func() time.Time { return now }
		l := &audit.Log{Store: st, Now: a.Notary.Now}
		a.Notary.Audit = l
		var pruned uint64
		for day := range 6 {
			for range 10 {
				if err := l.Record(ctx, audit.UserCreate, "api:test", "u", nil); err != nil {
					t.Fatal(err)
				}
			}
			_, pr, err := a.Retain(ctx, 48*time.Hour)
			if err != nil {
				t.Fatalf("day %d: %v", day, err)
			}
			pruned = max(pruned, pr.Through)
			rep := verifyOK(t, st)
			first, _, _ := entryAt(ctx, st, 1, false)
			if first.Time.Before(now.Add(-72*time.Hour)) || rep.Pruned != pruned {
				t.Fatalf("day %d: the log starts at seq %d of %s, pruned %d", day, first.Seq, first.Time, rep.Pruned)
			}
			now = now.Add(24 * time.Hour)
		}
		if pruned == 0 {
			t.Fatal("six days with a two-day retention pruned nothing")
		}
		segmentsOK(t, a, st, 2)
	})
}

func must(t testing.TB, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func editFile(t *testing.T, path string, edit func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	must(t, os.WriteFile(path, edit(b), 0o600))
}

// flipByte flips a bit of the byte at offset i of path (from the end when negative).
func flipByte(t *testing.T, path string, i int) {
	editFile(t, path, func(b []byte) []byte {
		if i < 0 {
			i += len(b)
		}
		b[i] ^= 1
		return b
	})
}

// recordFast appends n entries from several goroutines, so that the
// store commits them in batches.
func recordFast(t testing.TB, st store.Store, n int) {
	t.Helper()
	l := &audit.Log{Store: st, Now: fixedClock(t0)}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = l.Record(context.Background(), audit.UserCreate, "api:test", fmt.Sprintf("u%d", i), nil)
		})
	}
	wg.Wait()
	must(t, errs...)
}
