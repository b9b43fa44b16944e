package storetest

import (
	"sync"
	"testing"

	"github.com/outpost-auth/outpost/internal/store"
)

// RunDeliveryAttempts runs the contract suite of store.DeliveryAttemptStore.
// Every store Open returns implements it.
func RunDeliveryAttempts(t *testing.T, open func(t *testing.T) store.Store) {
	runEngine(t, open, []engineCase[store.DeliveryAttemptStore]{
		{"Count", testAttemptsCount},
		{"Concurrent", testAttemptsConcurrent},
		{"Refused", testAttemptsRefused},
	})
}

func testAttemptsCount(t *testing.T, st store.Store, as store.DeliveryAttemptStore) {
	seed(t, st, "r1")
	ds := st.(store.DeliveryStore)
	must(t, ds.CreateDelivery(ctx, newDelivery("r1", "d1"), deliveryEntry("delivery.create", "d1")))
	if n, err := as.DeliveryAttempts(ctx, "r1", "d1", 1); err != nil || n != 0 {
		t.Fatalf("no attempts yet: %d %v", n, err)
	}
	for want := 1; want <= 3; want++ {
		n, taken, err := as.TakeDeliveryAttempt(ctx, "r1", "d1", 1, 3, deliveryEntry("delivery.attempt", "d1"))
		if err != nil || !taken || n != want {
			t.Fatalf("attempt %d: %d %v %v", want, n, taken, err)
		}
	}
	// At the limit: nothing written, not even the audit entry.
	n, taken, err := as.TakeDeliveryAttempt(ctx, "r1", "d1", 1, 3, deliveryEntry("delivery.attempt", "d1"))
	if err != nil || taken || n != 3 {
		t.Fatalf("over the limit: %d %v %v", n, taken, err)
	}
	if got := auditKinds(t, st); len(got) != 4 {
		t.Fatalf("audit = %v, want the create and three attempts", got)
	}
	// A new code version (reassignment) counts from zero.
	d := newDelivery("r1", "d1")
	d.State, d.CodeVersion, d.Device = "reassigned", 2, "dev-2"
	must(t, ds.UpdateDelivery(ctx, d, "created", 1, deliveryEntry("delivery.reassign", "d1")))
	if n, taken, err := as.TakeDeliveryAttempt(ctx, "r1", "d1", 2, 3, deliveryEntry("delivery.attempt", "d1")); err != nil || !taken || n != 1 {
		t.Fatalf("new version: %d %v %v", n, taken, err)
	}
	if n, _ := as.DeliveryAttempts(ctx, "r1", "d1", 1); n != 3 {
		t.Fatalf("old version's count = %d", n)
	}
	// The old version takes no attempt any more.
	_, taken, err = as.TakeDeliveryAttempt(ctx, "r1", "d1", 1, 5, deliveryEntry("delivery.attempt", "d1"))
	wantErr(t, err, store.ErrConflict)
	if taken {
		t.Fatal("attempt taken at an old version")
	}
}

// testAttemptsConcurrent: 20 attempts at once against a limit of 5: exactly
// 5 are taken, so parallel guesses cannot outrun the limit.
func testAttemptsConcurrent(t *testing.T, st store.Store, as store.DeliveryAttemptStore) {
	seed(t, st, "r1")
	must(t, st.(store.DeliveryStore).CreateDelivery(ctx, newDelivery("r1", "d1"), deliveryEntry("delivery.create", "d1")))
	var wg sync.WaitGroup
	var mu sync.Mutex
	taken := map[int]bool{}
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, ok, err := as.TakeDeliveryAttempt(ctx, "r1", "d1", 1, 5, deliveryEntry("delivery.attempt", "d1"))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("attempt: %v", err)
			case ok && taken[n]:
				t.Errorf("count %d handed out twice", n)
			case ok:
				taken[n] = true
			case n != 5:
				t.Errorf("refused at count %d", n)
			}
		}()
	}
	wg.Wait()
	if len(taken) != 5 {
		t.Fatalf("%d attempts taken, want 5", len(taken))
	}
	if got := auditKinds(t, st); len(got) != 6 {
		t.Errorf("audit = %v", got)
	}
}

func testAttemptsRefused(t *testing.T, st store.Store, as store.DeliveryAttemptStore) {
	seed(t, st, "r1")
	_, _, err := as.TakeDeliveryAttempt(ctx, "r1", "nope", 1, 5, deliveryEntry("delivery.attempt", "nope"))
	wantErr(t, err, store.ErrNotFound)
	must(t, st.(store.DeliveryStore).CreateDelivery(ctx, newDelivery("r1", "d1"), deliveryEntry("delivery.create", "d1")))
	_, _, err = as.TakeDeliveryAttempt(ctx, "r2", "d1", 1, 5, deliveryEntry("delivery.attempt", "d1"))
	wantErr(t, err, store.ErrNotFound)
	_, _, err = as.TakeDeliveryAttempt(ctx, "r1", "d1", 2, 5, deliveryEntry("delivery.attempt", "d1"))
	wantErr(t, err, store.ErrConflict)
	for name, call := range map[string]func() error{
		"limit 0": func() error {
			_, _, err := as.TakeDeliveryAttempt(ctx, "r1", "d1", 1, 0, deliveryEntry("x", "d1"))
			return err
		},
		"version 0": func() error {
			_, _, err := as.TakeDeliveryAttempt(ctx, "r1", "d1", 0, 5, deliveryEntry("x", "d1"))
			return err
		},
		"bad id": func() error {
			_, _, err := as.TakeDeliveryAttempt(ctx, "r1", "a\x00b", 1, 5, deliveryEntry("x", "d1"))
			return err
		},
	} {
		if err := call(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := auditKinds(t, st); len(got) != 1 {
		t.Errorf("refusals wrote audit entries: %v", got)
	}
}
