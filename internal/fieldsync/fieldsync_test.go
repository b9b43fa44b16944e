package fieldsync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/offline"
)

// Codes used offline are refused online after one sync, and the offline
// events are in the audit log exactly once.
func TestOfflineUseRefusedOnline(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		must(t, d.verify(1))
		must(t, d.verify(3))
		if err := d.verify(3); !errors.Is(err, offline.ErrRefused) {
			t.Fatalf("offline replay: %v", err)
		}
		rep, res := d.sync()
		if h.lastUsed() != 3 {
			t.Fatalf("server last used %d, want 3", h.lastUsed())
		}
		if res.Response.Acked == 0 || rep.Acked != res.Response.Acked {
			t.Errorf("acked %d / %d", rep.Acked, res.Response.Acked)
		}
		for _, c := range []uint64{2, 3} { // 3 used offline; 2 skipped offline is now behind the counter
			if _, err := h.on.Verify(ctx, realm, "alice", h.code(c), "", "test"); !errors.Is(err, online.ErrInvalidCode) && !errors.Is(err, online.ErrReplayed) {
				t.Errorf("online verify of counter %d after sync: %v, want refused", c, err)
			}
		}
		if _, err := h.on.Verify(ctx, realm, "alice", h.code(4), "", "test"); err != nil {
			t.Errorf("online verify of the next counter: %v", err)
		}
		for seq, n := range h.recordedSeqs("dev-1") {
			if n != 1 {
				t.Errorf("device entry %d recorded %d times", seq, n)
			}
		}
		if got := len(h.recordedSeqs("dev-1")); uint64(got) != res.Response.Acked {
			t.Errorf("%d device entries recorded, acked %d", got, res.Response.Acked)
		}
		if n := len(h.audit("offline.verify.ok")); n != 2 {
			t.Errorf("%d offline.verify.ok audit entries, want 2", n)
		}
		if len(rep.Conflicts) != 0 {
			t.Errorf("conflicts %v", rep.Conflicts)
		}
	})
}

// Codes used online are refused offline after one sync.
func TestOnlineUseRefusedOffline(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		if _, err := h.on.Verify(ctx, realm, "alice", h.code(5), "", "test"); err != nil {
			t.Fatal(err)
		}
		rep, _ := d.sync()
		if len(rep.Advanced) != 1 {
			t.Fatalf("advanced %v, want the one token", rep.Advanced)
		}
		for _, c := range []uint64{4, 5} {
			if err := d.verify(c); !errors.Is(err, offline.ErrRefused) {
				t.Errorf("offline verify of counter %d after sync: %v, want refused", c, err)
			}
		}
		must(t, d.verify(6))
		// The device's state.advance entry reaches the server at the next sync; nothing moves back.
		d.sync()
		if h.lastUsed() != 6 {
			t.Errorf("server last used %d, want 6", h.lastUsed())
		}
	})
}

// The same upload applied twice changes nothing; a lost answer is recovered
// by the next upload, which overlaps what the server has, and every event is
// recorded once.
func TestIdempotentAndLostAnswer(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		must(t, d.verify(2))
		up := d.upload()
		if _, err := h.svc.Receive(ctx, up, "test"); err != nil {
			t.Fatal(err)
		}
		before := len(h.audit(""))
		res, err := h.svc.Receive(ctx, up, "test") // the very same bytes: a retry
		must(t, err)
		if after := len(h.audit("")); after != before {
			t.Errorf("the same upload again added %d audit entries", after-before)
		}
		if res.New != 0 {
			t.Errorf("the retry recorded %d events", res.New)
		}
		// Both answers were lost: the device still believes nothing is acknowledged.
		must(t, d.verify(4))
		_, u := d.decodeUpload(d.upload())
		if u.After != 0 {
			t.Fatalf("upload after %d, want 0", u.After)
		}
		d.sync()
		seqs := h.recordedSeqs("dev-1")
		head := d.log()[len(d.log())-1].Seq
		for s := uint64(1); s <= head; s++ {
			if seqs[s] != 1 {
				t.Errorf("device entry %d recorded %d times", s, seqs[s])
			}
		}
		if h.lastUsed() != 4 {
			t.Errorf("last used %d", h.lastUsed())
		}
	})
}

// Conflicts: the same counter accepted online and offline, and on two devices.
func TestConflicts(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d1, d2 := h.device("dev-1"), h.device("dev-2")
		d1.bundle(1, 20, nil)
		d2.bundle(1, 20, nil)
		// While the devices are disconnected: counter 4 offline on dev-1 and online.
		must(t, d1.verify(4))
		r, err := h.on.Verify(ctx, realm, "alice", h.code(4), "", "test")
		if err != nil || r.Matched != 4 {
			t.Fatalf("online: %+v %v", r, err)
		}
		rep, _ := d1.sync()
		if len(rep.Conflicts) != 1 || rep.Conflicts[0].Counter != 4 || rep.Conflicts[0].Other != "online" {
			t.Fatalf("conflicts %+v, want counter 4 with online", rep.Conflicts)
		}
		// Counter 7 on both devices (dev-2 first learns that 4 is used, so that 7 is in its look-ahead).
		d2.sync()
		must(t, d1.verify(7))
		must(t, d2.verify(7))
		d1.sync()
		rep, _ = d2.sync()
		if len(rep.Conflicts) != 1 || rep.Conflicts[0].Counter != 7 || rep.Conflicts[0].Other != "device:dev-1" {
			t.Fatalf("conflicts %+v, want counter 7 with dev-1", rep.Conflicts)
		}
		cs := h.audit(fieldsync.KindConflict)
		if len(cs) != 2 || h.count(fieldsync.IncidentConflict) != 2 {
			t.Fatalf("%d conflict entries, %d counted", len(cs), h.count(fieldsync.IncidentConflict))
		}
		// Both events are named: the offline one and the other one, by audit sequence number.
		var v struct {
			Counter       uint64 `json:"counter"`
			AuditSeq      uint64 `json:"audit_seq"`
			OtherAuditSeq uint64 `json:"other_audit_seq"`
		}
		must(t, json.Unmarshal(cs[0].Data, &v))
		all := h.audit("")
		if v.AuditSeq == 0 || v.OtherAuditSeq == 0 || all[v.AuditSeq-1].Kind != "offline.verify.ok" || all[v.OtherAuditSeq-1].Kind != "verify.ok" {
			t.Errorf("conflict %+v does not name both events", v)
		}
		// Counter 9 on dev-2 only: no conflict.
		must(t, d2.verify(9))
		if rep, _ := d2.sync(); len(rep.Conflicts) != 0 {
			t.Errorf("conflicts %+v", rep.Conflicts)
		}
	})
}

// A TOTP step used offline after a later step was used online is not a conflict.
func TestOlderCodeIsNoConflict(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		must(t, d.verify(3))
		if _, err := h.on.Verify(ctx, realm, "alice", h.code(5), "", "test"); err != nil {
			t.Fatal(err)
		}
		rep, _ := d.sync()
		if len(rep.Conflicts) != 0 || h.lastUsed() != 5 {
			t.Errorf("conflicts %+v, last used %d", rep.Conflicts, h.lastUsed())
		}
	})
}

func TestReplayAndStaleUploads(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		must(t, d.verify(1))
		old := d.upload()
		must(t, d.verify(2))
		d.sync()
		before := h.audit("")
		_, err := h.svc.Receive(ctx, old, "test")
		wantErr(t, err, fieldsync.ErrReplay)
		// Replayed again: counted, recorded once.
		_, err = h.svc.Receive(ctx, old, "test")
		wantErr(t, err, fieldsync.ErrReplay)
		after := h.audit("")
		if len(after) != len(before)+1 || after[len(after)-1].Kind != fieldsync.KindIncident || h.count(fieldsync.IncidentReplay) != 2 {
			t.Fatalf("replays: %d new audit entries, %d counted", len(after)-len(before), h.count(fieldsync.IncidentReplay))
		}
		// An upload that outlived its window.
		up := d.upload()
		h.clock.Advance(time.Hour)
		_, err = h.svc.Receive(ctx, up, "test")
		wantErr(t, err, fieldsync.ErrExpired)
		// Its answer, applied out of order, is refused by the device.
		h.clock.Advance(-time.Hour)
		a := d.upload()
		b := d.upload()
		ra, err := h.svc.Receive(ctx, a, "test")
		must(t, err)
		rb, err := h.svc.Receive(ctx, b, "test")
		must(t, err)
		_, err = d.s.ApplyResponse(ctx, rb.Signed)
		must(t, err)
		_, err = d.s.ApplyResponse(ctx, ra.Signed)
		wantErr(t, err, offline.ErrStaleResponse)
		// A different upload reusing an applied serial: replay too.
		hdr, u := d.decodeUpload(b)
		u.Tokens = nil
		_, err = h.svc.Receive(ctx, d.craft(hdr.Serial, u), "test")
		wantErr(t, err, fieldsync.ErrReplay)
	})
}

// Tampered logs: a gap, a rewritten entry, a truncated log, a reordered
// chunk, a forged signature and state that goes backwards are refused,
// recorded as incidents, and change nothing.
func TestTamperedLogs(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		for c := uint64(1); c <= 4; c++ {
			must(t, d.verify(c))
		}
		_, res := d.sync()
		acked := res.Response.Acked
		for c := uint64(5); c <= 6; c++ {
			must(t, d.verify(c))
		}
		hdr, honest := d.decodeUpload(d.upload())
		log := d.log()
		serial := hdr.Serial + 1
		state := func() store.Device {
			dev, err := h.ss.GetDevice(ctx, "dev-1")
			must(t, err)
			return dev
		}
		other := h.device("dev-other")
		startDev, startUsed, startAudit := state(), h.lastUsed(), len(h.audit(""))
		var incidents int
		check := func(name string, data []byte, want error, incident string) {
			t.Helper()
			_, err := h.svc.Receive(ctx, data, "test")
			if !errors.Is(err, want) {
				t.Fatalf("%s: %v, want %v", name, err, want)
			}
			if dev := state(); dev.AckedSeq != startDev.AckedSeq || dev.UploadSerial != startDev.UploadSerial || h.lastUsed() != startUsed {
				t.Fatalf("%s changed state: %+v, last used %d", name, dev, h.lastUsed())
			}
			if incident != "" {
				incidents++
				es := h.audit(fieldsync.KindIncident)
				if len(es) != incidents || !strings.Contains(string(es[len(es)-1].Data), `"incident":"`+incident+`"`) {
					t.Fatalf("%s: incidents %d, last %s", name, len(es), es[len(es)-1].Data)
				}
			}
			serial++
		}
		// Gap: the upload starts after the acknowledged entry.
		u := honest
		u.After, u.Entries = acked+1, log[acked+1:]
		check("gap", d.craft(serial, u), fieldsync.ErrGap, fieldsync.IncidentGap)
		// Rewritten: the acknowledged entry altered, re-signed and re-chained.
		forged := slices.Clone(log)
		idk := d.identity()
		for i := int(acked) - 1; i < len(forged); i++ {
			var prev *eventlog.Entry
			if i > 0 {
				prev = &forged[i-1]
			}
			e := forged[i]
			if i == int(acked)-1 {
				e.Data = json.RawMessage(`{"realm":"acme","token":"x","counter":99}`)
			}
			n, err := eventlog.Next(prev, eventlog.Entry{Time: e.Time, Kind: e.Kind, Actor: e.Actor, Subject: e.Subject, Data: e.Data}, idk.Private)
			must(t, err)
			forged[i] = n
		}
		u = honest
		u.After, u.Entries = acked-1, forged[acked-1:]
		check("rewritten", d.craft(serial, u), fieldsync.ErrRewritten, fieldsync.IncidentRewritten)
		// Truncated: the device claims a log shorter than the acknowledged part.
		u = honest
		u.After, u.Entries, u.Head = 0, log[:acked-1], acked-1
		check("truncated", d.craft(serial, u), fieldsync.ErrTruncated, fieldsync.IncidentTruncated)
		// Missing and reordered entries inside the upload.
		u = honest
		u.Entries = append(slices.Clone(log[acked:acked+1]), log[acked+2:]...)
		check("missing", d.craft(serial, u), fieldsync.ErrBrokenChain, fieldsync.IncidentBrokenChain)
		u = honest
		es := slices.Clone(log[acked:])
		es[0], es[1] = es[1], es[0]
		u.Entries = es
		check("reordered", d.craft(serial, u), fieldsync.ErrBrokenChain, fieldsync.IncidentBrokenChain)
		// An entry altered without re-signing.
		u = honest
		es = slices.Clone(log[acked:])
		es[1].Subject = "mallory"
		u.Entries = es
		check("altered", d.craft(serial, u), fieldsync.ErrBrokenChain, fieldsync.IncidentBrokenChain)
		// State going backwards.
		u = honest
		u.Tokens = slices.Clone(honest.Tokens)
		u.Tokens[0].LastUsed = 2
		check("backwards", d.craft(serial, u), fieldsync.ErrBackwards, fieldsync.IncidentBackwards)
		// Signed by another registered device's key, naming dev-1 in the body.
		_, err := h.svc.Receive(ctx, other.craft(1, honest), "test")
		wantErr(t, err, fieldsync.ErrMalformed)
		if h.count(fieldsync.IncidentSubject) != 1 {
			t.Errorf("wrong subject counted %d times", h.count(fieldsync.IncidentSubject))
		}
		incidents++ // recorded: the other device's key signed it
		// A flipped bit in the signature.
		good := d.craft(serial, honest)
		check("bad signature", flip(good), fieldsync.ErrBadSignature, "")
		// Truncated and oversize files.
		check("truncated file", good[:len(good)/2], fieldsync.ErrMalformed, "")
		check("oversize", append(good, bytes.Repeat([]byte(" "), syncproto.MaxUploadSize)...), fieldsync.ErrTooLarge, "")
		if n := len(h.audit("")); n != startAudit+incidents {
			t.Errorf("%d audit entries added, want %d incidents", n-startAudit, incidents)
		}
		// The honest upload still goes through afterwards.
		if _, err := h.svc.Receive(ctx, d.craft(serial, honest), "test"); err != nil {
			t.Fatalf("honest upload: %v", err)
		}
		if h.lastUsed() != 6 {
			t.Errorf("last used %d", h.lastUsed())
		}
	})
}

// flip changes one bit inside the signature of an artifact.
func flip(data []byte) []byte {
	out := bytes.Clone(data)
	i := bytes.Index(out, []byte(`"sig":"`)) + 10
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	return out
}

func TestDevicesUnknownRevokedAndEnrolled(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		must(t, d.verify(1))
		d.sync()
		// Unknown device: never registered.
		dir := t.TempDir()
		u, err := offline.Init(ctx, dir, offline.Config{DeviceID: "stranger", ServerKey: h.signer.Public}, offline.Options{Now: h.clock.Now})
		must(t, err)
		defer u.Close()
		up, _, err := u.PrepareUpload(ctx, offline.UploadOptions{})
		must(t, err)
		before := len(h.audit(""))
		_, err = h.svc.Receive(ctx, up, "test")
		wantErr(t, err, fieldsync.ErrUnknownDevice)
		if len(h.audit("")) != before || h.count(fieldsync.IncidentUnknownKey) != 1 {
			t.Errorf("an unknown device's upload was recorded (anyone could fill the audit log)")
		}
		// Enrolment with a one-time code.
		code, _, err := h.svc.NewEnrolmentCode(ctx, realm, "stranger", 0, "test")
		must(t, err)
		e := enrolFor(t, dir, "stranger", code)
		bad := e
		bad.Code = strings.Replace(code, code[:1], string(rune(code[0])^1), 1)
		_, err = h.svc.Enrol(ctx, bad)
		wantErr(t, err, fieldsync.ErrEnrolment)
		dev, err := h.svc.Enrol(ctx, e)
		must(t, err)
		if dev.Status != store.DeviceActive || dev.KeyID == "" {
			t.Fatalf("enrolled %+v", dev)
		}
		_, err = h.svc.Enrol(ctx, e) // a code works once
		wantErr(t, err, fieldsync.ErrEnrolment)
		up, _, err = u.PrepareUpload(ctx, offline.UploadOptions{})
		must(t, err)
		_, err = h.svc.Receive(ctx, up, "test")
		must(t, err)

		// Revocation: the device cannot sync any more; its bundles are listed, HOTP ones burned.
		rep, err := h.svc.Revoke(ctx, realm, "dev-1", true, "test")
		must(t, err)
		if len(rep.Bundles) != 1 || !rep.Bundles[0].Burned || rep.Bundles[0].Last != 20 {
			t.Fatalf("revocation listed %+v", rep.Bundles)
		}
		if h.lastUsed() != 20 {
			t.Errorf("burned counter %d, want 20", h.lastUsed())
		}
		_, err = h.svc.Receive(ctx, d.upload(), "test")
		wantErr(t, err, fieldsync.ErrRevoked)
		if n := len(h.audit(fieldsync.KindIncident)); n != 1 {
			t.Errorf("%d incidents after a revoked device's sync", n)
		}
	})
}

func enrolFor(t *testing.T, dir, id, code string) syncproto.Enrol {
	t.Helper()
	k := (&device{h: &harness{t: t}, dir: dir}).identity()
	return syncproto.Enrol{Device: id, PublicKey: k.Public, Code: code, Sig: signEnrol(k, id, code)}
}

// Token revocation reaches the device; a bundle issued after the answer survives.
func TestTokenRevocationReachesDevice(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		must(t, h.st.SetTokenStatus(ctx, realm, "alice", h.tok.ID, store.TokenDisabled))
		rep, _ := d.sync()
		if len(rep.Revoked) != 1 {
			t.Fatalf("revoked %v", rep.Revoked)
		}
		if err := d.verify(1); !errors.Is(err, offline.ErrWiped) {
			t.Fatalf("verify after revocation: %v", err)
		}
		kinds := []string{}
		for _, e := range d.log() {
			kinds = append(kinds, e.Kind)
		}
		if !slices.Contains(kinds, "revoke") {
			t.Errorf("no revoke entry in %v", kinds)
		}
	})
}

// Many entries go in several uploads, each under the size bound, all recorded once.
func TestChunkedSync(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 300, nil)
		for c := uint64(1); c <= 250; c++ {
			must(t, d.verify(c))
		}
		rounds := 0
		for {
			up, info, err := d.s.PrepareUpload(ctx, offline.UploadOptions{MaxEntries: 130})
			must(t, err)
			res, err := h.svc.Receive(ctx, up, "test")
			must(t, err)
			_, err = d.s.ApplyResponse(ctx, res.Signed)
			must(t, err)
			rounds++
			if !info.More {
				break
			}
		}
		head := d.log()[len(d.log())-1].Seq
		if want := int((head + 129) / 130); rounds != want {
			t.Errorf("%d rounds for %d entries, want %d", rounds, head, want)
		}
		seqs := h.recordedSeqs("dev-1")
		if uint64(len(seqs)) != head {
			t.Errorf("%d of %d entries recorded", len(seqs), head)
		}
		if h.lastUsed() != 250 {
			t.Errorf("last used %d", h.lastUsed())
		}
	})
}

func TestRefill(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		var needs []fieldsync.RefillNeed
		h.svc.Refill = func(_ context.Context, n fieldsync.RefillNeed) ([]byte, error) {
			needs = append(needs, n)
			h.clock.Advance(time.Second)
			return h.tryIssue(bundle.Request{Realm: realm, User: n.Token.UserID, TokenID: n.Token.ID, Params: h.params, Secret: h.seed,
				Device: n.Device.ID, First: uint64(n.Token.LastUsed) + 1, Count: int(n.Last - n.First + 1), KDF: testKDF, Override: true,
				Now: h.clock.Now(), NotBefore: h.clock.Now().Add(-time.Minute), NotAfter: h.clock.Now().Add(24 * time.Hour)})
		}
		d := h.device("dev-1")
		d.bundle(1, 8, nil)
		must(t, d.verify(1))
		if rep, _ := d.sync(); len(rep.Imported) != 0 || len(rep.NoRefill) != 0 {
			t.Fatalf("refill while 7 of 8 remain: %+v", rep)
		}
		// Used online down to 1 left: due, but this device's log shows use of the bundle, so it is refilled.
		if _, err := h.on.Verify(ctx, realm, "alice", h.code(7), "", "test"); err != nil {
			t.Fatal(err)
		}
		// The first answer is lost; the next sync gets the same bundle, not a second one.
		lost, err := h.svc.Receive(ctx, d.upload(), "test")
		must(t, err)
		if len(lost.Response.Refills) != 1 {
			t.Fatalf("refill: %+v", lost.Response)
		}
		rep, res := d.sync()
		if len(rep.Imported) != 1 || rep.Imported[0].First != 8 || rep.Imported[0].Entries != 8 {
			t.Fatalf("refill: %+v", rep)
		}
		if !bytes.Equal(res.Response.Refills[0].Bundle, lost.Response.Refills[0].Bundle) || len(needs) != 1 {
			t.Errorf("%d refills issued for one need", len(needs))
		}
		must(t, d.verify(8))
		if rep, _ := d.sync(); len(rep.Imported) != 0 {
			t.Errorf("refilled again: %+v", rep)
		}
	})
}

func TestNoRefillWithoutProofOrWithPIN(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		h.svc.Refill = func(context.Context, fieldsync.RefillNeed) ([]byte, error) {
			t.Error("refill issued")
			return nil, errors.New("no")
		}
		d := h.device("dev-1")
		d.bundle(1, 4, nil)
		// Used up online only: no proof that the device used its entries.
		if _, err := h.on.Verify(ctx, realm, "alice", h.code(4), "", "test"); err != nil {
			t.Fatal(err)
		}
		rep, _ := d.sync()
		if len(rep.NoRefill) != 1 || !strings.Contains(rep.NoRefill[0], "no proof of use") {
			t.Fatalf("no refill reasons %v", rep.NoRefill)
		}
		d2 := h.device("dev-2")
		d2.bundle(5, 4, func(r *bundle.Request) { r.PIN = "2468" })
		_, err := d2.s.Verify(ctx, offline.Attempt{User: "alice", Code: h.code(8), PIN: "2468"})
		must(t, err)
		rep, _ = d2.sync()
		if len(rep.NoRefill) != 1 || !strings.Contains(rep.NoRefill[0], "field login") {
			t.Fatalf("no refill reasons %v", rep.NoRefill)
		}
	})
}

// An acceptance whose audit entry is not there yet (an online verification
// between its two writes) still makes a conflict: the token stands exactly
// at the counter and this device never reported reaching it.
func TestUnrecordedAcceptanceIsAConflict(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		d := h.device("dev-1")
		d.bundle(1, 20, nil)
		must(t, d.verify(3))
		must(t, h.st.AdvanceToken(ctx, realm, "alice", h.tok.ID, 3)) // the acceptance, without its audit entry
		rep, _ := d.sync()
		if len(rep.Conflicts) != 1 || rep.Conflicts[0].Other != fieldsync.OtherUnrecorded {
			t.Fatalf("conflicts %+v", rep.Conflicts)
		}
		// Chunked uploads of one device are not mistaken for it: the state
		// of the first part raises the token before the event arrives.
		must(t, d.verify(5))
		must(t, d.verify(6))
		up, info, err := d.s.PrepareUpload(ctx, offline.UploadOptions{MaxEntries: 2})
		must(t, err)
		if !info.More {
			t.Fatal("expected a split upload")
		}
		res, err := h.svc.Receive(ctx, up, "test")
		must(t, err)
		_, err = d.s.ApplyResponse(ctx, res.Signed)
		must(t, err)
		rep, _ = d.sync()
		if len(rep.Conflicts) != 0 {
			t.Fatalf("conflicts across one device's chunks: %+v", rep.Conflicts)
		}
	})
}

// A refill that takes longer than the answer may wait is computed in the
// background: the answer says "pending", a sync meanwhile starts no second
// one, and a later sync collects it. A refill that failed in the background
// is reported once, then tried again.
func TestRefillPending(t *testing.T) {
	forEngine(t, func(t *testing.T, h *harness) {
		release := make(chan struct{})
		var calls atomic.Int32
		fail := atomic.Bool{}
		h.svc.RefillWait = 20 * time.Millisecond
		h.svc.Refill = func(_ context.Context, n fieldsync.RefillNeed) ([]byte, error) {
			calls.Add(1)
			<-release
			if fail.Load() {
				return nil, errors.New("below the floor")
			}
			return h.tryIssue(bundle.Request{Realm: realm, User: n.Token.UserID, TokenID: n.Token.ID, Params: h.params, Secret: h.seed,
				Device: n.Device.ID, First: uint64(n.Token.LastUsed) + 1, Count: int(n.Last - n.First + 1), KDF: testKDF, Override: true,
				Now: h.clock.Now(), NotBefore: h.clock.Now().Add(-time.Minute), NotAfter: h.clock.Now().Add(24 * time.Hour)})
		}
		d := h.device("dev-1")
		d.bundle(1, 4, nil)
		for c := uint64(1); c <= 4; c++ {
			must(t, d.verify(c))
		}
		// The refill fails in the background: reported once, then tried again.
		fail.Store(true)
		_, res := d.sync()
		if len(res.Response.Pending) != 1 || len(res.Response.Refills) != 0 {
			t.Fatalf("first answer: %+v", res.Response)
		}
		release <- struct{}{}
		h.svc.WaitRefills()
		_, res = d.sync()
		if len(res.Response.NoRefill) != 1 || !strings.Contains(res.Response.NoRefill[0].Reason, "below the floor") {
			t.Fatalf("failed refill not reported: %+v", res.Response)
		}
		// Tried again, and pending while it computes: a sync meanwhile starts no second one.
		fail.Store(false)
		rep, res := d.sync()
		if len(res.Response.Pending) != 1 || len(rep.Pending) != 1 {
			t.Fatalf("second try: %+v", res.Response)
		}
		_, res = d.sync()
		if len(res.Response.Pending) != 1 || res.Response.Pending[0].ID != rep.Pending[0].ID || calls.Load() != 2 {
			t.Fatalf("a sync while pending: %+v, %d refills started", res.Response, calls.Load())
		}
		close(release)
		h.svc.WaitRefills()
		rep, _ = d.sync()
		if len(rep.Imported) != 1 || rep.Imported[0].First != 5 || len(rep.Pending) != 0 || calls.Load() != 2 {
			t.Fatalf("collected: %+v, %d refills started", rep, calls.Load())
		}
	})
}
