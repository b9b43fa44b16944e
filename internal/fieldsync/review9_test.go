package fieldsync_test

import (
	"context"
	"errors"

	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/offline"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/otp"
)

// Review of issue 9 (an attacker's read).

// TestFutureTOTPStepIsNoUse: a device holding a TOTP bundle for the next two
// hours (the default of an online PIN login) forges, with its own key, a
// verify.ok for the bundle's LAST step, and a state claiming it. Both lie
// inside the issued range, so today they apply: the user's online state
// jumps two hours ahead, and every code the user shows online until then is
// refused as "replayed". No device can have accepted a step that has not
// begun yet (give or take the clock tolerance): such a claim is beyond what
// was issued *so far* and must change nothing.
func TestFutureTOTPStepIsNoUse(t *testing.T) {
	totp := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		carol := h.victim("carol", totp)
		now := h.clock.Now()
		data := h.issue(bundle.Request{Realm: realm, User: "carol", TokenID: carol.tok.ID, Params: totp, Secret: carol.seed, Device: "dev-1",
			From: now, Until: now.Add(2 * time.Hour), KDF: testKDF, Override: true, Now: now})
		res, err := d.s.Import(ctx, data)
		must(t, err)
		last := res.Last
		st := syncproto.TokenState{Realm: realm, User: "carol", Token: carol.tok.ID, LastUsed: int64(last), Type: "totp", Serial: res.Serial,
			First: res.First, Last: last}
		up := d.forge([]syncproto.TokenState{st},
			event("verify.ok", "carol", carol.tok.ID, map[string]any{"serial": res.Serial, "counter": last}))
		h.clock.Advance(time.Second)
		if _, err := h.svc.Receive(ctx, up, "test"); err != nil {
			t.Fatal(err)
		}
		cur := totp.Step(h.clock.Now())
		if got := h.tokenOf(carol).LastUsed; got > int64(cur)+1 {
			t.Errorf("carol's online state stands at step %d, %d steps (%s) ahead of now: a claimed use of a step that has not begun moved it",
				got, uint64(got)-cur, time.Duration(uint64(got)-cur)*30*time.Second)
		}
		h.clock.Advance(30 * time.Second)
		c, err := totp.Generate(carol.seed, 0, h.clock.Now())
		must(t, err)
		if _, err := h.on.Verify(ctx, realm, "carol", c, "", "test"); err != nil {
			t.Errorf("carol's current code is refused online after the forged upload: %v", err)
		}
	})
}

// TestPendingRefillsWaitOnce: a sync answer waits up to RefillWait for EACH
// pending refill of the device in turn, one after the other. A device with
// several tokens due (a site device holding many users' bundles; refills
// queue behind one another on the server's single bundle slot) therefore
// gets answers that take n × RefillWait: with the server's 10 s wait, three
// pending refills outlast the 30 s write timeout and the connection dies —
// item 4's failure, back. The whole answer should wait at most RefillWait.
func TestPendingRefillsWaitOnce(t *testing.T) {
	hotp := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	forEngine(t, func(t *testing.T, h *harness) {
		const wait = 300 * time.Millisecond
		release := make(chan struct{})
		defer func() { close(release); h.svc.WaitRefills() }()
		h.svc.RefillWait = wait
		h.svc.Refill = func(ctx context.Context, n fieldsync.RefillNeed) ([]byte, error) {
			<-release
			return nil, errors.New("released")
		}
		d := h.device("dev-1")
		now := h.clock.Now()
		for _, user := range []string{"bob", "carol", "dave", "erin"} {
			v := h.victim(user, hotp)
			must(t, errOf(d.s.Import(ctx, h.issue(bundle.Request{Realm: realm, User: user, TokenID: v.tok.ID, Params: hotp, Secret: v.seed,
				Device: "dev-1", First: 1, Count: 4, KDF: testKDF, Override: true, Now: now, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour)}))))
			for c := uint64(1); c <= 4; c++ {
				_, err := d.s.Verify(ctx, offline.Attempt{User: user, Code: code(t, v, c)})
				must(t, err)
			}
		}
		for i := range 4 {
			h.clock.Advance(time.Second)
			up := d.upload()
			start := time.Now() // the test measures the real wait
			res, err := h.svc.Receive(ctx, up, "test")
			took := time.Since(start)
			must(t, err)
			_, err = d.s.ApplyResponse(ctx, res.Signed)
			must(t, err)
			// Waited for in turn, n pending refills would take n × wait at
			// least; waited for once, wait and the sync's own work. The
			// bound leaves the work (n-1) × wait on a loaded CI machine.
			if n := len(res.Response.Pending); n != i+1 {
				t.Fatalf("sync %d: %d refills pending, want %d", i+1, n, i+1)
			} else if n >= 3 && took >= time.Duration(n)*wait {
				t.Fatalf("sync %d: the answer took %s with %d refills pending (RefillWait %s): each pending refill is waited for in turn",
					i+1, took.Round(time.Millisecond), n, wait)
			}
		}
	})
}

func errOf[T any](_ T, err error) error { return err }
