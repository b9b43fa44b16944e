package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// RunCourier runs the contract suite of store.CourierStore (migration
// 0007). Every store Open returns implements it and DeliveryStore.
func RunCourier(t *testing.T, open func(t *testing.T) store.Store) {
	runEngine(t, open, []engineCase[store.CourierStore]{
		{"Check", testCourierCheck},
		{"DeviceDeliveries", testCourierDeviceDeliveries},
		{"Manifest", testCourierManifest},
		{"Proof", testCourierProof},
		{"ProofConcurrent", testCourierProofConcurrent},
	})
}

func deliveries(t *testing.T, st store.Store) store.DeliveryStore {
	t.Helper()
	ds, ok := st.(store.DeliveryStore)
	if !ok {
		t.Fatalf("%T is not a DeliveryStore", st)
	}
	return ds
}

// The mode data is written with the delivery and replaced with its code.
func testCourierCheck(t *testing.T, st store.Store, cs store.CourierStore) {
	seed(t, st, "r1")
	ds := deliveries(t, st)
	d := newDelivery("r1", "d1")
	d.Check = []byte("check-1")
	must(t, ds.CreateDelivery(ctx, d, deliveryEntry("delivery.create", "d1")))
	must(t, ds.CreateDelivery(ctx, newDelivery("r1", "d2"), deliveryEntry("delivery.create", "d2")))
	c, err := cs.GetDeliveryCheck(ctx, "r1", "d1")
	must(t, err)
	if c.CodeVersion != 1 || string(c.Data) != "check-1" {
		t.Fatalf("check = %+v", c)
	}
	_, err = cs.GetDeliveryCheck(ctx, "r1", "d2")
	wantErr(t, err, store.ErrNotFound)
	if got, _ := ds.GetDelivery(ctx, "r1", "d1"); got.Check != nil {
		t.Errorf("GetDelivery returned the check")
	}
	d.State, d.CodeVersion, d.CodeMAC, d.Check = "reassigned", 2, []byte("mac-2"), []byte("check-2")
	must(t, ds.UpdateDelivery(ctx, d, "created", 1, deliveryEntry("delivery.reassign", "d1")))
	c, err = cs.GetDeliveryCheck(ctx, "r1", "d1")
	must(t, err)
	if c.CodeVersion != 2 || string(c.Data) != "check-2" {
		t.Fatalf("check after reassign = %+v", c)
	}
	// A refused update writes no check.
	d.Check = []byte("check-3")
	wantErr(t, ds.UpdateDelivery(ctx, d, "created", 1, deliveryEntry("delivery.reassign", "d1")), store.ErrConflict)
	if c, _ = cs.GetDeliveryCheck(ctx, "r1", "d1"); string(c.Data) != "check-2" {
		t.Fatalf("check after a refused update = %+v", c)
	}
	big := newDelivery("r1", "d3")
	big.Check = make([]byte, store.MaxCheckLen+1)
	wantErr(t, ds.CreateDelivery(ctx, big, deliveryEntry("delivery.create", "d3")), store.ErrInvalid)
}

func testCourierDeviceDeliveries(t *testing.T, st store.Store, cs store.CourierStore) {
	seed(t, st, "r1")
	ds := deliveries(t, st)
	for i, dev := range []string{"dev-1", "dev-2", "dev-1", "dev-1"} {
		d := newDelivery("r1", fmt.Sprintf("d%d", i))
		d.Device = dev
		if i == 3 {
			d.State = "delivered"
		}
		must(t, ds.CreateDelivery(ctx, d, deliveryEntry("delivery.create", d.ID)))
	}
	live := []string{"created", "notified"}
	got, err := cs.ListDeviceDeliveries(ctx, "r1", "dev-1", live, when, "", 10)
	must(t, err)
	if len(got) != 2 || got[0].ID != "d0" || got[1].ID != "d2" {
		t.Fatalf("dev-1 = %v", got)
	}
	got, err = cs.ListDeviceDeliveries(ctx, "r1", "dev-1", live, when, "d0", 10)
	must(t, err)
	if len(got) != 1 || got[0].ID != "d2" {
		t.Fatalf("dev-1 after d0 = %v", got)
	}
	// Past their expiry, none.
	got, err = cs.ListDeviceDeliveries(ctx, "r1", "dev-1", live, when.Add(49*time.Hour), "", 10)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("expired = %v", got)
	}
	_, err = cs.ListDeviceDeliveries(ctx, "r1", "dev-1", nil, when, "", 10)
	wantErr(t, err, store.ErrInvalid)
}

func testCourierManifest(t *testing.T, st store.Store, cs store.CourierStore) {
	seed(t, st, "r1")
	ds := deliveries(t, st)
	must(t, ds.CreateDelivery(ctx, newDelivery("r1", "d1"), deliveryEntry("delivery.create", "d1")))
	must(t, ds.CreateDelivery(ctx, newDelivery("r1", "d2"), deliveryEntry("delivery.create", "d2")))
	moves := []store.StateMove{
		{ID: "d1", From: "created", To: "out_for_delivery", CodeVersion: 1, Entry: deliveryEntry("delivery.out", "d1")},
		{ID: "d2", From: "notified", To: "out_for_delivery", CodeVersion: 1, Entry: deliveryEntry("delivery.out", "d2")}, // condition fails
	}
	items := []store.ManifestItem{{ID: "d1", CodeVersion: 1}, {ID: "d2", CodeVersion: 1}}
	if last, err := cs.LastManifest(ctx, "r1", "dev-1"); err != nil || last != 0 {
		t.Fatalf("last manifest before any: %d %v", last, err)
	}
	serial, applied, err := cs.RecordManifest(ctx, "r1", "dev-1", when, items, moves)
	must(t, err)
	if serial != 1 || fmt.Sprint(applied) != "[d1]" {
		t.Fatalf("first manifest: serial %d, applied %v", serial, applied)
	}
	serial, applied, err = cs.RecordManifest(ctx, "r1", "dev-1", when.Add(time.Hour), items, moves)
	must(t, err)
	if serial != 2 || len(applied) != 0 {
		t.Fatalf("second manifest: serial %d, applied %v", serial, applied)
	}
	if last, err := cs.LastManifest(ctx, "r1", "dev-1"); err != nil || last != 2 {
		t.Fatalf("last manifest: %d %v", last, err)
	}
	if serial, _, err = cs.RecordManifest(ctx, "r1", "dev-2", when, nil, nil); err != nil || serial != 1 {
		t.Fatalf("other device: serial %d, %v", serial, err)
	}
	s, at, err := cs.GetManifested(ctx, "r1", "d1", 1, "dev-1")
	must(t, err)
	if s != 1 || !at.Equal(stored(when)) {
		t.Fatalf("manifested: serial %d at %v (the first manifest counts)", s, at)
	}
	_, _, err = cs.GetManifested(ctx, "r1", "d1", 2, "dev-1")
	wantErr(t, err, store.ErrNotFound)
	_, _, err = cs.GetManifested(ctx, "r1", "d1", 1, "dev-2")
	wantErr(t, err, store.ErrNotFound)
	got, _ := ds.GetDelivery(ctx, "r1", "d1")
	if got.State != "out_for_delivery" {
		t.Fatalf("d1 is %s", got.State)
	}
	if got := auditKinds(t, st); fmt.Sprint(got) != "[delivery.create d1 delivery.create d2 delivery.out d1]" {
		t.Errorf("audit = %v", got)
	}
	_, _, err = cs.RecordManifest(ctx, "nope", "dev-1", when, nil, nil)
	wantErr(t, err, store.ErrNotFound)
}

// deliver is DeliverWithProofs of one write.
func deliver(t *testing.T, cs store.CourierStore, d store.Delivery, from string, version uint32, p store.DeliveryProof, e eventlog.Entry) error {
	t.Helper()
	res, err := cs.DeliverWithProofs(ctx, []store.ProofWrite{{Delivery: d, FromState: from, FromVersion: version, Proof: p, Entry: e}})
	if err != nil {
		return err
	}
	if len(res) != 1 {
		t.Fatalf("%d results for one write", len(res))
	}
	return res[0]
}

func proofOf(d store.Delivery) store.DeliveryProof {
	return store.DeliveryProof{Realm: d.Realm, ID: d.ID, CodeVersion: d.CodeVersion, Device: d.Device,
		Receipt: []byte("receipt"), Countersign: []byte("countersign"), DeliveredAt: when}
}

func testCourierProof(t *testing.T, st store.Store, cs store.CourierStore) {
	seed(t, st, "r1")
	ds := deliveries(t, st)
	d := newDelivery("r1", "d1")
	d.State = "out_for_delivery"
	must(t, ds.CreateDelivery(ctx, d, deliveryEntry("delivery.create", "d1")))
	_, err := cs.GetDeliveryProof(ctx, "r1", "d1")
	wantErr(t, err, store.ErrNotFound)
	d.State, d.UpdatedAt = "delivered", when.Add(time.Hour)
	must(t, deliver(t, cs, d, "out_for_delivery", 1, proofOf(d), deliveryEntry("delivery.deliver", "d1")))
	p, err := cs.GetDeliveryProof(ctx, "r1", "d1")
	must(t, err)
	if p.Device != "dev-1" || p.CodeVersion != 1 || string(p.Receipt) != "receipt" || string(p.Countersign) != "countersign" || !p.DeliveredAt.Equal(stored(when)) {
		t.Fatalf("proof = %+v", p)
	}
	got, _ := ds.GetDelivery(ctx, "r1", "d1")
	if got.State != "delivered" {
		t.Fatalf("state = %s", got.State)
	}
	// A second one is refused, nothing written.
	wantErr(t, deliver(t, cs, d, "out_for_delivery", 1, proofOf(d), deliveryEntry("delivery.deliver", "d1")), store.ErrExists)
	// A proof already there (whatever the state): ErrExists.
	wantErr(t, deliver(t, cs, d, "delivered", 1, proofOf(d), deliveryEntry("delivery.deliver", "d1")), store.ErrExists)
	d.ID = "d9"
	wantErr(t, deliver(t, cs, d, "out_for_delivery", 1, proofOf(d), deliveryEntry("delivery.deliver", "d9")), store.ErrNotFound)
	bad := proofOf(d)
	bad.Receipt = nil
	wantErr(t, deliver(t, cs, d, "out_for_delivery", 1, bad, deliveryEntry("delivery.deliver", "d9")), store.ErrInvalid)
	// A batch: each write on its own conditions, in one transaction.
	for _, id := range []string{"b1", "b2"} {
		b := newDelivery("r1", id)
		b.State = "out_for_delivery"
		must(t, ds.CreateDelivery(ctx, b, deliveryEntry("delivery.create", id)))
	}
	var ws []store.ProofWrite
	for _, id := range []string{"b1", "b2", "b1", "nope"} {
		b := newDelivery("r1", id)
		b.State = "delivered"
		ws = append(ws, store.ProofWrite{Delivery: b, FromState: "out_for_delivery", FromVersion: 1, Proof: proofOf(b), Entry: deliveryEntry("delivery.deliver", id)})
	}
	ws[1].FromVersion = 2 // b2 is at version 1: a conflict
	res, err := cs.DeliverWithProofs(ctx, ws)
	must(t, err)
	if len(res) != 4 || res[0] != nil {
		t.Fatalf("batch: %v", res)
	}
	wantErr(t, res[1], store.ErrConflict)
	wantErr(t, res[2], store.ErrExists)
	wantErr(t, res[3], store.ErrNotFound)
	if _, err := cs.GetDeliveryProof(ctx, "r1", "b2"); err == nil {
		t.Fatal("the conflicting write kept its proof")
	}
	if got := auditKinds(t, st); fmt.Sprint(got) != "[delivery.create d1 delivery.deliver d1 delivery.create b1 delivery.create b2 delivery.deliver b1]" {
		t.Errorf("audit = %v", got)
	}
}

// Of many receipts for one delivery at once, exactly one makes it delivered.
func testCourierProofConcurrent(t *testing.T, st store.Store, cs store.CourierStore) {
	seed(t, st, "r1")
	ds := deliveries(t, st)
	d := newDelivery("r1", "d1")
	d.State = "out_for_delivery"
	must(t, ds.CreateDelivery(ctx, d, deliveryEntry("delivery.create", "d1")))
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Go(func() {
			d := d
			d.State = "delivered"
			err := deliver(t, cs, d, "out_for_delivery", 1, proofOf(d), deliveryEntry("delivery.deliver", "d1"))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d receipts won, want 1", wins)
	}
	if got := auditKinds(t, st); len(got) != 2 {
		t.Errorf("audit = %v", got)
	}
}
