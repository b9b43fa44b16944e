package auditcheck

import (
	"context"
	"fmt"
	"testing"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// BenchmarkVerify compares checking the audit log in full with checking it
// from a checkpoint 1 % before its head, and checking exported segments
// with 1 and 2 workers, in entries of the log vouched for per second (and entries read per check) (SQLite, a log of
// benchEntries entries). Figures belong in docs/BENCHMARKS.md, measured on
// an idle machine:
//
//	go test ./internal/auditcheck/ -run '^$' -bench Verify -benchtime 5x
func BenchmarkVerify(b *testing.B) {
	const benchEntries = 20000
	ctx := context.Background()
	st := storetest.Open(b, storetest.SQLitePath(b))
	n := &Notary{Store: st, Signer: newSigner(b), Now: fixedClock(t0)}
	n.Audit = &audit.Log{Store: st, Now: n.Now}
	recordFast(b, st, benchEntries*99/100)
	cp, err := n.Checkpoint(ctx)
	if err != nil {
		b.Fatal(err)
	}
	recordFast(b, st, benchEntries/100)
	a := &Archive{Notary: n, Dir: b.TempDir(), SegmentEntries: benchEntries / 8}
	if _, err := a.Export(ctx, "bench", 0); err != nil {
		b.Fatal(err)
	}
	// check returns how many entries of the log it vouches for and how many it read.
	run := func(b *testing.B, check func() (covered, read uint64, ok bool, err error)) {
		var covered, read uint64
		for b.Loop() {
			c, r, ok, err := check()
			if err != nil || !ok {
				b.Fatalf("check failed: %v", err)
			}
			covered, read = covered+c, read+r
		}
		b.ReportMetric(float64(covered)/b.Elapsed().Seconds(), "entries/s")
		b.ReportMetric(float64(read)/float64(b.N), "read/op")
	}
	b.Run("full", func(b *testing.B) {
		run(b, func() (uint64, uint64, bool, error) {
			r, err := audit.VerifyStore(ctx, st)
			return r.Entries, r.Read, r.OK, err
		})
	})
	b.Run("from-checkpoint", func(b *testing.B) {
		run(b, func() (uint64, uint64, bool, error) {
			r, err := VerifyFromCheckpoint(ctx, st, cp.Checkpoint)
			return r.Entries, r.Read, r.OK, err
		})
	})
	for _, par := range []int{1, 2} {
		b.Run(fmt.Sprintf("segments-%d", par), func(b *testing.B) {
			run(b, func() (uint64, uint64, bool, error) {
				r, err := VerifySegments(ctx, a.Dir, a.ring(), par, nil)
				return r.Entries, r.Entries, r.OK, err
			})
		})
	}
}
