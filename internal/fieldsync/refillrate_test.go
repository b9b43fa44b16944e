package fieldsync_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/fieldsync"
)

// A token is refilled for one device at most MaxRefillsPerDay times in 24
// hours: the next is refused, the device told why, and the incident
// recorded once (counted each time); a day later refills resume.
func TestRefillRate(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		h.svc.Refill = func(_ context.Context, n fieldsync.RefillNeed) ([]byte, error) {
			return h.tryIssue(bundle.Request{Realm: realm, User: n.Token.UserID, TokenID: n.Token.ID, Params: h.params, Secret: h.seed,
				Device: n.Device.ID, First: uint64(n.Token.LastUsed) + 1, Count: int(n.Last - n.First + 1), KDF: testKDF, Override: true,
				Now: h.clock.Now(), NotBefore: h.clock.Now().Add(-time.Minute), NotAfter: h.clock.Now().Add(48 * time.Hour)})
		}
		d := h.device("dev-1")
		d.bundle(1, 4, nil)
		next := uint64(1)
		useAll := func() {
			for range 4 {
				must(t, d.verify(next))
				next++
			}
		}
		for i := range fieldsync.MaxRefillsPerDay {
			useAll()
			if rep, _ := d.sync(); len(rep.Imported) != 1 || len(rep.NoRefill) != 0 {
				t.Fatalf("refill %d: %+v", i+1, rep)
			}
		}
		useAll()
		for i := range 2 {
			rep, res := d.sync()
			if len(rep.Imported) != 0 || len(rep.NoRefill) != 1 || !strings.Contains(rep.NoRefill[0], fieldsync.IncidentRefillRate) ||
				len(res.Response.Pending) != 0 {
				t.Fatalf("sync %d past the rate: %+v", i+1, rep)
			}
		}
		if n, recorded := h.count(fieldsync.IncidentRefillRate), countIncidents(h, fieldsync.IncidentRefillRate); n != 2 || recorded != 1 {
			t.Fatalf("refill_rate counted %d times, recorded %d: want 2 and 1", n, recorded)
		}
		h.clock.Advance(24 * time.Hour)
		if rep, _ := d.sync(); len(rep.Imported) != 1 {
			t.Fatalf("a day later: %+v", rep)
		}
	})
}

// countIncidents counts the audit log's incidents of kind.
func countIncidents(h *harness, kind string) int {
	n := 0
	for _, e := range h.audit(fieldsync.KindIncident) {
		if strings.Contains(string(e.Data), `"incident":"`+kind+`"`) {
			n++
		}
	}
	return n
}
