package roster_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/roster"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/internal/vouchwire"
	"github.com/outpost-auth/outpost/offline"
)

// TestVouchSyncedOnce: a vouch made offline reaches the roster at the next
// sync, once, however often the device syncs or retries.
func TestVouchSyncedOnce(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.staff("phone-1", true)
		payload, spki := label(t, "SN-1")
		v := d.vouch(payload) // no server involved
		if v.Serial != "SN-1" || v.Model != "gw-100" || v.Site != "site-1" || v.Location != "52.37,4.89" || v.KeyType != "p256" {
			t.Fatalf("Vouch = %+v", v)
		}
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", spki), roster.ErrNoVouch) // not synced yet

		up := d.upload()
		res, err := h.sync.Receive(ctx, up, "test")
		must(t, err)
		must(t, h.roster.Live(ctx, realm, "SN-1", spki))
		// The very same upload again (a lost answer), then later syncs: nothing new.
		_, err = h.sync.Receive(ctx, up, "test")
		must(t, err)
		_, err = d.s.ApplyResponse(ctx, res.Signed)
		must(t, err)
		d.sync()
		d.sync()

		e, err := h.roster.Get(ctx, realm, "SN-1")
		must(t, err)
		if len(e.Vouches) != 1 || e.State != roster.StateLive {
			t.Fatalf("roster entry = %+v, want one live vouch", e)
		}
		got := e.Vouches[0]
		if got.StaffDevice != "phone-1" || got.DeviceSeq != v.Seq || got.Site != "site-1" || got.Location != "52.37,4.89" ||
			!bytes.Equal(got.SPKI, spki) || !got.VouchedAt.Equal(v.Time) || !got.ExpiresAt.Equal(v.Time.Add(roster.DefaultExpiry)) ||
			got.Fingerprint != v.Fingerprint {
			t.Errorf("vouch = %+v, field said %+v", got, v)
		}
		if n := len(h.audit(roster.KindVouch)); n != 1 {
			t.Errorf("%d %s audit entries, want 1", n, roster.KindVouch)
		}
		if n := len(h.audit(fieldsync.KindOfflinePrefix + "vouch")); n != 1 {
			t.Errorf("%d offline.vouch audit entries, want 1", n)
		}
		if h.count(roster.CountIngested) != 1 {
			t.Errorf("ingested counted %d times", h.count(roster.CountIngested))
		}
		list, err := h.roster.List(ctx, realm, "", 10)
		must(t, err)
		if len(list) != 1 || list[0].Serial != "SN-1" {
			t.Errorf("List = %+v", list)
		}
	})
}

// TestVouchRefusedOnDevice: a bad label or a repeated vouch writes nothing
// to the device's log.
func TestVouchRefusedOnDevice(t *testing.T) {
	h := newHarness(t, storetest.SQLitePath(t))
	d := h.staff("phone-1", true)
	payload, _ := label(t, "SN-1")
	d.vouch(payload)
	before := len(d.log())
	for name, tc := range map[string]struct {
		req  offline.VouchRequest
		want error
	}{
		"checksum":  {offline.VouchRequest{Label: payload[:len(payload)-3] + flip(payload[len(payload)-3:]), Site: "s"}, device.ErrChecksum},
		"truncated": {offline.VouchRequest{Label: payload[:10], Site: "s"}, device.ErrMalformed},
		"oversize":  {offline.VouchRequest{Label: payload + strings.Repeat("0", device.MaxPayload), Site: "s"}, device.ErrMalformed},
		"prefix":    {offline.VouchRequest{Label: "XYZ:" + payload[4:], Site: "s"}, device.ErrMalformed},
		"site":      {offline.VouchRequest{Label: payload, Site: "a site"}, offline.ErrBadVouch},
		"location":  {offline.VouchRequest{Label: payload, Site: "s", Location: "91,0"}, offline.ErrBadVouch},
		"duplicate": {offline.VouchRequest{Label: payload, Site: "elsewhere"}, offline.ErrDuplicateVouch},
	} {
		_, err := d.s.Vouch(ctx, tc.req)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Vouch = %v, want %v", name, err, tc.want)
		}
	}
	if n := len(d.log()); n != before {
		t.Errorf("refused vouches wrote %d log entries", n-before)
	}
	// Another key under the same serial is not a duplicate: the server judges it.
	other, _ := label(t, "SN-1")
	d.vouch(other)
}

func flip(s string) string {
	if s[0] == '0' {
		return "1" + s[1:]
	}
	return "0" + s[1:]
}

// TestVouchExpiry: a vouch whose device never enrols expires; an enrolled
// device's vouch does not.
func TestVouchExpiry(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.staff("phone-1", true)
		p1, k1 := label(t, "SN-1")
		p2, k2 := label(t, "SN-2")
		d.vouch(p1)
		d.vouch(p2)
		d.sync()
		must(t, h.roster.Enrolled(ctx, realm, "SN-2", k2))
		h.clock.Advance(roster.DefaultExpiry)
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", k1), roster.ErrExpired)
		wantErr(t, h.roster.Enrolled(ctx, realm, "SN-1", k1), roster.ErrExpired)
		must(t, h.roster.Live(ctx, realm, "SN-2", k2))
		e, err := h.roster.Get(ctx, realm, "SN-1")
		must(t, err)
		if e.State != roster.StateExpired {
			t.Errorf("state %s, want expired", e.State)
		}
	})
}

// TestExpectedSerials: with expected serials, a vouch for another serial is
// held until an administrator approves it; a rejected one is withdrawn.
func TestExpectedSerials(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		res, err := h.roster.Expect(ctx, realm, []string{"SN-1", "SN-2"}, "PO-7", "admin")
		must(t, err)
		if res.Added != 2 {
			t.Fatalf("Expect = %+v", res)
		}
		d := h.staff("phone-1", true)
		p1, k1 := label(t, "SN-1")
		p9, k9 := label(t, "SN-9")
		p8, k8 := label(t, "SN-8")
		d.vouch(p1)
		d.vouch(p9)
		d.vouch(p8)
		d.sync()
		must(t, h.roster.Live(ctx, realm, "SN-1", k1))
		wantErr(t, h.roster.Live(ctx, realm, "SN-9", k9), roster.ErrHeld)
		if h.count(roster.CountHeld) != 2 {
			t.Errorf("held counted %d times, want 2", h.count(roster.CountHeld))
		}
		_, err = h.roster.Approve(ctx, realm, "SN-1", "", "admin")
		wantErr(t, err, roster.ErrState) // nothing held
		e, err := h.roster.Approve(ctx, realm, "SN-9", "", "admin")
		must(t, err)
		if e.State != roster.StateLive {
			t.Errorf("after approval: %+v", e)
		}
		must(t, h.roster.Live(ctx, realm, "SN-9", k9))
		_, err = h.roster.Reject(ctx, realm, "SN-8", "phone-1:99", "admin")
		wantErr(t, err, roster.ErrState)
		_, err = h.roster.Reject(ctx, realm, "SN-8", "", "admin")
		must(t, err)
		wantErr(t, h.roster.Live(ctx, realm, "SN-8", k8), roster.ErrWithdrawn)
		if len(h.audit(roster.KindApprove)) != 1 || len(h.audit(roster.KindReject)) != 1 || len(h.audit(roster.KindExpect)) != 1 {
			t.Error("approve, reject and expect are not each audited once")
		}
	})
}

// TestWithdraw: a withdrawn vouch fails Live at once, and the hook runs.
func TestWithdraw(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.staff("phone-1", true)
		p, k := label(t, "SN-1")
		d.vouch(p)
		d.sync()
		must(t, h.roster.Enrolled(ctx, realm, "SN-1", k))
		e, err := h.roster.Withdraw(ctx, realm, "SN-1", "stolen", "admin")
		must(t, err)
		if e.State != roster.StateWithdrawn || e.Vouches[0].Reason != "stolen" {
			t.Errorf("after Withdraw: %+v", e)
		}
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", k), roster.ErrWithdrawn)
		_, err = h.roster.Withdraw(ctx, realm, "SN-1", "again", "admin") // retries the hook
		must(t, err)
		if len(h.withdrawn) != 2 || h.withdrawn[0] != realm+"/SN-1" {
			t.Errorf("OnWithdraw calls = %v", h.withdrawn)
		}
		if len(h.audit(roster.KindWithdraw)) != 1 || h.count(roster.CountWithdrawn) != 1 {
			t.Error("one withdrawal should be audited and counted once")
		}
		_, err = h.roster.Withdraw(ctx, realm, "SN-404", "", "admin")
		wantErr(t, err, roster.ErrNoVouch)
	})
}

// TestAttackRevouchWithdrawn: a device stolen before it enrolled is
// withdrawn; the thief, holding an allowed staff device too (the lost
// phone), vouches for the same label again, signed with the phone's own
// key. The vouch is held, not live: the device cannot enrol until an
// administrator approves it.
func TestAttackRevouchWithdrawn(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.staff("phone-1", true)
		p, k := label(t, "SN-1")
		d.vouch(p)
		d.sync()
		_, err := h.roster.Withdraw(ctx, realm, "SN-1", "stolen from the van", "admin")
		must(t, err)
		v, err := vouchwire.New(p, "site-9", "")
		must(t, err)
		_, err = h.sync.Receive(ctx, d.forge(100, v.Data), "test")
		must(t, err)
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", k), roster.ErrHeld)
		// The administrator's approval is the way back.
		_, err = h.roster.Approve(ctx, realm, "SN-1", "", "admin")
		must(t, err)
		must(t, h.roster.Live(ctx, realm, "SN-1", k))
	})
}

// TestAttackNotAllowed: a registered device no administrator allowed to
// vouch signs a vouch with its own key: an incident, nothing stored.
func TestAttackNotAllowed(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		courier := h.staff("courier-1", false)
		p, k := label(t, "SN-1")
		courier.vouch(p) // its field store writes it; the server does not believe it
		courier.sync()
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", k), roster.ErrNoVouch)
		if got := incidentKinds(t, h.audit(roster.KindIncident)); len(got) != 1 || got[0] != roster.IncidentNotAllowed {
			t.Errorf("incidents = %v, want [%s]", got, roster.IncidentNotAllowed)
		}
	})
}

// TestAttackCopiedLabel: a staff device's holder forges a vouch, signed
// with the device's own key, for a serial already vouched with another key
// (a copied label on a rogue device, or a swapped device): held and an
// incident, never a replacement; the first vouch, not enrolled yet, is held
// too, until an administrator approves the real one.
func TestAttackCopiedLabel(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		honest := h.staff("phone-1", true)
		rogue := h.staff("phone-2", true)
		p, k := label(t, "SN-1")
		honest.vouch(p)
		honest.sync()
		rogue.sync()
		fake, fakeKey := label(t, "SN-1")
		v, err := vouchwire.New(fake, "site-9", "")
		must(t, err)
		_, err = h.sync.Receive(ctx, rogue.forge(100, v.Data), "test")
		must(t, err)
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", k), roster.ErrHeld)
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", fakeKey), roster.ErrHeld)
		if got := incidentKinds(t, h.audit(roster.KindIncident)); len(got) != 1 || got[0] != roster.IncidentKeyMismatch {
			t.Fatalf("incidents = %v, want [%s]", got, roster.IncidentKeyMismatch)
		}
		// The administrator approves the real one; the forged one stays held,
		// and approving it while the real one is live is refused.
		_, err = h.roster.Approve(ctx, realm, "SN-1", "", "admin")
		wantErr(t, err, roster.ErrState) // two held vouches: say which
		_, err = h.roster.Approve(ctx, realm, "SN-1", heldID(t, h, "SN-1", "phone-1"), "admin")
		must(t, err)
		must(t, h.roster.Live(ctx, realm, "SN-1", k))
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", fakeKey), roster.ErrHeld)
		_, err = h.roster.Approve(ctx, realm, "SN-1", heldID(t, h, "SN-1", "phone-2"), "admin")
		wantErr(t, err, roster.ErrState)
		// A device presenting the serial with a key nobody vouched for: an incident at enrolment.
		_, stranger := label(t, "SN-1")
		if err := h.roster.Live(ctx, realm, "SN-1", stranger); !errors.Is(err, roster.ErrKeyMismatch) {
			t.Fatalf("Live(stranger) = %v", err)
		}
		if got := incidentKinds(t, h.audit(roster.KindIncident)); len(got) != 2 || got[1] != roster.IncidentKeyMismatch {
			t.Errorf("incidents = %v, want a second key_mismatch", got)
		}
	})
}

// TestAttackForgedEntries: entries the field store would never write,
// signed with the device's own key: each an incident, nothing stored, and
// the sync itself goes through (the device's other entries are not lost).
func TestAttackForgedEntries(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.staff("phone-1", true)
		d.sync()
		good, goodKey := label(t, "SN-1")
		v, err := vouchwire.New(good, "site-1", "1,2")
		must(t, err)
		badSum := []byte(good)
		badSum[len(badSum)-1] ^= 1
		otherSerial := v.Data
		otherSerial.Serial = "SN-2"
		unknown := map[string]any{"label": good, "site": "site-1", "serial": v.Serial, "model": v.Model, "fingerprint": v.Fingerprint, "realm": "other"}
		fineLabel, fineKey := label(t, "SN-3")
		fine, err := vouchwire.New(fineLabel, "site-1", "")
		must(t, err)
		res, err := h.sync.Receive(ctx, d.forge(50,
			[]byte(`[1, 2]`), // JSON, not a vouch
			map[string]any{"label": string(badSum), "site": "site-1"},
			otherSerial,
			unknown,
			strings.Repeat("x", vouchwire.MaxDataLen),
			fine.Data, // the device's other entries are taken
		), "test")
		must(t, err)
		if res.New != 6 {
			t.Errorf("sync recorded %d entries, want 6", res.New)
		}
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", goodKey), roster.ErrNoVouch)
		wantErr(t, h.roster.Live(ctx, realm, "SN-2", goodKey), roster.ErrNoVouch)
		got := incidentKinds(t, h.audit(roster.KindIncident))
		if len(got) != 5 {
			t.Fatalf("incidents = %v, want 5 malformed", got)
		}
		for _, k := range got {
			if k != roster.IncidentMalformed {
				t.Errorf("incident %s, want %s", k, roster.IncidentMalformed)
			}
		}
		must(t, h.roster.Live(ctx, realm, "SN-3", fineKey))
	})
}

// TestAttackClockAhead: a vouch dated years ahead by the staff device's
// clock expires as if made when the server received it.
func TestAttackClockAhead(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.staff("phone-1", true)
		d.sync()
		p, k := label(t, "SN-1")
		v, err := vouchwire.New(p, "site-1", "")
		must(t, err)
		server := h.clock.Now()
		_, err = h.sync.Receive(ctx, d.forgeAt(60, server.Add(5*365*24*time.Hour), v.Data), "test")
		must(t, err)
		e, err := h.roster.Get(ctx, realm, "SN-1")
		must(t, err)
		if want := server.Add(roster.DefaultExpiry); !e.Vouches[0].ExpiresAt.Equal(want) {
			t.Errorf("expires at %s, want %s", e.Vouches[0].ExpiresAt, want)
		}
		must(t, h.roster.Live(ctx, realm, "SN-1", k))
		h.clock.Advance(roster.DefaultExpiry)
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", k), roster.ErrExpired)
	})
}

// TestAttackVouchFirst: a rogue staff device vouches for an expected serial
// with its holder's own key before the installer vouches for the real
// device. When the real vouch arrives, the rogue key, not enrolled yet, is
// held with it: whoever vouched first, no key enrols the serial before an
// administrator decides; one that enrolled already is left to the
// incident and a withdrawal.
func TestAttackVouchFirst(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		rogue := h.staff("phone-2", true)
		honest := h.staff("phone-1", true)
		fake, fakeKey := label(t, "SN-1")
		rogue.vouch(fake)
		rogue.sync()
		must(t, h.roster.Live(ctx, realm, "SN-1", fakeKey)) // alone, it is live
		p, k := label(t, "SN-1")
		honest.vouch(p)
		honest.sync()
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", fakeKey), roster.ErrHeld)
		wantErr(t, h.roster.Live(ctx, realm, "SN-1", k), roster.ErrHeld)
		e, err := h.roster.Get(ctx, realm, "SN-1")
		must(t, err)
		for _, v := range e.Vouches {
			if v.State != roster.StateHeld || v.Reason == "" {
				t.Errorf("vouch %s: %s (%q), want held with a reason", v.ID, v.State, v.Reason)
			}
		}
		if got := incidentKinds(t, h.audit(roster.KindIncident)); len(got) != 1 || got[0] != roster.IncidentKeyMismatch {
			t.Fatalf("incidents = %v, want [%s]", got, roster.IncidentKeyMismatch)
		}

		// Both in one upload: the same.
		p2, k2 := label(t, "SN-2")
		f2, fk2 := label(t, "SN-2")
		rogue.vouch(f2)
		rogue.vouch(p2)
		rogue.sync()
		wantErr(t, h.roster.Live(ctx, realm, "SN-2", k2), roster.ErrHeld)
		wantErr(t, h.roster.Live(ctx, realm, "SN-2", fk2), roster.ErrHeld)

		// A key that enrolled already keeps its state: the incident says so.
		p3, k3 := label(t, "SN-3")
		rogue.vouch(p3)
		rogue.sync()
		must(t, h.roster.Enrolled(ctx, realm, "SN-3", k3))
		f3, fk3 := label(t, "SN-3")
		honest.vouch(f3)
		honest.sync()
		must(t, h.roster.Live(ctx, realm, "SN-3", k3))
		wantErr(t, h.roster.Live(ctx, realm, "SN-3", fk3), roster.ErrHeld)
	})
}

// heldID is the id of serial's held vouch made by staff device staff.
func heldID(t *testing.T, h *harness, serial, staff string) string {
	t.Helper()
	e, err := h.roster.Get(ctx, realm, serial)
	must(t, err)
	for _, v := range e.Vouches {
		if v.StaffDevice == staff && v.State == roster.StateHeld {
			return v.ID
		}
	}
	t.Fatalf("no held vouch of %s by %s in %+v", serial, staff, e)
	return ""
}
