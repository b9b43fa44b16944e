package server

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

var ctx = context.Background()

// syncFixture is a server (cheap bundles, a fixed clock years ahead) on dsn.
func syncFixture(t *testing.T, dsn string) *fixture {
	f := newFixture(t, dsn)
	f.clock.mu.Lock()
	f.clock.t = time.Date(2031, 11, 23, 12, 0, 10, 0, time.UTC) // years ahead, mid-step
	f.clock.mu.Unlock()
	f.srv.bundles.KDF = cheapKDF
	floor := cost.Floor{PerEntry: time.Millisecond, MinMargin: 1}
	f.srv.bundles.Floor = &floor
	return f
}

// fieldDevice creates a field store pinned to f's server, registered through the API.
func (f *fixture) fieldDevice(id string) *offline.Store {
	f.t.Helper()
	s, _ := f.fieldDeviceAt(id)
	return s
}

// fieldDeviceAt is fieldDevice, also returning the store's directory.
func (f *fixture) fieldDeviceAt(id string) (*offline.Store, string) {
	f.t.Helper()
	dir := filepath.Join(f.t.TempDir(), id)
	s, err := offline.Init(context.Background(), dir,
		offline.Config{DeviceID: id, ServerKey: f.srv.signer.Public, Policy: offline.Policy{MaxFailures: 20, ClockTolerance: 5 * time.Minute,
			TOTPBack: 1, TOTPForward: 1, HOTPLookahead: 4}}, offline.Options{Now: f.clock.Now})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { s.Close() })
	pub, err := os.ReadFile(filepath.Join(dir, offline.PublicKeyFile))
	if err != nil {
		f.t.Fatal(err)
	}
	if r := f.call(f.admin, "POST", "/v1/devices", map[string]string{"id": id, "public_key": string(pub)}); r.status != 201 {
		f.t.Fatalf("register: %d %s", r.status, r.raw)
	}
	return s, dir
}

func (f *fixture) syncClient() *offline.SyncClient {
	f.t.Helper()
	c, err := offline.NewSyncClient(f.hs.URL, "")
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func hotpCode(t *testing.T, uri string, counter uint64) string {
	t.Helper()
	k, err := otp.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.CodeAt(k.Secret, counter)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Both directions over HTTP, on both engines: a code used offline is refused
// online after one sync, and a code used online is refused offline.
func TestSyncOverHTTP(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name, func(t *testing.T) {
			f := syncFixture(t, dsn(t))
			verifier := f.client("verifier")
			uri := f.enrol("kim", map[string]any{"type": "hotp"})
			dev := f.fieldDevice("van-1")
			r := f.call(f.admin, "POST", "/v1/offline/bundles", map[string]any{"user": "kim", "device": "van-1", "count": 10})
			if r.status != 200 {
				t.Fatalf("bundle: %d %s", r.status, r.raw)
			}
			if _, err := dev.Import(ctx, r.raw); err != nil {
				t.Fatal(err)
			}
			if _, err := dev.Verify(ctx, offline.Attempt{User: "kim", Code: hotpCode(t, uri, 2)}); err != nil {
				t.Fatal(err)
			}
			c := f.syncClient()
			rep, err := dev.Sync(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Uploads != 1 || rep.Acked == 0 {
				t.Fatalf("sync report %+v", rep)
			}
			if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "kim", "code": hotpCode(t, uri, 2)}); r.status != 401 {
				t.Fatalf("offline-used code online: %d %s", r.status, r.raw)
			}
			if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "kim", "code": hotpCode(t, uri, 4)}); r.status != 200 {
				t.Fatalf("online: %d %s", r.status, r.raw)
			}
			if _, err := dev.Sync(ctx, c); err != nil {
				t.Fatal(err)
			}
			if _, err := dev.Verify(ctx, offline.Attempt{User: "kim", Code: hotpCode(t, uri, 4)}); !errors.Is(err, offline.ErrRefused) {
				t.Fatalf("online-used code offline: %v", err)
			}
			if _, err := dev.Verify(ctx, offline.Attempt{User: "kim", Code: hotpCode(t, uri, 5)}); err != nil {
				t.Fatal(err)
			}
			// The device list and detail.
			r = f.call(f.admin, "GET", "/v1/devices/van-1", nil)
			toks, _ := r.body["tokens"].([]any)
			if r.status != 200 || len(toks) != 1 {
				t.Fatalf("device: %d %s", r.status, r.raw)
			}
			r = f.call(f.admin, "GET", "/v1/devices?limit=1", nil)
			if ds, _ := r.body["devices"].([]any); r.status != 200 || len(ds) != 1 {
				t.Fatalf("list: %d %s", r.status, r.raw)
			}
			// Revoked: the device's next sync is refused with a clear code, and recorded.
			r = f.call(f.admin, "POST", "/v1/devices/van-1/revoke", map[string]any{"burn_hotp": true})
			if bs, _ := r.body["bundles"].([]any); r.status != 200 || len(bs) < 1 {
				t.Fatalf("revoke: %d %s", r.status, r.raw)
			}
			_, err = dev.Sync(ctx, c)
			var se *offline.ServerError
			if !errors.As(err, &se) || se.Status != 403 || se.Code != "device_revoked" {
				t.Fatalf("revoked sync: %v", err)
			}
			m := f.call("", "GET", "/metrics", nil)
			if !strings.Contains(string(m.raw), `outpost_sync_incidents_total{kind="revoked_device"} 1`) {
				t.Errorf("metrics lack the incident")
			}
		})
	}
}

// The air-gapped path: a file made by the device, imported by an administrator, the answer carried back.
func TestAirGappedSync(t *testing.T) {
	f := syncFixture(t, filepath.Join(t.TempDir(), "o.db"))
	uri := f.enrol("lou", map[string]any{"type": "hotp"})
	dev := f.fieldDevice("hut-3")
	r := f.call(f.admin, "POST", "/v1/offline/bundles", map[string]any{"user": "lou", "device": "hut-3", "count": 10})
	if _, err := dev.Import(ctx, r.raw); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Verify(ctx, offline.Attempt{User: "lou", Code: hotpCode(t, uri, 3)}); err != nil {
		t.Fatal(err)
	}
	up, info, err := dev.PrepareUpload(ctx, offline.UploadOptions{Validity: 14 * 24 * time.Hour})
	if err != nil || info.Entries == 0 {
		t.Fatalf("export: %+v %v", info, err)
	}
	issuer := f.client("issuer")
	if r := f.call(issuer, "POST", "/v1/sync/import", up); r.status != 403 {
		t.Fatalf("import by an issuer: %d", r.status)
	}
	r = f.call(f.admin, "POST", "/v1/sync/import", up)
	if r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.raw)
	}
	if _, err := dev.ApplyResponse(ctx, r.raw); err != nil {
		t.Fatal(err)
	}
	tok, err := f.st.ListTokens(ctx, DefaultRealm, "lou")
	if err != nil || tok[0].LastUsed != 3 {
		t.Fatalf("server state %+v %v", tok, err)
	}
	// The file again: same bytes, nothing changes; an altered file is refused.
	if r := f.call(f.admin, "POST", "/v1/sync/import", up); r.status != 200 {
		t.Fatalf("import again: %d %s", r.status, r.raw)
	}
	bad := []byte(strings.Replace(string(up), `"sig":"`, `"sig":"AAAA`, 1))
	if r := f.call(f.admin, "POST", "/v1/sync/import", bad); r.status != 400 && r.status != 401 {
		t.Fatalf("altered file: %d %s", r.status, r.raw)
	}
	if r := f.call(f.admin, "POST", "/v1/sync/import", up[:len(up)/2]); r.status != 400 || r.errCode() != "invalid_upload" {
		t.Fatalf("truncated file: %d %s", r.status, r.raw)
	}
}

func TestEnrolmentCodeOverHTTP(t *testing.T) {
	f := syncFixture(t, filepath.Join(t.TempDir(), "o.db"))
	dir := filepath.Join(t.TempDir(), "field")
	dev, err := offline.Init(ctx, dir, offline.Config{DeviceID: "phone-9", ServerKey: f.srv.signer.Public}, offline.Options{Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	c := f.syncClient()
	_, err = dev.Sync(ctx, c)
	var se *offline.ServerError
	if !errors.As(err, &se) || se.Code != "unknown_device" {
		t.Fatalf("unregistered sync: %v", err)
	}
	r := f.call(f.admin, "POST", "/v1/devices/phone-9/enrolment", map[string]any{"ttl_seconds": 600})
	if r.status != 201 {
		t.Fatalf("enrolment code: %d %s", r.status, r.raw)
	}
	code := r.body["code"].(string)
	remember(code)
	if err := dev.Enrol(ctx, c, "AAAA-"+code[5:]); !errors.As(err, &se) || se.Code != "invalid_enrolment" {
		t.Fatalf("wrong code: %v", err)
	}
	if err := dev.Enrol(ctx, c, strings.ToLower(code)); err != nil {
		t.Fatal(err)
	}
	if err := dev.Enrol(ctx, c, code); !errors.As(err, &se) || se.Code != "invalid_enrolment" {
		t.Fatalf("code used twice: %v", err)
	}
	if _, err := dev.Sync(ctx, c); err != nil {
		t.Fatal(err)
	}
	d, err := f.st.(store.SyncStore).GetDevice(ctx, "phone-9")
	if err != nil || d.Status != store.DeviceActive || d.AckedSeq == 0 {
		t.Fatalf("device %+v %v", d, err)
	}
	if r := f.call(f.admin, "POST", "/v1/devices/phone-9/enrolment", map[string]any{}); r.status != 409 {
		t.Fatalf("code for an active device: %d %s", r.status, r.raw)
	}
}

// Refill through the server's own bundle path, bound to the device.
func TestRefillOverHTTP(t *testing.T) {
	f := syncFixture(t, filepath.Join(t.TempDir(), "o.db"))
	uri := f.enrol("max", map[string]any{"type": "hotp"})
	dev := f.fieldDevice("kiosk-1")
	r := f.call(f.admin, "POST", "/v1/offline/bundles", map[string]any{"user": "max", "device": "kiosk-1", "count": 4})
	if _, err := dev.Import(ctx, r.raw); err != nil {
		t.Fatal(err)
	}
	for c := uint64(1); c <= 4; c++ {
		if _, err := dev.Verify(ctx, offline.Attempt{User: "max", Code: hotpCode(t, uri, c)}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := dev.Sync(ctx, f.syncClient())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Imported) != 1 || rep.Imported[0].First != 5 || rep.Imported[0].Entries != 4 {
		t.Fatalf("refill %+v", rep)
	}
	if _, err := dev.Verify(ctx, offline.Attempt{User: "max", Code: hotpCode(t, uri, 6)}); err != nil {
		t.Fatalf("refilled entry: %v", err)
	}
	found := false
	for _, e := range f.auditOf(audit.BundleIssue) {
		found = found || e.Actor == "device:kiosk-1"
	}
	if !found {
		t.Error("the refill is not in the audit log as issued to the device")
	}
}

func TestSyncBadRequests(t *testing.T) {
	f := syncFixture(t, filepath.Join(t.TempDir(), "o.db"))
	for _, c := range []struct {
		body   any
		status int
		code   string
	}{
		{"", 400, "invalid_upload"},
		{"{}", 400, "invalid_upload"},
		{"not json", 400, "invalid_upload"},
		{strings.Repeat(" ", 9<<20), 413, "body_too_large"},
	} {
		if r := f.call("", "POST", "/v1/sync", c.body); r.status != c.status || r.errCode() != c.code {
			t.Errorf("%.20q: %d %s", c.body, r.status, r.raw)
		}
	}
	if r := f.call("", "POST", "/v1/devices/enrol", map[string]any{"device": "x", "public_key": "AAAA", "code": "c", "sig": "AAAA"}); r.status != 400 {
		t.Errorf("malformed enrolment: %d %s", r.status, r.raw)
	}
	if r := f.call(f.admin, "POST", "/v1/devices", map[string]string{"id": "bad id", "public_key": "x"}); r.status != 400 {
		t.Errorf("bad device id: %d", r.status)
	}
	if r := f.call(f.admin, "POST", "/v1/devices", map[string]string{"id": "ok", "public_key": "not pem"}); r.status != 400 || r.errCode() != "invalid_public_key" {
		t.Errorf("bad key: %d %s", r.status, r.raw)
	}
	if r := f.call(f.admin, "GET", "/v1/devices/nope", nil); r.status != 404 {
		t.Errorf("missing device: %d", r.status)
	}
	if r := f.call(f.client("issuer"), "GET", "/v1/devices", nil); r.status != 403 {
		t.Errorf("issuer lists devices: %d", r.status)
	}
}

// A TOTP bundle near the end of its period is refilled for the same length of time from now.
func TestTOTPRefillOverHTTP(t *testing.T) {
	f := syncFixture(t, filepath.Join(t.TempDir(), "o.db"))
	uri := f.enrol("nia", map[string]any{"type": "totp"})
	dev := f.fieldDevice("kiosk-2")
	now := f.clock.Now()
	r := f.call(f.admin, "POST", "/v1/offline/bundles", map[string]any{"user": "nia", "device": "kiosk-2", "from": now, "until": now.Add(4 * time.Minute)})
	if r.status != 200 {
		t.Fatalf("bundle: %d %s", r.status, r.raw)
	}
	old, err := dev.Import(ctx, r.raw)
	if err != nil {
		t.Fatal(err)
	}
	// The bundle starts after the step the enrolment's confirmation used
	// online: 8 steps. Four minutes on, its last step is the current one.
	f.clock.Add(4 * time.Minute)
	if _, err := dev.Verify(ctx, offline.Attempt{User: "nia", Code: f.codeAt(uri, 0)}); err != nil {
		t.Fatal(err)
	}
	rep, err := dev.Sync(ctx, f.syncClient())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Imported) != 1 || rep.Imported[0].Entries < old.Entries || rep.Imported[0].Last <= old.Last {
		t.Fatalf("TOTP refill %+v (old %+v)", rep, old)
	}
	f.clock.Add(2 * time.Minute) // past the old bundle's period
	if _, err := dev.Verify(ctx, offline.Attempt{User: "nia", Code: f.codeAt(uri, 0)}); err != nil {
		t.Fatalf("code from the refilled period: %v", err)
	}
}

// A server restored from a backup has lost the end of a device's log: the
// device's next upload starts after what the server holds (a gap, recorded
// as an incident), and the client sends the entries again from there.
func TestSyncGapAfterServerRestore(t *testing.T) {
	f := syncFixture(t, filepath.Join(t.TempDir(), "o.db"))
	uri := f.enrol("oli", map[string]any{"type": "hotp"})
	dev := f.fieldDevice("van-9")
	r := f.call(f.admin, "POST", "/v1/offline/bundles", map[string]any{"user": "oli", "device": "van-9", "count": 10})
	if _, err := dev.Import(ctx, r.raw); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Verify(ctx, offline.Attempt{User: "oli", Code: hotpCode(t, uri, 1)}); err != nil {
		t.Fatal(err)
	}
	c := f.syncClient()
	if _, err := dev.Sync(ctx, c); err != nil {
		t.Fatal(err)
	}
	// The restore: the server's record of the device goes back to nothing acknowledged.
	ss := f.st.(store.SyncStore)
	if err := ss.SyncDevice(ctx, DefaultRealm, "van-9", time.Now(), func(tx store.SyncTx) error {
		d := tx.Device()
		return tx.SaveDevice(0, nil, d.UploadSerial, d.UploadHash)
	}); err != nil {
		t.Fatal(err)
	}
	rep, err := dev.Sync(ctx, c)
	if err != nil {
		t.Fatalf("sync after the restore: %v", err)
	}
	d, err := ss.GetDevice(ctx, "van-9")
	if err != nil {
		t.Fatal(err)
	}
	st, err := dev.SyncState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.AckedSeq != st.LogHead || rep.Acked != st.LogHead {
		t.Fatalf("server acked %d, device head %d, report %+v", d.AckedSeq, st.LogHead, rep)
	}
	gap := false
	for _, e := range f.auditOf("sync.incident") {
		gap = gap || strings.Contains(string(e.Data), `"incident":"gap"`)
	}
	if !gap {
		t.Error("the gap is not recorded as an incident")
	}
}

// A refill that takes longer than the server may hold the connection (its
// write timeout) is answered "pending" in time, computed in the background,
// and collected by the device's next sync; the connection never dies.
func TestRefillOutlastingWriteTimeout(t *testing.T) {
	f := syncFixture(t, filepath.Join(t.TempDir(), "o.db"))
	f.srv.field.RefillWait = 100 * time.Millisecond
	hs := httptest.NewUnstartedServer(f.srv.Handler())
	hs.Config.WriteTimeout = time.Second
	hs.Start()
	defer hs.Close()
	c, err := offline.NewSyncClient(hs.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	uri := f.enrol("max", map[string]any{"type": "hotp"})
	dev := f.fieldDevice("kiosk-1")
	r := f.call(f.admin, "POST", "/v1/offline/bundles", map[string]any{"user": "max", "device": "kiosk-1", "count": 4})
	if _, err := dev.Import(ctx, r.raw); err != nil {
		t.Fatal(err)
	}
	for n := uint64(1); n <= 4; n++ {
		if _, err := dev.Verify(ctx, offline.Attempt{User: "max", Code: hotpCode(t, uri, n)}); err != nil {
			t.Fatal(err)
		}
	}
	// The bundle worker is busy for three write timeouts: the refill waits for it.
	f.srv.bundles.Slots <- struct{}{}
	go func() { time.Sleep(3 * time.Second); <-f.srv.bundles.Slots }()
	start := time.Now()
	rep, err := dev.Sync(ctx, c)
	if took := time.Since(start); err != nil || took > time.Second {
		t.Fatalf("sync while the refill computes: %v after %s", err, took)
	}
	if len(rep.Imported) != 0 || len(rep.Pending) != 1 {
		t.Fatalf("first sync: %+v", rep)
	}
	c.RefillWait = time.Minute
	rep, err = dev.Sync(ctx, c)
	if err != nil || len(rep.Imported) != 1 || rep.Imported[0].First != 5 || len(rep.Pending) != 0 {
		t.Fatalf("collecting the refill: %+v %v", rep, err)
	}
	if _, err := dev.Verify(ctx, offline.Attempt{User: "max", Code: hotpCode(t, uri, 6)}); err != nil {
		t.Fatalf("refilled entry: %v", err)
	}
}
