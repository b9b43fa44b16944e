package fieldsync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

// countingSync counts the audit entries a sync's transaction reads.
type countingSync struct {
	store.SyncStore
	rows atomic.Int64
}

func (c *countingSync) SyncDevice(ctx0 context.Context, realm, id string, now time.Time, fn func(store.SyncTx) error) error {
	return c.SyncStore.SyncDevice(ctx0, realm, id, now, func(tx store.SyncTx) error { return fn(&countingTx{SyncTx: tx, rows: &c.rows}) })
}

type countingTx struct {
	store.SyncTx
	rows *atomic.Int64
}

func (t *countingTx) FindAudit(kind, subject string, before uint64, limit int) ([]eventlog.Entry, error) {
	es, err := t.SyncTx.FindAudit(kind, subject, before, limit)
	t.rows.Add(int64(len(es)))
	return es, err
}

// fillAudit appends n online acceptances of another token of user, as a
// busy online user leaves them in the audit log.
func (h *harness) fillAudit(dev, user, token string, n int) {
	h.t.Helper()
	for done := 0; done < n; {
		batch := make([]eventlog.Entry, min(1000, n-done))
		for i := range batch {
			raw, err := json.Marshal(map[string]any{"token": token, "matched": done + i})
			must(h.t, err)
			batch[i] = eventlog.Entry{Time: h.clock.Now(), Kind: "verify.ok", Actor: "api:test", Subject: user, Data: raw}
		}
		must(h.t, h.ss.SyncDevice(ctx, realm, dev, h.clock.Now(), func(tx store.SyncTx) error {
			_, err := tx.AppendAudit(batch)
			return err
		}))
		done += len(batch)
	}
}

// One upload's conflict search reads a bounded number of audit entries,
// however many online acceptances the user has and however many old
// counters the upload carries, and says so when the bound cut it short.
func TestConflictSearchBounded(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		other, _ := h.enrol("alice", h.params)
		h.fillAudit("dev-1", "alice", other.ID, 21000)
		d.bundle(1, 100, nil)
		for c := uint64(1); c <= 30; c++ {
			must(t, d.verify(c))
		}
		must(t, h.st.AdvanceToken(ctx, realm, "alice", h.tok.ID, 50)) // online, past every counter the device used
		cs := &countingSync{SyncStore: h.ss}
		h.svc.Sync = cs
		_, err := h.svc.Receive(ctx, d.upload(), "test")
		must(t, err)
		if n := cs.rows.Load(); n > 20000 {
			t.Errorf("one upload's conflict search read %d audit entries", n)
		}
		wantIncident(t, h, fieldsync.IncidentSearchBounded, "alice")
		if h.lastUsed() != 50 {
			t.Errorf("last used %d", h.lastUsed())
		}
	})
}

// An upload naming more tokens than a device can hold is refused before
// the transaction, and changes nothing (each token costs statements under
// the write lock).
func TestUploadTokenBound(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		must(t, d.verify(1))
		d.sync()
		// As many token states as an upload may carry, and one event naming one more token.
		var states []syncproto.TokenState
		for i := range syncproto.MaxTokens - 1 {
			states = append(states, syncproto.TokenState{Realm: realm, User: "alice", Token: fmt.Sprint("t", i), LastUsed: -1})
		}
		before := len(h.audit(""))
		_, err := h.svc.Receive(ctx, d.forge(states, event("verify.attempt", "alice", "one-more", map[string]any{})), "test")
		wantErr(t, err, fieldsync.ErrMalformed)
		dts, err := h.ss.ListDeviceTokens(ctx, realm, "dev-1")
		must(t, err)
		if len(dts) != 1 || len(h.audit("")) != before {
			t.Errorf("the refused upload left %d device tokens, %d audit entries", len(dts), len(h.audit(""))-before)
		}
	})
}
