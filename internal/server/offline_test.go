package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/outpost-auth/outpost/offline"
)

// cheapKDF keeps tests fast; the floor is lowered to match, so the floor
// logic still runs.
var cheapKDF = cost.KDF{Time: 1, MemoryKiB: 64, Threads: 1}

func bundleFixture(t *testing.T) *fixture {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	f.srv.bundles.KDF = cheapKDF
	floor := cost.Floor{PerEntry: time.Millisecond, MinMargin: 1e4}
	f.srv.bundles.Floor = &floor
	return f
}

func decodeBundle(t *testing.T, f *fixture, data []byte, device string) *bundlefmt.Bundle {
	t.Helper()
	b, err := bundlefmt.Decode(data, []ed25519.PublicKey{f.srv.signer.Public}, bundlefmt.Expect{Device: device, Now: f.clock.Now()})
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return b
}

func TestIssueHOTPBundleStartsAfterOnlineCounter(t *testing.T) {
	f := bundleFixture(t)
	issuer := f.client("issuer")
	verifier := f.client("verifier")
	uri := f.enrol("gina", map[string]any{"type": "hotp"}) // counter 0 consumed by confirm
	f.mustCall(200, verifier, "POST", "/v1/verify", map[string]string{"user": "gina", "code": f.codeAt(uri, 3)})
	r := f.call(issuer, "POST", "/v1/offline/bundles", map[string]any{"user": "gina", "device": "dev-7", "count": 5,
		"secrets": map[string]string{"door": "4711"}})
	if r.status != 200 {
		t.Fatalf("issue: %d %s", r.status, r.raw)
	}
	if r.header.Get("X-Outpost-Entries") != "5" {
		t.Errorf("entries header %q", r.header.Get("X-Outpost-Entries"))
	}
	b := decodeBundle(t, f, r.raw, "dev-7")
	if b.First != 4 || b.Count() != 5 {
		t.Fatalf("window %d+%d, want counters 4..8 after the online counter 3", b.First, b.Count())
	}
	rel, ok := b.OpenEntry(6, f.codeAt(uri, 6), "")
	if !ok {
		t.Fatal("the right code did not release the key")
	}
	if s, err := b.OpenSecret(rel, "door"); err != nil || string(s) != "4711" {
		t.Fatalf("secret: %q %v", s, err)
	}
	if _, ok := b.OpenEntry(6, f.codeAt(uri, 7), ""); ok {
		t.Fatal("a wrong code released the key")
	}
	// Issuing did not burn the token online (privacyIDEA's flaw): counter 4 still verifies.
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "gina", "code": f.codeAt(uri, 4)}); r.status != 200 {
		t.Fatalf("online after issuing: %d %s", r.status, r.raw)
	}
	if _, err := bundlefmt.Decode(r.raw, []ed25519.PublicKey{f.srv.signer.Public}, bundlefmt.Expect{Device: "dev-8"}); err == nil {
		t.Fatal("a bundle for dev-7 decoded on dev-8")
	}
}

func TestBundleFloorAndOverride(t *testing.T) {
	f := bundleFixture(t)
	issuer := f.client("issuer")
	f.enrol("hank", map[string]any{"type": "totp"})
	now := f.clock.Now()
	body := map[string]any{"user": "hank", "device": "dev-1", "from": now, "until": now.Add(4 * time.Hour)}
	r := f.call(issuer, "POST", "/v1/offline/bundles", body)
	if r.status != 422 || r.errCode() != "below_floor" {
		t.Fatalf("below floor: %d %s", r.status, r.raw)
	}
	body["override_floor"] = true
	if r := f.call(issuer, "POST", "/v1/offline/bundles", body); r.status != 403 {
		t.Fatalf("issuer override: %d %s", r.status, r.raw)
	}
	r = f.call(f.admin, "POST", "/v1/offline/bundles", body)
	if r.status != 200 {
		t.Fatalf("admin override: %d %s", r.status, r.raw)
	}
	if len(f.auditOf(audit.FloorOverride)) == 0 {
		t.Fatal("the floor override is not in the audit log")
	}
}

func TestPINBundleAndOfflineLogin(t *testing.T) {
	f := bundleFixture(t)
	issuer := f.client("issuer")
	verifier := f.client("verifier")
	uri := f.enrol("ivy", map[string]any{"type": "totp"})
	remember("739104826153")
	f.mustCall(204, f.admin, "PUT", "/v1/users/ivy/pin", map[string]string{"pin": "739104826153"})
	now := f.clock.Now()
	body := map[string]any{"user": "ivy", "device": "dev-2", "from": now, "until": now.Add(10 * time.Minute)}
	if r := f.call(issuer, "POST", "/v1/offline/bundles", body); r.status != 400 || r.errCode() != "pin_required" {
		t.Fatalf("no pin: %d %s", r.status, r.raw)
	}
	body["pin"] = "0000"
	if r := f.call(issuer, "POST", "/v1/offline/bundles", body); r.status != 400 || r.errCode() != "pin_mismatch" {
		t.Fatalf("wrong pin: %d %s", r.status, r.raw)
	}
	// The device's own path: online PIN + OTP login returns the PIN bundle.
	f.clock.Add(30 * time.Second)
	code := f.codeAt(uri, 0)
	r := f.call(verifier, "POST", "/v1/offline/login", map[string]any{"user": "ivy", "code": code, "pin": "739104826153", "device": "dev-2"})
	if r.status != 200 {
		t.Fatalf("login: %d %s", r.status, r.raw)
	}
	b := decodeBundle(t, f, r.raw, "dev-2")
	step := f.key(uri).Step(f.clock.Now()) + 10
	c := f.codeAt(uri, 10)
	if _, ok := b.OpenEntry(step, c, "739104826153"); !ok {
		t.Fatal("code + PIN did not open the login bundle")
	}
	if _, ok := b.OpenEntry(step, c, "739104826150"); ok {
		t.Fatal("a wrong PIN opened the entry")
	}
	// The login code is spent online.
	if r := f.call(verifier, "POST", "/v1/offline/login", map[string]any{"user": "ivy", "code": code, "pin": "739104826153", "device": "dev-2"}); r.status != 401 {
		t.Fatalf("login replay: %d %s", r.status, r.raw)
	}
}

func TestBundleJob(t *testing.T) {
	f := bundleFixture(t)
	issuer := f.client("issuer")
	f.enrol("jack", map[string]any{"type": "hotp", "digits": 8})
	r := f.call(issuer, "POST", "/v1/offline/bundles?async=true", map[string]any{"user": "jack", "device": "dev-3", "count": 20})
	if r.status != 202 {
		t.Fatalf("async: %d %s", r.status, r.raw)
	}
	id := r.body["job"].(string)
	deadline := time.Now().Add(60 * time.Second)
	for {
		r = f.call(issuer, "GET", "/v1/offline/jobs/"+id, nil)
		if r.body["state"] == "done" {
			break
		}
		if r.body["state"] == "failed" || time.Now().After(deadline) {
			t.Fatalf("job: %s", r.raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r = f.call(issuer, "GET", "/v1/offline/jobs/"+id+"/bundle", nil)
	if r.status != 200 {
		t.Fatalf("job bundle: %d", r.status)
	}
	if b := decodeBundle(t, f, r.raw, "dev-3"); b.Count() != 20 {
		t.Fatalf("%d entries", b.Count())
	}
	if r := f.call(issuer, "GET", "/v1/offline/jobs/job_nope", nil); r.status != 404 {
		t.Fatal(r.status)
	}
}

// fieldStore is a field store for device pinned to f's server, on f's clock
// (not registered: bundles need no registration).
func fieldStore(t *testing.T, f *fixture, device string) *offline.Store {
	t.Helper()
	s, err := offline.Init(context.Background(), filepath.Join(t.TempDir(), device), offline.Config{DeviceID: device, ServerKey: f.srv.signer.Public,
		Policy: offline.Policy{MaxFailures: 20, ClockTolerance: 5 * time.Minute, TOTPBack: 1, TOTPForward: 1, HOTPLookahead: 4}},
		offline.Options{Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Issue 9, part 3: a TOTP bundle issued after an online use of step S holds
// no step <= S, and the field store, told S at import, refuses S's code.
func TestTOTPBundleStartsAfterOnlineStep(t *testing.T) {
	f := bundleFixture(t)
	issuer, verifier := f.client("issuer"), f.client("verifier")
	uri := f.enrol("olga", map[string]any{"type": "totp"})
	f.clock.Add(30 * time.Second)
	s := f.key(uri).Step(f.clock.Now())
	code := f.codeAt(uri, 0)
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "olga", "code": code}); r.status != 200 {
		t.Fatalf("online: %d %s", r.status, r.raw)
	}
	now := f.clock.Now()
	r := f.call(issuer, "POST", "/v1/offline/bundles", map[string]any{"user": "olga", "device": "dev-9", "from": now.Add(-2 * time.Minute),
		"until": now.Add(10 * time.Minute)})
	if r.status != 200 {
		t.Fatalf("bundle: %d %s", r.status, r.raw)
	}
	b := decodeBundle(t, f, r.raw, "dev-9")
	if b.First != s+1 || b.Used != int64(s) {
		t.Fatalf("bundle entries from step %d, used %d: want from %d, used %d", b.First, b.Used, s+1, s)
	}
	dev := fieldStore(t, f, "dev-9")
	if _, err := dev.Import(ctx, r.raw); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Verify(ctx, offline.Attempt{User: "olga", Code: code}); !errors.Is(err, offline.ErrRefused) {
		t.Fatalf("the code used online, offline: %v", err)
	}
	f.clock.Add(30 * time.Second)
	if _, err := dev.Verify(ctx, offline.Attempt{User: "olga", Code: f.codeAt(uri, 0)}); err != nil {
		t.Fatalf("the next step's code: %v", err)
	}
}

// The login code of /v1/offline/login is used online by the login itself:
// the bundle it returns starts after it, and the device refuses it.
func TestLoginBundleExcludesLoginCode(t *testing.T) {
	f := bundleFixture(t)
	verifier := f.client("verifier")
	uri := f.enrol("pia", map[string]any{"type": "totp"})
	remember("480213579")
	f.mustCall(204, f.admin, "PUT", "/v1/users/pia/pin", map[string]string{"pin": "480213579"})
	f.clock.Add(30 * time.Second)
	s, code := f.key(uri).Step(f.clock.Now()), f.codeAt(uri, 0)
	r := f.call(verifier, "POST", "/v1/offline/login", map[string]any{"user": "pia", "code": code, "pin": "480213579", "device": "dev-4"})
	if r.status != 200 {
		t.Fatalf("login: %d %s", r.status, r.raw)
	}
	if b := decodeBundle(t, f, r.raw, "dev-4"); b.First != s+1 || b.Used != int64(s) {
		t.Fatalf("login bundle from step %d, used %d: want from %d, used %d", b.First, b.Used, s+1, s)
	}
	dev := fieldStore(t, f, "dev-4")
	if _, err := dev.Import(ctx, r.raw); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Verify(ctx, offline.Attempt{User: "pia", Code: code, PIN: "480213579"}); !errors.Is(err, offline.ErrRefused) {
		t.Fatalf("the login code again, offline: %v", err)
	}
}

// TestBundleQueueFullIsBusy: with the bundle pool's queue full, a bundle
// request and a job are answered 503 busy with Retry-After, and a request
// once the queue has room is served.
func TestBundleQueueFullIsBusy(t *testing.T) {
	f := bundleFixture(t)
	pool := workpool.New(workpool.Config{Workers: 1, Queue: 1})
	defer pool.Close()
	f.srv.bundles.Pool = pool
	issuer := f.client("issuer")
	f.enrol("ivy", map[string]any{"type": "hotp"})
	body := map[string]any{"user": "ivy", "device": "dev-1", "count": 5}
	hold, err := pool.Admit()
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/offline/bundles", "/v1/offline/bundles?async=true"} {
		r := f.call(issuer, "POST", path, body)
		if r.status != 503 || r.errCode() != "busy" || r.header.Get("Retry-After") == "" {
			t.Fatalf("%s with a full queue: %d %s Retry-After=%q", path, r.status, r.raw, r.header.Get("Retry-After"))
		}
	}
	hold()
	if r := f.call(issuer, "POST", "/v1/offline/bundles", body); r.status != 200 {
		t.Fatalf("after the queue emptied: %d %s", r.status, r.raw)
	}
}
