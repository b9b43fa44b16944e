package storetest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// RunDeliveries runs the contract suite of store.DeliveryStore. Every store
// Open returns implements it.
func RunDeliveries(t *testing.T, open func(t *testing.T) store.Store) {
	runEngine(t, open, []engineCase[store.DeliveryStore]{
		{"CreateGetList", testDeliveryCreateGetList},
		{"Update", testDeliveryUpdate},
		{"UpdateConcurrent", testDeliveryUpdateConcurrent},
		{"Invalid", testDeliveryInvalid},
	})
}

func newDelivery(realm, id string) store.Delivery {
	return store.Delivery{Realm: realm, ID: id, Device: "dev-1", Mode: "hash", State: "created",
		CreatedAt: when, NotAfter: when.Add(48 * time.Hour), CodeVersion: 1,
		CodeMAC: []byte("mac-1"), Recipient: []byte("sealed")}
}

func deliveryEntry(kind, id string) eventlog.Entry {
	return eventlog.Entry{Time: when, Kind: kind, Actor: "admin", Subject: id}
}

func auditKinds(t *testing.T, st store.Store) []string {
	t.Helper()
	es, err := st.ListAudit(ctx, 0, 1000)
	must(t, err)
	var out []string
	for _, e := range es {
		out = append(out, e.Kind+" "+e.Subject)
	}
	return out
}

func testDeliveryCreateGetList(t *testing.T, st store.Store, ds store.DeliveryStore) {
	seed(t, st, "r1")
	seed(t, st, "r2")
	wantErr(t, ds.CreateDelivery(ctx, newDelivery("nope", "d1"), deliveryEntry("delivery.create", "d1")), store.ErrNotFound)
	for _, id := range []string{"d2", "d1", "d3"} {
		must(t, ds.CreateDelivery(ctx, newDelivery("r1", id), deliveryEntry("delivery.create", id)))
	}
	must(t, ds.CreateDelivery(ctx, newDelivery("r2", "d1"), deliveryEntry("delivery.create", "d1"))) // ids are per realm
	dup := newDelivery("r1", "d1")
	dup.Device = "dev-2"
	wantErr(t, ds.CreateDelivery(ctx, dup, deliveryEntry("delivery.create", "d1")), store.ErrExists)

	got, err := ds.GetDelivery(ctx, "r1", "d1")
	must(t, err)
	want := newDelivery("r1", "d1")
	want.CreatedAt, want.UpdatedAt, want.NotAfter = stored(when), stored(when), stored(want.NotAfter)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GetDelivery = %+v, want %+v", got, want)
	}
	_, err = ds.GetDelivery(ctx, "r2", "d2")
	wantErr(t, err, store.ErrNotFound)

	page, err := ds.ListDeliveries(ctx, "r1", "", 2)
	must(t, err)
	if len(page) != 2 || page[0].ID != "d1" || page[1].ID != "d2" {
		t.Fatalf("first page = %v", page)
	}
	page, err = ds.ListDeliveries(ctx, "r1", "d2", 2)
	must(t, err)
	if len(page) != 1 || page[0].ID != "d3" {
		t.Fatalf("second page = %v", page)
	}
	_, err = ds.ListDeliveries(ctx, "r1", "", 0)
	wantErr(t, err, store.ErrInvalid)

	// One audit entry per stored delivery, none for the refused ones.
	if got := auditKinds(t, st); fmt.Sprint(got) != "[delivery.create d2 delivery.create d1 delivery.create d3 delivery.create d1]" {
		t.Errorf("audit = %v", got)
	}
}

func testDeliveryUpdate(t *testing.T, st store.Store, ds store.DeliveryStore) {
	seed(t, st, "r1")
	must(t, ds.CreateDelivery(ctx, newDelivery("r1", "d1"), deliveryEntry("delivery.create", "d1")))
	d := newDelivery("r1", "d1")
	d.Device, d.State, d.CodeVersion, d.CodeMAC, d.UpdatedAt = "dev-2", "reassigned", 2, []byte("mac-2"), when.Add(time.Hour)
	// Created, mode, expiry and recipient never change, whatever d says.
	d.Mode, d.Recipient = "token", []byte("other")
	must(t, ds.UpdateDelivery(ctx, d, "created", 1, deliveryEntry("delivery.reassign", "d1")))
	got, err := ds.GetDelivery(ctx, "r1", "d1")
	must(t, err)
	if got.Device != "dev-2" || got.State != "reassigned" || got.CodeVersion != 2 || string(got.CodeMAC) != "mac-2" ||
		!got.UpdatedAt.Equal(stored(when.Add(time.Hour))) || got.Mode != "hash" || string(got.Recipient) != "sealed" {
		t.Fatalf("after update: %+v", got)
	}
	// The row is no longer as read: ErrConflict, nothing written.
	d.State = "cancelled"
	wantErr(t, ds.UpdateDelivery(ctx, d, "created", 1, deliveryEntry("delivery.cancel", "d1")), store.ErrConflict)
	d.ID = "d9"
	wantErr(t, ds.UpdateDelivery(ctx, d, "reassigned", 2, deliveryEntry("delivery.cancel", "d9")), store.ErrNotFound)
	if got := auditKinds(t, st); fmt.Sprint(got) != "[delivery.create d1 delivery.reassign d1]" {
		t.Errorf("audit = %v", got)
	}
}

// Of many updates from the same read, exactly one wins.
func testDeliveryUpdateConcurrent(t *testing.T, st store.Store, ds store.DeliveryStore) {
	seed(t, st, "r1")
	must(t, ds.CreateDelivery(ctx, newDelivery("r1", "d1"), deliveryEntry("delivery.create", "d1")))
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := newDelivery("r1", "d1")
			d.State, d.Device = "cancelled", fmt.Sprintf("dev-%d", i)
			err := ds.UpdateDelivery(ctx, d, "created", 1, deliveryEntry("delivery.cancel", "d1"))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case !bytes.Contains([]byte(err.Error()), []byte("changed since")):
				t.Errorf("update: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d updates won, want 1", wins)
	}
	if got := auditKinds(t, st); len(got) != 2 {
		t.Errorf("audit = %v", got)
	}
}

func testDeliveryInvalid(t *testing.T, st store.Store, ds store.DeliveryStore) {
	seed(t, st, "r1")
	for name, mutate := range map[string]func(*store.Delivery){
		"bad id":       func(d *store.Delivery) { d.ID = "bad\x00id" },
		"no device":    func(d *store.Delivery) { d.Device = "" },
		"no mode":      func(d *store.Delivery) { d.Mode = "" },
		"no expiry":    func(d *store.Delivery) { d.NotAfter = time.Time{} },
		"no version":   func(d *store.Delivery) { d.CodeVersion = 0 },
		"no mac":       func(d *store.Delivery) { d.CodeMAC = nil },
		"no recipient": func(d *store.Delivery) { d.Recipient = nil },
	} {
		d := newDelivery("r1", "d1")
		mutate(&d)
		if err := ds.CreateDelivery(ctx, d, deliveryEntry("delivery.create", "d1")); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			wantErr(t, err, store.ErrInvalid)
		}
	}
	if got := auditKinds(t, st); len(got) != 0 {
		t.Errorf("audit = %v", got)
	}
}
