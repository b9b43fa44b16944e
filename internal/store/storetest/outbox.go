package storetest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// RunOutbox runs the contract suite of store.OutboxStore (and the outbox
// messages of store.DeliveryStore's writes). Every store Open returns
// implements both.
func RunOutbox(t *testing.T, open func(t *testing.T) store.Store) {
	runEngine(t, open, []engineCase[store.OutboxStore]{
		{"WrittenWithDelivery", testOutboxWithDelivery},
		{"ClaimFinish", testOutboxClaimFinish},
		{"ClaimConcurrent", testOutboxClaimConcurrent},
		{"ResendErase", testOutboxResendErase},
		{"Webhook", testOutboxWebhook},
		{"DueDeliveries", testDueDeliveries},
	})
}

func newOutboxMessage(realm, delivery string, version uint32, kind string) store.OutboxMessage {
	return store.OutboxMessage{ID: fmt.Sprintf("ob-%s-%d-%s", delivery, version, kind), Realm: realm, Delivery: delivery,
		Version: version, Kind: kind, CreatedAt: when, ExpiresAt: when.Add(48 * time.Hour),
		Payload: []byte(`{"type":"` + kind + `"}`), Secret: []byte("sealed-code")}
}

func outboxIDs(t *testing.T, os store.OutboxStore, realm, state string) []string {
	t.Helper()
	ms, err := os.ListOutbox(ctx, realm, state, "", 100)
	must(t, err)
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID+":"+m.State)
	}
	return ids
}

// Messages are written with the delivery change, once per ID, and not at
// all when the change is refused.
func testOutboxWithDelivery(t *testing.T, st store.Store, os store.OutboxStore) {
	seed(t, st, "r1")
	ds := st.(store.DeliveryStore)
	m1, e1 := newOutboxMessage("r1", "d1", 1, "recipient"), newOutboxMessage("r1", "d1", 1, "created")
	must(t, ds.CreateDelivery(ctx, newDelivery("r1", "d1"), deliveryEntry("delivery.create", "d1"), m1, e1))
	// A refused create (duplicate) writes no message.
	wantErr(t, ds.CreateDelivery(ctx, newDelivery("r1", "d1"), deliveryEntry("delivery.create", "d1"),
		newOutboxMessage("r1", "d1", 1, "other")), store.ErrExists)
	// A conflicting update writes none either.
	d := newDelivery("r1", "d1")
	d.State = "cancelled"
	wantErr(t, ds.UpdateDelivery(ctx, d, "notified", 1, deliveryEntry("delivery.cancel", "d1"),
		newOutboxMessage("r1", "d1", 1, "cancelled")), store.ErrConflict)
	// The same ID again (a retried change) is not written twice.
	d.State = "notified"
	m1again := m1
	m1again.Payload = []byte("changed")
	must(t, ds.UpdateDelivery(ctx, d, "created", 1, deliveryEntry("delivery.notify", "d1"), m1again,
		newOutboxMessage("r1", "d1", 1, "notified")))
	if got := fmt.Sprint(outboxIDs(t, os, "r1", "")); got != "[ob-d1-1-created:pending ob-d1-1-notified:pending ob-d1-1-recipient:pending]" {
		t.Fatalf("outbox = %s", got)
	}
	got, err := os.GetOutbox(ctx, "r1", m1.ID)
	must(t, err)
	if string(got.Payload) != string(m1.Payload) || string(got.Secret) != "sealed-code" || got.Attempts != 0 ||
		!got.NextAt.Equal(stored(when)) || !got.ExpiresAt.Equal(stored(m1.ExpiresAt)) || got.Version != 1 || got.Kind != "recipient" {
		t.Errorf("GetOutbox = %+v", got)
	}
	_, err = os.GetOutbox(ctx, "r2", m1.ID)
	wantErr(t, err, store.ErrNotFound)
	bad := newOutboxMessage("r1", "d2", 0, "x")
	wantErr(t, ds.CreateDelivery(ctx, newDelivery("r1", "d2"), deliveryEntry("delivery.create", "d2"), bad), store.ErrInvalid)
}

func testOutboxClaimFinish(t *testing.T, st store.Store, os store.OutboxStore) {
	seed(t, st, "r1")
	ds := st.(store.DeliveryStore)
	must(t, ds.CreateDelivery(ctx, newDelivery("r1", "d1"), deliveryEntry("delivery.create", "d1"),
		newOutboxMessage("r1", "d1", 1, "recipient"), newOutboxMessage("r1", "d1", 1, "created")))
	_, err := os.ClaimOutbox(ctx, "w1", when, 0, 10)
	wantErr(t, err, store.ErrInvalid)
	// Not yet due.
	ms, err := os.ClaimOutbox(ctx, "w1", when.Add(-time.Second), time.Minute, 10)
	must(t, err)
	if len(ms) != 0 {
		t.Fatalf("claimed %d before due", len(ms))
	}
	ms, err = os.ClaimOutbox(ctx, "w1", when, time.Minute, 1)
	must(t, err)
	if len(ms) != 1 || ms[0].LeaseOwner != "w1" || ms[0].Attempts != 1 || !ms[0].LeaseUntil.Equal(stored(when.Add(time.Minute))) {
		t.Fatalf("first claim = %+v", ms)
	}
	first := ms[0]
	ms, err = os.ClaimOutbox(ctx, "w2", when, time.Minute, 10)
	must(t, err)
	if len(ms) != 1 || ms[0].ID == first.ID {
		t.Fatalf("second claim = %+v (the first is leased)", ms)
	}
	second := ms[0]
	// The first worker died: its lease runs out and another claims it.
	ms, err = os.ClaimOutbox(ctx, "w2", when.Add(2*time.Minute), time.Minute, 10)
	must(t, err)
	if len(ms) != 2 || ms[0].Attempts+ms[1].Attempts != 4 {
		t.Fatalf("after the leases ran out: %+v", ms)
	}
	// w1 lost its lease: its finish changes nothing.
	wantErr(t, os.FinishOutbox(ctx, store.OutboxFinish{ID: first.ID, Owner: "w1", State: store.OutboxSent, Now: when}), store.ErrConflict)
	wantErr(t, os.FinishOutbox(ctx, store.OutboxFinish{ID: "nope", Owner: "w1", State: store.OutboxSent, Now: when}), store.ErrNotFound)
	wantErr(t, os.FinishOutbox(ctx, store.OutboxFinish{ID: first.ID, Owner: "w2", State: "bogus", Now: when}), store.ErrInvalid)
	// Sent, secret erased; retry later, with the error kept.
	must(t, os.FinishOutbox(ctx, store.OutboxFinish{ID: first.ID, Owner: "w2", State: store.OutboxSent, Now: when, EraseSecret: true}))
	long := strings.Repeat("\x00é", store.MaxOutboxError)
	must(t, os.FinishOutbox(ctx, store.OutboxFinish{ID: second.ID, Owner: "w2", State: store.OutboxPending,
		NextAt: when.Add(time.Hour), Now: when, LastError: long}))
	got, err := os.GetOutbox(ctx, "r1", first.ID)
	must(t, err)
	if got.State != store.OutboxSent || got.Secret != nil || got.LeaseOwner != "" {
		t.Errorf("sent message = %+v", got)
	}
	got, err = os.GetOutbox(ctx, "r1", second.ID)
	must(t, err)
	if got.State != store.OutboxPending || len(got.LastError) > store.MaxOutboxError || strings.ContainsRune(got.LastError, 0) || got.Secret == nil || !got.NextAt.Equal(stored(when.Add(time.Hour))) {
		t.Errorf("retried message = %+v", got)
	}
	// A sent message is never claimed again; the retried one when due.
	ms, err = os.ClaimOutbox(ctx, "w3", when.Add(59*time.Minute), time.Minute, 10)
	must(t, err)
	if len(ms) != 0 {
		t.Fatalf("claimed %+v before due", ms)
	}
	ms, err = os.ClaimOutbox(ctx, "w3", when.Add(time.Hour), time.Minute, 10)
	must(t, err)
	if len(ms) != 1 || ms[0].ID != second.ID {
		t.Fatalf("due claim = %+v", ms)
	}
	// Dead, with its audit entry in the same transaction.
	e := eventlog.Entry{Time: when, Kind: "outbox.dead", Actor: "outbox", Subject: second.ID}
	must(t, os.FinishOutbox(ctx, store.OutboxFinish{ID: second.ID, Owner: "w3", State: store.OutboxDead, Now: when, Audit: &e}))
	if got := fmt.Sprint(outboxIDs(t, os, "r1", store.OutboxDead)); got != "["+second.ID+":dead]" {
		t.Errorf("dead = %s", got)
	}
	if got := auditKinds(t, st); fmt.Sprint(got) != "[delivery.create d1 outbox.dead "+second.ID+"]" {
		t.Errorf("audit = %v", got)
	}
}

// Many workers claiming at once: each message is claimed exactly once.
func testOutboxClaimConcurrent(t *testing.T, st store.Store, os store.OutboxStore) {
	seed(t, st, "r1")
	ds := st.(store.DeliveryStore)
	const n = 40
	for i := range n {
		id := fmt.Sprintf("d%02d", i)
		must(t, ds.CreateDelivery(ctx, newDelivery("r1", id), deliveryEntry("delivery.create", id), newOutboxMessage("r1", id, 1, "created")))
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ms, err := os.ClaimOutbox(ctx, fmt.Sprintf("w%d", w), when, time.Hour, 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ms) == 0 {
					return
				}
				mu.Lock()
				for _, m := range ms {
					seen[m.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("claimed %d messages, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("%s claimed %d times", id, c)
		}
	}
}

func testOutboxResendErase(t *testing.T, st store.Store, os store.OutboxStore) {
	seed(t, st, "r1")
	ds := st.(store.DeliveryStore)
	m := newOutboxMessage("r1", "d1", 1, "recipient")
	must(t, ds.CreateDelivery(ctx, newDelivery("r1", "d1"), deliveryEntry("delivery.create", "d1"), m))
	e := eventlog.Entry{Time: when, Kind: "outbox.resend", Actor: "admin", Subject: m.ID}
	wantErr(t, os.ResendOutbox(ctx, "r1", m.ID, store.OutboxDead, when, e), store.ErrConflict) // pending, not dead
	wantErr(t, os.ResendOutbox(ctx, "r1", "nope", store.OutboxDead, when, e), store.ErrNotFound)
	ms, err := os.ClaimOutbox(ctx, "w1", when, time.Minute, 10)
	must(t, err)
	must(t, os.FinishOutbox(ctx, store.OutboxFinish{ID: ms[0].ID, Owner: "w1", State: store.OutboxDead, Now: when, LastError: "550"}))
	// Before the expiry, the dead message keeps its secret.
	n, err := os.EraseOutboxSecrets(ctx, m.ExpiresAt.Add(-time.Second))
	must(t, err)
	if n != 0 {
		t.Fatalf("erased %d before expiry", n)
	}
	later := when.Add(time.Hour)
	must(t, os.ResendOutbox(ctx, "r1", m.ID, store.OutboxDead, later, e))
	got, err := os.GetOutbox(ctx, "r1", m.ID)
	must(t, err)
	if got.State != store.OutboxPending || got.Attempts != 0 || !got.NextAt.Equal(stored(later)) || got.Secret == nil {
		t.Fatalf("resent = %+v", got)
	}
	ms, err = os.ClaimOutbox(ctx, "w1", later, time.Minute, 10)
	must(t, err)
	must(t, os.FinishOutbox(ctx, store.OutboxFinish{ID: ms[0].ID, Owner: "w1", State: store.OutboxDead, Now: later}))
	n, err = os.EraseOutboxSecrets(ctx, m.ExpiresAt)
	must(t, err)
	if n != 1 {
		t.Fatalf("erased %d, want 1", n)
	}
	got, err = os.GetOutbox(ctx, "r1", m.ID)
	must(t, err)
	if got.Secret != nil || got.State != store.OutboxDead {
		t.Fatalf("after erase = %+v", got)
	}
	if got := auditKinds(t, st); fmt.Sprint(got) != "[delivery.create d1 outbox.resend ob-d1-1-recipient]" {
		t.Errorf("audit = %v", got)
	}
}

func testOutboxWebhook(t *testing.T, st store.Store, os store.OutboxStore) {
	seed(t, st, "r1")
	e := eventlog.Entry{Time: when, Kind: "webhook.set", Actor: "admin", Subject: "r1"}
	_, err := os.GetRealmWebhook(ctx, "r1")
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, os.SetRealmWebhook(ctx, store.RealmWebhook{Realm: "nope", URL: "https://x", Secret: []byte("s")}, e), store.ErrNotFound)
	wantErr(t, os.SetRealmWebhook(ctx, store.RealmWebhook{Realm: "r1", URL: "", Secret: []byte("s")}, e), store.ErrInvalid)
	must(t, os.SetRealmWebhook(ctx, store.RealmWebhook{Realm: "r1", URL: "https://a.example/hook", Secret: []byte("s1"), UpdatedAt: when}, e))
	must(t, os.SetRealmWebhook(ctx, store.RealmWebhook{Realm: "r1", URL: "https://b.example/hook", Secret: []byte("s2"), UpdatedAt: when}, e))
	w, err := os.GetRealmWebhook(ctx, "r1")
	must(t, err)
	if w.URL != "https://b.example/hook" || string(w.Secret) != "s2" || !w.UpdatedAt.Equal(stored(when)) {
		t.Fatalf("webhook = %+v", w)
	}
	if got := auditKinds(t, st); len(got) != 2 {
		t.Errorf("audit = %v", got)
	}
}

func testDueDeliveries(t *testing.T, st store.Store, _ store.OutboxStore) {
	seed(t, st, "r1")
	seed(t, st, "r2")
	ds := st.(store.DeliveryStore)
	for i, c := range []struct {
		realm, id, state string
		after            time.Duration
	}{
		{"r1", "late", "created", 3 * time.Hour},
		{"r2", "soon", "notified", time.Hour},
		{"r1", "done", "delivered", time.Hour},
		{"r1", "later", "created", 5 * time.Hour},
	} {
		d := newDelivery(c.realm, c.id)
		d.State, d.NotAfter = c.state, when.Add(c.after)
		must(t, ds.CreateDelivery(ctx, d, deliveryEntry("delivery.create", fmt.Sprint(i))))
	}
	due := func(now time.Time, limit int) string {
		t.Helper()
		got, err := ds.DueDeliveries(ctx, now, []string{"created", "notified"}, limit)
		must(t, err)
		var ids []string
		for _, d := range got {
			ids = append(ids, d.Realm+"/"+d.ID)
		}
		return fmt.Sprint(ids)
	}
	if got := due(when.Add(30*time.Minute), 10); got != "[]" {
		t.Errorf("none due yet: %s", got)
	}
	if got := due(when.Add(3*time.Hour), 10); got != "[r2/soon r1/late]" {
		t.Errorf("due = %s", got)
	}
	if got := due(when.Add(9*time.Hour), 1); got != "[r2/soon]" {
		t.Errorf("limit 1: %s", got)
	}
	_, err := ds.DueDeliveries(ctx, when, nil, 10)
	wantErr(t, err, store.ErrInvalid)
}
