package fieldsync_test

import (
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/otp"
)

// A TOTP step a device claims (an accepted code, or its state) counts up to
// the step of the server's clock plus StepTolerance, plus one: beyond that
// it has not begun, is out_of_range, and moves nothing.
func TestTOTPStepHorizon(t *testing.T) {
	totp := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	for _, tc := range []struct {
		name    string
		ahead   uint64 // steps after the horizon's step, Step(now + StepTolerance)
		state   bool   // claim it in the token state only (else also as a verify.ok)
		applied bool
	}{
		{"use at the horizon", 1, false, true},
		{"use past the horizon", 2, false, false},
		{"state at the horizon", 1, true, true},
		{"state past the horizon", 2, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEngine(t, func(t *testing.T, h *harness) {
				d := h.device("dev-1")
				carol := h.victim("carol", totp)
				now := h.clock.Now()
				res, err := d.s.Import(ctx, h.issue(bundle.Request{Realm: realm, User: "carol", TokenID: carol.tok.ID, Params: totp,
					Secret: carol.seed, Device: "dev-1", From: now, Until: now.Add(time.Hour), KDF: testKDF, Override: true, Now: now}))
				must(t, err)
				step := totp.Step(now.Add(fieldsync.StepTolerance)) + tc.ahead
				st := syncproto.TokenState{Realm: realm, User: "carol", Token: carol.tok.ID, LastUsed: int64(step),
					Type: "totp", Serial: res.Serial, First: res.First, Last: res.Last}
				var events []eventlog.Entry
				if !tc.state {
					events = append(events, event("verify.ok", "carol", carol.tok.ID, map[string]any{"serial": res.Serial, "counter": step}))
				}
				must(t, errOf(h.svc.Receive(ctx, d.forge([]syncproto.TokenState{st}, events...), "test")))
				got := h.tokenOf(carol).LastUsed
				if tc.applied && got != int64(step) {
					t.Errorf("step %d (%d after the horizon's) not applied: the token stands at %d", step, tc.ahead, got)
				}
				if !tc.applied && got >= int64(step) {
					t.Errorf("step %d, not begun by the server's clock, moved the token to %d", step, got)
				}
				if n := h.count(fieldsync.IncidentOutOfRange); (n > 0) == tc.applied {
					t.Errorf("%d out_of_range incidents, applied %v", n, tc.applied)
				}
			})
		})
	}
}
