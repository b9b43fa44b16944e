package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/offline"
)

// issued reports whether the server recorded bundle b as issued to its device.
func (f *fixture) issued(b *bundlefmt.Bundle) bool {
	f.t.Helper()
	found := false
	ss := f.st.(store.SyncStore)
	if _, err := ss.GetDevice(ctx, b.Device); err != nil {
		f.t.Fatalf("device %s: %v", b.Device, err)
	}
	err := ss.SyncDevice(ctx, b.Realm, b.Device, f.clock.Now(), func(tx store.SyncTx) error {
		got, ok, err := tx.IssuedBundle(b.Realm, b.User, b.Token, b.Serial)
		found = ok && got.First == b.First && got.Last == b.Last() && got.Type == b.OTP.Type && got.PIN == b.PIN
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return found
}

// Every path that issues a bundle records it as issued to its device, before
// the bundle leaves the server: sync accepts the device's claims only within it.
func TestEveryIssuedBundleIsRecorded(t *testing.T) {
	f := syncFixture(t, t.TempDir()+"/o.db")
	issuer, verifier := f.client("issuer"), f.client("verifier")
	f.enrol("pat", map[string]any{"type": "hotp"})
	uri := f.enrol("ivy", map[string]any{"type": "totp"})
	remember("739104826153")
	f.mustCall(204, f.admin, "PUT", "/v1/users/ivy/pin", map[string]string{"pin": "739104826153"})
	for _, id := range []string{"van-1", "van-2", "van-3"} {
		f.fieldDevice(id)
	}
	job := func() []byte {
		r := f.call(issuer, "POST", "/v1/offline/bundles?async=true", map[string]any{"user": "pat", "device": "van-2", "count": 5})
		if r.status != 202 {
			t.Fatalf("async: %d %s", r.status, r.raw)
		}
		id := r.body["job"].(string)
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if r := f.call(issuer, "GET", "/v1/offline/jobs/"+id+"/bundle", nil); r.status == 200 {
				return r.raw
			}
		}
		t.Fatal("the bundle job did not finish")
		return nil
	}
	for _, c := range []struct {
		name, device string
		issue        func() []byte
	}{
		{"bundles API", "van-1", func() []byte {
			return f.call(issuer, "POST", "/v1/offline/bundles", map[string]any{"user": "pat", "device": "van-1", "count": 5}).raw
		}},
		{"bundle job", "van-2", job},
		{"PIN bundle of an online login", "van-3", func() []byte {
			f.clock.Add(30 * time.Second) // the enrolment spent the current code
			return f.call(verifier, "POST", "/v1/offline/login", map[string]any{"user": "ivy", "code": f.codeAt(uri, 0), "pin": "739104826153", "device": "van-3"}).raw
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := c.issue()
			if len(data) > 0 && data[0] == '{' && strings.Contains(string(data[:min(len(data), 20)]), `"error"`) {
				t.Fatalf("issuing: %s", data)
			}
			if b := decodeBundle(t, f, data, c.device); !f.issued(b) {
				t.Errorf("bundle serial %d for %s is not recorded as issued", b.Serial, c.device)
			}
		})
	}
}

// A forged upload over HTTP, signed with the device's own key, claiming a
// huge last used counter for a token never issued to the device: answered
// (the honest part applies), the claim ignored, counted and audited, and the
// victim's online state unchanged.
func TestForgedSyncOverHTTP(t *testing.T) {
	f := syncFixture(t, t.TempDir()+"/o.db")
	verifier := f.client("verifier")
	f.enrol("kim", map[string]any{"type": "hotp"})
	lou := f.enrol("lou", map[string]any{"type": "hotp"})
	dir := t.TempDir()
	dev := f.fieldDeviceIn(dir, "van-1")
	r := f.call(f.admin, "POST", "/v1/offline/bundles", map[string]any{"user": "kim", "device": "van-1", "count": 10})
	if _, err := dev.Import(ctx, r.raw); err != nil {
		t.Fatal(err)
	}
	toks, err := f.st.ListTokens(ctx, DefaultRealm, "lou")
	if err != nil {
		t.Fatal(err)
	}
	up, _, err := dev.PrepareUpload(ctx, offline.UploadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	forged := forgeUpload(t, f, dir, up, func(u *syncproto.Upload) {
		u.Tokens = append(u.Tokens, syncproto.TokenState{Realm: DefaultRealm, User: "lou", Token: toks[0].ID, LastUsed: 1 << 40})
	})
	r = f.call("", "POST", "/v1/sync", forged)
	if r.status != 200 {
		t.Fatalf("forged upload: %d %s", r.status, r.raw)
	}
	if got, _ := f.st.GetToken(ctx, DefaultRealm, "lou", toks[0].ID); got.LastUsed != toks[0].LastUsed {
		t.Fatalf("lou's counter moved to %d", got.LastUsed)
	}
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "lou", "code": hotpCode(t, lou, 1)}); r.status != 200 {
		t.Fatalf("lou cannot verify online: %d %s", r.status, r.raw)
	}
	m := f.call("", "GET", "/metrics", nil)
	if !strings.Contains(string(m.raw), `outpost_sync_incidents_total{kind="unissued_token"} 1`) {
		t.Error("the incident is not counted")
	}
	rep, err := dev.ApplyResponse(ctx, r.raw)
	if err != nil || len(rep.Ignored) != 1 || !strings.Contains(rep.Ignored[0], "unissued_token") {
		t.Errorf("the answer does not say the claim was ignored: %v %v", rep.Ignored, err)
	}
}

// fieldDeviceIn is fieldDevice with the store in dir (its key is needed to forge).
func (f *fixture) fieldDeviceIn(dir, id string) *offline.Store {
	f.t.Helper()
	s, err := offline.Init(context.Background(), dir, offline.Config{DeviceID: id, ServerKey: f.srv.signer.Public}, offline.Options{Now: f.clock.Now})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { s.Close() })
	if r := f.call(f.admin, "POST", "/v1/devices", map[string]string{"id": id, "public_key": string(keys.MarshalPublicPEM(s.DevicePublicKey()))}); r.status != 201 {
		f.t.Fatalf("register: %d %s", r.status, r.raw)
	}
	return s
}

// forgeUpload re-signs the device's upload, changed by mod, with the device's own key.
func forgeUpload(t *testing.T, f *fixture, dir string, up []byte, mod func(*syncproto.Upload)) []byte {
	t.Helper()
	id, err := devicelog.LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	h, body, err := artifact.Verify(up, artifact.Keys{id.Public}, artifact.Expect{Type: syncproto.UploadType})
	if err != nil {
		t.Fatal(err)
	}
	u, err := syncproto.DecodeUpload(body)
	if err != nil {
		t.Fatal(err)
	}
	mod(&u)
	data, err := artifact.Sign(&keys.Signer{Private: id.Private, Public: id.Public, KeyID: id.KeyID}, h, u)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
