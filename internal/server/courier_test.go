package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/delivery"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/offline"
)

// courierFixture is a server with an issuer client and courier devices.
type courierFixture struct {
	*fixture
	iss   string
	realm string
	dirs  map[string]string
	devs  map[string]*offline.Store
}

func newCourierFixture(t *testing.T, dsn string, devices ...string) *courierFixture {
	f := &courierFixture{fixture: newFixture(t, dsn), dirs: map[string]string{}, devs: map[string]*offline.Store{}}
	f.iss = f.client("issuer")
	for _, id := range devices {
		f.dirs[id] = filepath.Join(t.TempDir(), id)
		f.devs[id] = f.fieldDeviceIn(f.dirs[id], id)
	}
	d, err := f.st.(store.SyncStore).GetDevice(context.Background(), devices[0])
	if err != nil {
		t.Fatal(err)
	}
	f.realm = d.Realm
	return f
}

// create makes a delivery and returns its code.
func (f *courierFixture) create(id, device, mode string) string {
	f.t.Helper()
	due := f.clock.Now().Add(48 * time.Hour).Format(time.RFC3339)
	r := f.mustCall(http.StatusCreated, f.iss, "POST", "/v1/deliveries", map[string]any{"id": id, "device": device, "not_after": due, "mode": mode,
		"recipient": map[string]string{"email": "ana.recipient@example.org"}})
	return r.body["code"].(string)
}

func (f *courierFixture) sync(dev string) offline.SyncReport {
	f.t.Helper()
	rep, err := f.devs[dev].Sync(context.Background(), f.syncClient())
	if err != nil {
		f.t.Fatalf("sync %s: %v", dev, err)
	}
	return rep
}

func (f *courierFixture) state(id string) string {
	f.t.Helper()
	return f.mustCall(http.StatusOK, f.iss, "GET", "/v1/deliveries/"+id, nil).body["state"].(string)
}

func acksOf(rep offline.SyncReport) map[string]string {
	m := map[string]string{}
	for _, a := range rep.Receipts {
		m[a.Delivery] = a.Status
	}
	return m
}

// TestCourierFlow: the manifest at sync (out for delivery, no recipient
// data), checks at the door in each mode, receipts at the next sync
// (delivered once; cancelled and reassigned ones refused as incidents),
// and a proof that verifies with the server's public key alone; both engines.
func TestCourierFlow(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := newCourierFixture(t, dsn(t), "van-1", "van-2")
			codes := map[string]string{}
			for id, mode := range map[string]string{"p-hash": "hash", "p-fp": "fingerprint", "p-cancel": "hash", "p-move": "hash"} {
				codes[id] = f.create(id, "van-1", mode)
			}
			rep := f.sync("van-1")
			if rep.Manifest == nil || rep.Manifest.Deliveries != 4 || f.state("p-hash") != "out_for_delivery" {
				t.Fatalf("first sync: manifest %+v, state %s", rep.Manifest, f.state("p-hash"))
			}
			m, err := f.srv.deliveries.Manifest(ctx, f.realm, "van-1")
			if err != nil {
				t.Fatal(err)
			}
			for _, leak := range []string{"ana.recipient", "example.org", codes["p-hash"]} {
				if bytes.Contains(m, []byte(leak)) {
					t.Fatalf("the manifest holds %q", leak)
				}
			}
			// The server changes its mind while the courier is offline.
			f.mustCall(http.StatusOK, f.iss, "POST", "/v1/deliveries/p-cancel/cancel", nil)
			f.mustCall(http.StatusOK, f.iss, "POST", "/v1/deliveries/p-move/reassign", map[string]string{"device": "van-2"})

			dev := f.devs["van-1"]
			typo := codes["p-hash"][:len(codes["p-hash"])-1] + string('0'+(codes["p-hash"][len(codes["p-hash"])-1]-'0'+1)%10)
			if _, err := dev.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "p-hash", Code: typo}); !errors.Is(err, offline.ErrTypo) {
				t.Fatalf("typo: %v", err)
			}
			var ae *offline.AttemptsError
			if _, err := dev.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "p-hash", Code: codes["p-fp"]}); !errors.As(err, &ae) || ae.Left != 4 || !errors.Is(err, offline.ErrWrongCode) {
				t.Fatalf("wrong code: %v (the typo must not have cost an attempt)", err)
			}
			res, err := dev.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "p-hash", Code: codes["p-hash"], Location: "48.8566,2.3522"})
			if err != nil || res.Provisional {
				t.Fatalf("right code: %+v %v", res, err)
			}
			if _, err := dev.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "p-hash", Code: codes["p-hash"]}); !errors.Is(err, offline.ErrDelivered) {
				t.Fatalf("accepted twice: %v", err)
			}
			if res, err := dev.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "p-fp", Code: codes["p-fp"]}); err != nil || !res.Provisional {
				t.Fatalf("fingerprint: %+v %v", res, err)
			}
			for _, id := range []string{"p-cancel", "p-move"} { // the device does not know yet
				if _, err := dev.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: id, Code: codes[id]}); err != nil {
					t.Fatalf("%s offline: %v", id, err)
				}
			}
			rep = f.sync("van-1")
			want := map[string]string{"p-hash": "delivered", "p-fp": "delivered", "p-cancel": "refused", "p-move": "refused"}
			if got := acksOf(rep); len(got) != 4 || got["p-hash"] != want["p-hash"] || got["p-fp"] != want["p-fp"] || got["p-cancel"] != want["p-cancel"] || got["p-move"] != want["p-move"] {
				t.Fatalf("receipts: %+v", rep.Receipts)
			}
			if rep.Manifest == nil || rep.Manifest.Deliveries != 0 {
				t.Fatalf("second manifest: %+v", rep.Manifest)
			}
			if _, err := dev.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "p-move", Code: codes["p-move"]}); !errors.Is(err, offline.ErrNotOnRoute) {
				t.Fatalf("reassigned away, after sync: %v", err)
			}
			for id, st := range map[string]string{"p-hash": "delivered", "p-fp": "delivered", "p-cancel": "cancelled", "p-move": "reassigned"} {
				if got := f.state(id); got != st {
					t.Errorf("%s is %s, want %s", id, got, st)
				}
			}
			// The proof verifies with the server's public key alone.
			r := f.mustCall(http.StatusOK, f.iss, "GET", "/v1/deliveries/p-hash/proof", nil)
			rc, cs, err := courierproto.VerifyProof(r.raw, f.srv.signer.Public)
			if err != nil || rc.Location != "48.8566,2.3522" || cs.Device != "van-1" || rc.Mode != "hash" {
				t.Fatalf("proof: %+v %+v %v", rc, cs, err)
			}
			if r := f.call(f.iss, "GET", "/v1/deliveries/p-cancel/proof", nil); r.status != 404 || r.errCode() != "proof_not_found" {
				t.Fatalf("proof of a cancelled delivery: %d %s", r.status, r.raw)
			}
			// Nothing is sent twice.
			if rep = f.sync("van-1"); len(rep.Receipts) != 0 {
				t.Fatalf("third sync re-sent receipts: %+v", rep.Receipts)
			}
			incidents := f.audit(t, audit.DeliveryIncident)
			if !strings.Contains(incidents, delivery.IncidentCancelled) || !strings.Contains(incidents, delivery.IncidentReassigned) {
				t.Fatalf("incidents: %s", incidents)
			}
		})
	}
}

// audit returns the data of the audit entries of kind, joined.
func (f *courierFixture) audit(t *testing.T, kind string) string {
	t.Helper()
	es, err := f.st.ListAudit(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range es {
		if e.Kind == kind {
			b.Write(e.Data)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// forgeReceipt signs r with device's own key (the holder of the device can).
func (f *courierFixture) forgeReceipt(dev string, r courierproto.Receipt) []byte {
	f.t.Helper()
	id, err := devicelog.LoadOrCreateIdentity(f.dirs[dev])
	if err != nil {
		f.t.Fatal(err)
	}
	now := f.clock.Now()
	data, err := artifact.Sign(&keys.Signer{Private: id.Private, Public: id.Public, KeyID: id.KeyID}, artifact.Header{Type: courierproto.ReceiptType,
		Version: courierproto.ReceiptVersion, Subject: dev, Serial: r.LogSeq, IssuedAt: now, NotBefore: now, NotAfter: now.Add(time.Hour)}, r)
	if err != nil {
		f.t.Fatal(err)
	}
	return data
}

// upload sends dev's next upload with receipts added (signed with the
// device's own key) and returns the server's answers.
func (f *courierFixture) upload(dev string, receipts ...[]byte) []courierproto.ReceiptAck {
	f.t.Helper()
	ctx := context.Background()
	up, _, err := f.devs[dev].PrepareUpload(ctx, offline.UploadOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	up = forgeUpload(f.t, f.fixture, f.dirs[dev], up, func(u *syncproto.Upload) { u.Receipts = append(u.Receipts, receipts...) })
	r := f.call("", "POST", "/v1/sync", up)
	if r.status != 200 {
		f.t.Fatalf("sync: %d %s", r.status, r.raw)
	}
	_, body, err := artifact.Verify(r.raw, artifact.Keys{f.srv.signer.Public}, artifact.Expect{Type: syncproto.ResponseType})
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := syncproto.DecodeResponse(body)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.devs[dev].ApplyResponse(ctx, r.raw); err != nil {
		f.t.Fatal(err)
	}
	return resp.Receipts
}

// TestCourierAttacks: receipts forged with the device's own key are
// believed only for what the server manifested to that device.
func TestCourierAttacks(t *testing.T) {
	ctx := context.Background()
	f := newCourierFixture(t, engines(t)["sqlite"](t), "van-1", "van-2")
	code := f.create("mine", "van-1", "hash")
	f.create("theirs", "van-2", "hash")
	f.create("moved", "van-1", "hash")
	f.create("gone", "van-1", "hash")
	fp := f.create("fp", "van-1", "fingerprint")
	f.sync("van-1")
	f.sync("van-2")
	movedCode := f.mustCall(http.StatusOK, f.iss, "POST", "/v1/deliveries/moved/reassign", map[string]string{"device": "van-2"}).body["code"].(string)
	f.mustCall(http.StatusOK, f.iss, "POST", "/v1/deliveries/gone/cancel", nil)
	st, _ := f.devs["van-1"].SyncState(ctx)
	claim := func(id string, version int) courierproto.Receipt {
		return courierproto.Receipt{Realm: f.realm, Delivery: id, Version: version, Device: "van-1", Mode: "hash", Time: f.clock.Now(),
			Manifest: 1, LogSeq: 1, LogHash: bytes.Repeat([]byte{7}, 32)}
	}
	route, err := f.devs["van-2"].Route(ctx)
	if err != nil || len(route.Deliveries) != 1 {
		t.Fatalf("van-2's route: %+v %v", route, err)
	}
	fraud := claim("fp", 1)
	fraud.Mode = "fingerprint"
	wrong := "000000000" // sealed with the right binding, but not the code
	if wrong == fp {
		t.Skip("improbable")
	}
	keysOf, err := f.srv.deliveries.Manifest(ctx, f.realm, "van-1") // the pinned keys, as the device has them
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := artifact.Verify(keysOf, artifact.Keys{f.srv.signer.Public}, artifact.Expect{Type: courierproto.ManifestType})
	man, _ := courierproto.DecodeManifest(body)
	if fraud.Sealed, err = courierproto.SealCode(man.Keys.Seal, fraud.Binding(), wrong); err != nil {
		t.Fatal(err)
	}
	forged := map[string][]byte{
		"theirs":  f.forgeReceipt("van-1", claim("theirs", 1)), // a delivery of another device
		"moved":   f.forgeReceipt("van-1", claim("moved", 1)),  // reassigned away
		"gone":    f.forgeReceipt("van-1", claim("gone", 1)),   // cancelled
		"mine-v7": f.forgeReceipt("van-1", claim("mine", 7)),   // a version never issued
		"fp":      f.forgeReceipt("van-1", fraud),              // a wrong code past the fingerprint
		"realm":   f.forgeReceipt("van-1", func() courierproto.Receipt { r := claim("mine", 1); r.Realm = "other"; return r }()),
	}
	want := map[string]string{"theirs": delivery.IncidentUnissued, "moved": delivery.IncidentReassigned, "gone": delivery.IncidentCancelled,
		"mine-v7": delivery.IncidentUnissued, "fp": delivery.IncidentFraud, "realm": delivery.IncidentUnissued}
	// A receipt whose log entry the server does not hold gets no answer (and no incident).
	if acks := f.upload("van-1", f.forgeReceipt("van-1", func() courierproto.Receipt { r := claim("mine", 1); r.LogSeq = st.LogHead + 100; return r }())); len(acks) != 0 {
		t.Errorf("receipt ahead of the log: %+v", acks)
	}
	for name, rc := range forged {
		acks := f.upload("van-1", rc)
		if len(acks) != 1 || acks[0].Status != courierproto.AckRefused || !strings.HasPrefix(acks[0].Reason, want[name]) {
			t.Errorf("%s: %+v, want refused %s", name, acks, want[name])
		}
	}
	for id, st := range map[string]string{"theirs": "out_for_delivery", "moved": "reassigned", "gone": "cancelled", "mine": "out_for_delivery", "fp": "out_for_delivery"} {
		if got := f.state(id); got != st {
			t.Errorf("%s is %s, want %s", id, got, st)
		}
	}
	// The real receipt, then the same receipt replayed: delivered once.
	if _, err := f.devs["van-1"].CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "mine", Code: code}); err != nil {
		t.Fatal(err)
	}
	rep := f.sync("van-1")
	if acksOf(rep)["mine"] != courierproto.AckDelivered {
		t.Fatalf("real receipt: %+v", rep.Receipts)
	}
	p, err := f.st.(store.CourierStore).GetDeliveryProof(ctx, f.realm, "mine")
	if err != nil {
		t.Fatal(err)
	}
	if acks := f.upload("van-1", p.Receipt); len(acks) != 1 || acks[0].Status != courierproto.AckDuplicate {
		t.Fatalf("replayed receipt: %+v", acks)
	}
	// Another receipt for the delivered one (another log entry): two confirmations.
	again := claim("mine", 1)
	if acks := f.upload("van-1", f.forgeReceipt("van-1", again)); len(acks) != 1 || !strings.HasPrefix(acks[0].Reason, delivery.IncidentTwice) {
		t.Fatalf("second confirmation: %+v", acks)
	}
	// A flood of forged receipts in one upload: the first ones audited one
	// by one, the rest summed up in one incident; every one refused.
	flood := make([][]byte, delivery.MaxIncidentsPerUpload+10)
	for i := range flood {
		flood[i] = f.forgeReceipt("van-1", claim("theirs", i+2))
	}
	before := strings.Count(f.audit(t, audit.DeliveryIncident), "\n")
	if acks := f.upload("van-1", flood...); len(acks) != len(flood) || acks[len(acks)-1].Status != courierproto.AckRefused {
		t.Fatalf("flood: %d answers", len(acks))
	}
	if n := strings.Count(f.audit(t, audit.DeliveryIncident), "\n") - before; n != delivery.MaxIncidentsPerUpload+1 ||
		!strings.Contains(f.audit(t, audit.DeliveryIncident), delivery.IncidentCapped) {
		t.Fatalf("flood: %d incident entries, want %d", n, delivery.MaxIncidentsPerUpload+1)
	}
	// The same delivery confirmed on two devices: van-2 delivers the
	// reassigned one; van-1's receipt of the old version is then an incident.
	f.sync("van-2")
	if _, err := f.devs["van-2"].CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "moved", Code: movedCode}); err != nil {
		t.Fatal(err)
	}
	if rep := f.sync("van-2"); acksOf(rep)["moved"] != courierproto.AckDelivered {
		t.Fatalf("van-2's receipt: %+v", rep.Receipts)
	}
	if acks := f.upload("van-1", forged["moved"]); len(acks) != 1 || !strings.HasPrefix(acks[0].Reason, delivery.IncidentTwice) {
		t.Fatalf("van-1's receipt after van-2 delivered: %+v", acks)
	}
	if n := strings.Count(f.audit(t, audit.DeliveryDeliver), "\n"); n != 2 {
		t.Fatalf("%d deliver entries, want 2", n)
	}
	if n := strings.Count(f.audit(t, audit.DeliveryIncident), "\n"); n != len(forged)+2+delivery.MaxIncidentsPerUpload+1 {
		t.Fatalf("%d incidents, want %d", n, len(forged)+2+delivery.MaxIncidentsPerUpload+1)
	}
	m := f.call("", "GET", "/metrics", nil)
	if !strings.Contains(string(m.raw), `outpost_sync_incidents_total{kind="fingerprint_fraud"} 1`) {
		t.Error("the fraud is not counted")
	}
}

// TestCourierManifestAttacks: the device refuses a manifest for another
// device, an older one, a tampered one, one signed by another key.
func TestCourierManifestAttacks(t *testing.T) {
	ctx := context.Background()
	f := newCourierFixture(t, engines(t)["sqlite"](t), "van-1", "van-2")
	f.create("p1", "van-1", "hash")
	dev := f.devs["van-1"]
	m1, err := f.srv.deliveries.Manifest(ctx, f.realm, "van-1")
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := f.srv.deliveries.Manifest(ctx, f.realm, "van-1")
	other, _ := f.srv.deliveries.Manifest(ctx, f.realm, "van-2")
	if _, err := dev.InstallManifest(ctx, m2); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.InstallManifest(ctx, m1); !errors.Is(err, offline.ErrStaleManifest) {
		t.Errorf("older manifest: %v", err)
	}
	if _, err := dev.InstallManifest(ctx, other); !errors.Is(err, offline.ErrWrongDevice) {
		t.Errorf("another device's manifest: %v", err)
	}
	tampered := bytes.Replace(m2, []byte(`"payload":"`), []byte(`"payload":"A`), 1)
	if _, err := dev.InstallManifest(ctx, tampered); !errors.Is(err, artifact.ErrInvalid) {
		t.Errorf("tampered manifest: %v", err)
	}
	// Re-signed by a key the device does not pin.
	mk, _ := keys.GenerateMaster()
	h, body, _ := artifact.Verify(m2, artifact.Keys{f.srv.signer.Public}, artifact.Expect{})
	h.Serial = 99
	var raw map[string]any
	_ = artifact.DecodeBody(body, &raw)
	forged, _ := artifact.Sign(mk.Signer(0), h, raw)
	if _, err := dev.InstallManifest(ctx, forged); !errors.Is(err, offline.ErrUnknownKey) {
		t.Errorf("manifest signed by another key: %v", err)
	}
	if r, _ := dev.Route(ctx); r.Serial != 2 {
		t.Errorf("installed serial %d after refusals, want 2", r.Serial)
	}
	// Past its max age, the manifest stops offline checks.
	f.clock.Add(delivery.DefaultManifestMaxAge + time.Minute)
	if _, err := dev.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "p1", Code: "000000000"}); !errors.Is(err, offline.ErrManifestTooOld) {
		t.Errorf("old manifest: %v", err)
	}
}

// TestCourierReceiptGuessing: a courier holding the device key signs
// fingerprint-mode receipts with guess after guess (each sealed with the
// right binding): each takes one attempt of the code version's limit, the
// one that uses it up fails the delivery, and then even the right code is
// refused. Without the count, the ~10^5 candidates the fingerprint leaves
// could be tried through sync until one delivered.
func TestCourierReceiptGuessing(t *testing.T) {
	ctx := context.Background()
	f := newCourierFixture(t, engines(t)["sqlite"](t), "van-1")
	code := f.create("fp", "van-1", "fingerprint")
	f.sync("van-1")
	m, err := f.srv.deliveries.Manifest(ctx, f.realm, "van-1")
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := artifact.Verify(m, artifact.Keys{f.srv.signer.Public}, artifact.Expect{Type: courierproto.ManifestType})
	man, _ := courierproto.DecodeManifest(body)
	receipt := func(guess string) []byte {
		r := courierproto.Receipt{Realm: f.realm, Delivery: "fp", Version: 1, Device: "van-1", Mode: "fingerprint", Time: f.clock.Now(),
			Manifest: 1, LogSeq: 1, LogHash: bytes.Repeat([]byte{7}, 32)}
		if r.Sealed, err = courierproto.SealCode(man.Keys.Seal, r.Binding(), guess); err != nil {
			t.Fatal(err)
		}
		return f.forgeReceipt("van-1", r)
	}
	var guesses [][]byte
	for i := range delivery.DefaultAttemptLimit + 2 {
		g := fmt.Sprintf("%08d", 11111111*(i%9+1))
		g += string(deliverycode.CheckDigit(g))
		if g == code {
			g = "000000000"
		}
		guesses = append(guesses, receipt(g))
	}
	acks := f.upload("van-1", guesses...)
	if len(acks) != len(guesses) {
		t.Fatalf("%d answers to %d receipts", len(acks), len(guesses))
	}
	for i, a := range acks {
		want := delivery.IncidentFraud
		if i >= delivery.DefaultAttemptLimit {
			want = delivery.IncidentReceiptState // failed by then
		}
		if a.Status != courierproto.AckRefused || !strings.HasPrefix(a.Reason, want) {
			t.Fatalf("guess %d: %+v, want refused %s", i, a, want)
		}
	}
	if st := f.state("fp"); st != "failed" {
		t.Fatalf("after %d wrong sealed codes the delivery is %s, want failed", len(guesses), st)
	}
	if acks := f.upload("van-1", receipt(code)); len(acks) != 1 || acks[0].Status != courierproto.AckRefused {
		t.Fatalf("the right code after the limit: %+v", acks)
	}
	if st := f.state("fp"); st != "failed" {
		t.Fatalf("the right code after the limit made it %s", st)
	}
}

// TestCourierReceiptWithoutProof: a courier holding the device key signs a
// receipt for a delivery really in its manifest, but without what the
// recipient gave: no sealed code (hash mode), a sealed wrong code, no
// token or another delivery's token (token mode). None delivers: the
// device's word alone is believed about nothing.
func TestCourierReceiptWithoutProof(t *testing.T) {
	ctx := context.Background()
	f := newCourierFixture(t, engines(t)["sqlite"](t), "van-1")
	code := f.create("h", "van-1", "hash")
	f.create("tk", "van-1", "token")
	other := f.mustCall(http.StatusCreated, f.iss, "POST", "/v1/deliveries", map[string]any{"id": "tk2", "device": "van-1",
		"not_after": f.clock.Now().Add(48 * time.Hour).Format(time.RFC3339), "mode": "token",
		"recipient": map[string]string{"email": "ana.recipient@example.org"}}).body["token"].(map[string]any)["text"].(string)
	f.sync("van-1")
	m, err := f.srv.deliveries.Manifest(ctx, f.realm, "van-1")
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := artifact.Verify(m, artifact.Keys{f.srv.signer.Public}, artifact.Expect{Type: courierproto.ManifestType})
	man, _ := courierproto.DecodeManifest(body)
	claim := func(id, mode string) courierproto.Receipt {
		return courierproto.Receipt{Realm: f.realm, Delivery: id, Version: 1, Device: "van-1", Mode: mode, Time: f.clock.Now(),
			Manifest: 1, LogSeq: 1, LogHash: bytes.Repeat([]byte{7}, 32)}
	}
	wrong := claim("h", "hash")
	g := "1234567"
	g += "0" + string(deliverycode.CheckDigit(g+"0"))
	if g == code {
		t.Skip("improbable")
	}
	if wrong.Sealed, err = courierproto.SealCode(man.Keys.Seal, wrong.Binding(), g); err != nil {
		t.Fatal(err)
	}
	stolen := claim("tk", "token")
	stolen.Token = other
	for name, r := range map[string]courierproto.Receipt{"hash, no code": claim("h", "hash"), "hash, wrong code": wrong,
		"token, none": claim("tk", "token"), "token of another delivery": stolen} {
		acks := f.upload("van-1", f.forgeReceipt("van-1", r))
		if len(acks) != 1 || acks[0].Status != courierproto.AckRefused {
			t.Errorf("%s: %+v, want refused", name, acks)
		}
	}
	for _, id := range []string{"h", "tk"} {
		if st := f.state(id); st == "delivered" {
			t.Fatalf("%s delivered on the device's word", id)
		}
	}
	// The real check at the door still delivers.
	if _, err := f.devs["van-1"].CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "h", Code: code}); err != nil {
		t.Fatal(err)
	}
	if rep := f.sync("van-1"); acksOf(rep)["h"] != courierproto.AckDelivered {
		t.Fatalf("the real receipt: %+v", rep.Receipts)
	}
}

// TestOneAttemptLimit: --delivery-attempts is the one limit: the device's
// (in the manifest) and the server's (online confirms and receipts).
func TestOneAttemptLimit(t *testing.T) {
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "o.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Store: st, Master: m, Policy: online.DefaultPolicy, DeliveryAttempts: 3, DeliveryCosts: courierproto.TestCosts,
		Logger: slog.New(slog.NewJSONHandler(&logBuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if s.deliveries.AttemptLimit != 3 || s.deliveries.Courier == nil || s.deliveries.Courier.Attempts != 3 {
		t.Fatalf("server limit %d, device limit %+v", s.deliveries.AttemptLimit, s.deliveries.Courier)
	}
}
