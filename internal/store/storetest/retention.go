package storetest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// RunAuditPrune runs the contract suite of store.AuditPruner. Every store
// Open returns implements it.
func RunAuditPrune(t *testing.T, open func(t *testing.T) store.Store) {
	runEngine(t, open, []engineCase[store.AuditPruner]{
		{"PruneKeepsTheChain", testPruneKeepsTheChain},
		{"PruneRefused", testPruneRefused},
		{"PruneWhileAppending", testPruneWhileAppending},
	})
}

func appendN(t *testing.T, st store.Store, n int) []eventlog.Entry {
	t.Helper()
	out := make([]eventlog.Entry, n)
	for i := range out {
		e, err := st.AppendAudit(ctx, eventlog.Entry{Time: when, Kind: "test.entry", Subject: fmt.Sprintf("s%d", i)})
		must(t, err)
		out[i] = e
	}
	return out
}

func pruneEntry() eventlog.Entry {
	return eventlog.Entry{Time: when, Kind: "audit.prune", Actor: "admin", Data: []byte(`{"through":1}`)}
}

// The log after a prune starts at through+1, chains on from the pruned
// entry's hash, ends with the prune's own entry, and the next append
// chains on from that.
func testPruneKeepsTheChain(t *testing.T, st store.Store, ap store.AuditPruner) {
	es := appendN(t, st, 5)
	p, err := ap.PruneAudit(ctx, 3, es[2].Hash, pruneEntry())
	must(t, err)
	if p.Seq != 6 || !bytes.Equal(p.Prev, es[4].Hash) || p.Kind != "audit.prune" {
		t.Fatalf("prune entry %d %q, want seq 6 chained on entry 5", p.Seq, p.Kind)
	}
	next := appendN(t, st, 1)[0]
	if next.Seq != 7 || !bytes.Equal(next.Prev, p.Hash) {
		t.Fatalf("entry after the prune has seq %d", next.Seq)
	}
	got, err := st.ListAudit(ctx, 0, 100)
	must(t, err)
	if len(got) != 4 || got[0].Seq != 4 || !bytes.Equal(got[0].Prev, es[2].Hash) {
		t.Fatalf("after pruning through 3 the log holds %d entries from seq %d", len(got), got[0].Seq)
	}
	if i, err := eventlog.VerifyChain(&eventlog.Entry{Seq: 3, Hash: es[2].Hash}, got, nil); err != nil {
		t.Fatalf("chain after the prune broken at %d: %v", i, err)
	}
	// Pruning through the last entry leaves the prune entry: never empty.
	got, err = st.ListAudit(ctx, 0, 100)
	must(t, err)
	last := got[len(got)-1]
	p2, err := ap.PruneAudit(ctx, last.Seq, last.Hash, pruneEntry())
	must(t, err)
	got, err = st.ListAudit(ctx, 0, 100)
	must(t, err)
	if len(got) != 1 || got[0].Seq != p2.Seq || p2.Seq != last.Seq+1 {
		t.Fatalf("after pruning through the head the log holds %d entries", len(got))
	}
}

// A prune whose entry is gone or changed deletes nothing.
func testPruneRefused(t *testing.T, st store.Store, ap store.AuditPruner) {
	es := appendN(t, st, 3)
	_, err := ap.PruneAudit(ctx, 2, es[1].Prev, pruneEntry()) // the wrong hash
	wantErr(t, err, store.ErrInvalid)
	_, err = ap.PruneAudit(ctx, 9, es[2].Hash, pruneEntry())
	wantErr(t, err, store.ErrNotFound)
	_, err = ap.PruneAudit(ctx, 0, es[0].Hash, pruneEntry())
	wantErr(t, err, store.ErrInvalid)
	_, err = ap.PruneAudit(ctx, 2, es[1].Hash, eventlog.Entry{Time: when}) // no kind
	wantErr(t, err, store.ErrInvalid)
	got, err := st.ListAudit(ctx, 0, 100)
	must(t, err)
	if len(got) != 3 {
		t.Fatalf("refused prunes left %d entries, want 3", len(got))
	}
}

// Appends racing a prune are neither lost nor misnumbered.
func testPruneWhileAppending(t *testing.T, st store.Store, ap store.AuditPruner) {
	es := appendN(t, st, 10)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { appendN(t, st, 10) })
	}
	_, err := ap.PruneAudit(ctx, 8, es[7].Hash, pruneEntry())
	must(t, err)
	wg.Wait()
	got, err := st.ListAudit(ctx, 0, 100)
	must(t, err)
	if len(got) != 2+40+1 || got[0].Seq != 9 {
		t.Fatalf("%d entries from seq %d, want 43 from seq 9", len(got), got[0].Seq)
	}
	if i, err := eventlog.VerifyChain(&eventlog.Entry{Seq: 8, Hash: es[7].Hash}, got, nil); err != nil {
		t.Fatalf("chain broken at %d: %v", i, err)
	}
}
