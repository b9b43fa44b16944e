package offline_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/codecheck"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/deliverytoken"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/offline"
)

var cheapCosts = courierproto.Costs{Hash: codecheck.Params{Time: 1, MemoryKiB: 64, Threads: 1},
	Fingerprint: codecheck.Params{Time: 1, MemoryKiB: 64, Threads: 1}, Floor: &cost.Floor{PerEntry: time.Nanosecond}}

// route is what a test server gives dev-1: deliveries with their codes.
type route struct {
	t        *testing.T
	codes    map[string]string
	tokenKey ed25519.PrivateKey
	m        courierproto.Manifest
}

func newRoute(t *testing.T, modes map[string]string) *route {
	_, tk, _ := ed25519.GenerateKey(rand.Reader)
	_, seal, err := codecheck.SealKeyPair(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	r := &route{t: t, codes: map[string]string{}, tokenKey: tk,
		m: courierproto.Manifest{Realm: "acme", Device: "dev-1", IssuedAt: t0, MaxAge: 86400, Keys: courierproto.Keys{Token: tk.Public().(ed25519.PublicKey), Seal: seal}}}
	for id, mode := range modes {
		code, err := deliverycode.New(8)
		if err != nil {
			t.Fatal(err)
		}
		r.codes[id] = code
		d := courierproto.ManifestDelivery{ID: id, Version: 1, NotAfter: t0.Add(48 * time.Hour), Mode: mode, Attempts: 5}
		if d.Check, err = courierproto.MakeCheck(mode, code, d.Binding("acme", "dev-1"), cheapCosts); err != nil {
			t.Fatal(err)
		}
		r.m.Deliveries = append(r.m.Deliveries, d)
	}
	return r
}

func (r *route) signed(serial uint64) []byte {
	r.t.Helper()
	data, err := artifact.Sign(testSigner(r.t), artifact.Header{Type: courierproto.ManifestType, Version: courierproto.ManifestVersion,
		Subject: r.m.Device, Serial: serial, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(30 * 24 * time.Hour)}, r.m)
	if err != nil {
		r.t.Fatal(err)
	}
	return data
}

func (r *route) token(id string, version int, device string) string {
	r.t.Helper()
	tok, err := deliverytoken.Sign(r.tokenKey, deliverytoken.Claims{Realm: "acme", Delivery: id, Version: version, Device: device, NotAfter: t0.Add(48 * time.Hour)})
	if err != nil {
		r.t.Fatal(err)
	}
	return tok
}

// TestCheckDelivery: each mode at the door, typos free, attempts counted
// across a restart, expiry, every decision in the signed log, a receipt
// signed with the device key.
func TestCheckDelivery(t *testing.T) {
	ctx := context.Background()
	s, clk, dir := newStore(t, quickPolicy)
	r := newRoute(t, map[string]string{"h": "hash", "f": "fingerprint", "t": "token", "x": "hash"})
	if _, err := s.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "h", Code: r.codes["h"]}); !errors.Is(err, offline.ErrNoManifest) {
		t.Fatalf("before any manifest: %v", err)
	}
	if info, err := s.InstallManifest(ctx, r.signed(1)); err != nil || info.Deliveries != 4 {
		t.Fatalf("install: %+v %v", info, err)
	}
	check := func(a offline.DeliveryAttempt) (*offline.DeliveryResult, error) { return s.CheckDelivery(ctx, a) }

	// Hash: a typo and a non-code cost nothing; the right code is accepted once.
	c := r.codes["h"]
	typo := c[:len(c)-1] + string('0'+(c[len(c)-1]-'0'+1)%10)
	for _, bad := range []string{typo, "12ab"} {
		if _, err := check(offline.DeliveryAttempt{Delivery: "h", Code: bad}); !errors.Is(err, offline.ErrTypo) && !errors.Is(err, offline.ErrNotACode) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	if _, err := check(offline.DeliveryAttempt{Delivery: "h", Code: c, Location: "north"}); err == nil {
		t.Fatal("a bad location was accepted")
	}
	res, err := check(offline.DeliveryAttempt{Delivery: "h", Code: c, Location: "-33.86,151.21"})
	if err != nil || res.Provisional {
		t.Fatalf("hash: %+v %v", res, err)
	}
	rc, err := courierproto.VerifyReceipt(res.Receipt, s.DevicePublicKey(), "dev-1")
	if err != nil || rc.Delivery != "h" || rc.Version != 1 || rc.Location != "-33.86,151.21" || rc.LogSeq != res.LogSeq || rc.Manifest != 1 {
		t.Fatalf("receipt: %+v %v", rc, err)
	}
	if _, err := check(offline.DeliveryAttempt{Delivery: "h", Code: c}); !errors.Is(err, offline.ErrDelivered) {
		t.Fatalf("twice: %v", err)
	}
	// Fingerprint: provisional, the code sealed into the receipt.
	if res, err := check(offline.DeliveryAttempt{Delivery: "f", Code: r.codes["f"]}); err != nil || !res.Provisional {
		t.Fatalf("fingerprint: %+v %v", res, err)
	} else if rc, _ := courierproto.VerifyReceipt(res.Receipt, s.DevicePublicKey(), "dev-1"); len(rc.Sealed) == 0 {
		t.Fatal("no sealed code in the fingerprint receipt")
	}
	// Token: another delivery's, another device's, a forged one fail; the right one passes.
	_, forger, _ := ed25519.GenerateKey(rand.Reader)
	forged, _ := deliverytoken.Sign(forger, deliverytoken.Claims{Realm: "acme", Delivery: "t", Version: 1, NotAfter: t0.Add(time.Hour)})
	for name, tok := range map[string]string{"other delivery": r.token("h", 1, ""), "other device": r.token("t", 1, "dev-2"), "old version": r.token("t", 0+2, ""), "forged": forged} {
		if _, err := check(offline.DeliveryAttempt{Delivery: "t", Token: tok}); !errors.Is(err, offline.ErrWrongCode) {
			t.Fatalf("token %s: %v", name, err)
		}
	}
	if _, err := check(offline.DeliveryAttempt{Delivery: "t", Code: r.codes["h"]}); !errors.Is(err, offline.ErrWrongMode) {
		t.Fatalf("a code for a token delivery: %v", err)
	}
	if res, err := check(offline.DeliveryAttempt{Delivery: "t", Token: r.token("t", 1, "dev-1")}); err != nil || res.Mode != "token" {
		t.Fatalf("token: %+v %v", res, err)
	}
	// Attempts: five wrong codes, then none left, also after a restart.
	for i := range 5 {
		var ae *offline.AttemptsError
		if _, err := check(offline.DeliveryAttempt{Delivery: "x", Code: r.codes["h"]}); !errors.As(err, &ae) || ae.Left != 4-i {
			t.Fatalf("wrong code %d: %v", i, err)
		}
	}
	s.Close()
	s, err = offline.Open(ctx, dir, offline.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "x", Code: r.codes["x"]}); !errors.Is(err, offline.ErrNoAttempts) || !errors.Is(err, offline.ErrLocked) {
		t.Fatalf("after the limit and a restart: %v", err)
	}
	// Not on the route; past the expiry.
	if _, err := s.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "nope", Code: c}); !errors.Is(err, offline.ErrNotOnRoute) {
		t.Fatalf("not on route: %v", err)
	}
	r2 := newRoute(t, map[string]string{"late": "hash"})
	r2.m.Deliveries[0].NotAfter = t0.Add(time.Minute)
	if _, err := s.InstallManifest(ctx, r2.signed(2)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	if _, err := s.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "late", Code: r2.codes["late"]}); !errors.Is(err, offline.ErrDeliveryExpired) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := s.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "h", Code: c}); !errors.Is(err, offline.ErrNotOnRoute) {
		t.Fatalf("h after a manifest without it: %v", err)
	}
	// Every decision is in the signed log, and no code is.
	s.Close()
	es, err := devicelog.ReadFile(ctx, filepath.Join(dir, offline.DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, e := range es {
		kinds[e.Kind]++
		for _, code := range r.codes {
			if strings.Contains(string(e.Data), code) {
				t.Fatalf("log entry %d holds a code", e.Seq)
			}
		}
	}
	want := map[string]int{"courier.manifest": 2, "courier.typo": 2, "courier.ok": 3, "courier.attempt": 3 + 4 + 5, "courier.fail": 4 + 5, "courier.refused": 5}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%d %s entries, want %d (%v)", kinds[k], k, n, kinds)
		}
	}
}

// TestInstallManifest: another device's, older, tampered, other key, all
// refused and logged; the same one again changes nothing.
func TestInstallManifest(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newStore(t, quickPolicy)
	r := newRoute(t, map[string]string{"a": "hash"})
	m5 := r.signed(5)
	if _, err := s.InstallManifest(ctx, m5); err != nil {
		t.Fatal(err)
	}
	if info, err := s.InstallManifest(ctx, m5); err != nil || !info.Unchanged {
		t.Fatalf("same again: %+v %v", info, err)
	}
	if _, err := s.InstallManifest(ctx, r.signed(4)); !errors.Is(err, offline.ErrStaleManifest) {
		t.Fatalf("older: %v", err)
	}
	other := *r
	other.m.Device = "dev-2"
	if _, err := s.InstallManifest(ctx, other.signed(6)); !errors.Is(err, offline.ErrWrongDevice) {
		t.Fatalf("another device's: %v", err)
	}
	var env map[string]any
	_ = json.Unmarshal(m5, &env)
	env["sig"] = strings.Repeat("A", 86) + "=="
	tampered, _ := json.Marshal(env)
	if _, err := s.InstallManifest(ctx, tampered); !errors.Is(err, offline.ErrBadSignature) {
		t.Fatalf("tampered: %v", err)
	}
	foreign, _ := artifact.Sign(otherSigner(t), artifact.Header{Type: courierproto.ManifestType, Version: 1, Subject: "dev-1", Serial: 9,
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour)}, r.m)
	if _, err := s.InstallManifest(ctx, foreign); !errors.Is(err, offline.ErrUnknownKey) {
		t.Fatalf("another server's: %v", err)
	}
	rt, err := s.Route(ctx)
	if err != nil || rt.Serial != 5 || len(rt.Deliveries) != 1 || rt.Deliveries[0].Limit != 5 {
		t.Fatalf("route: %+v %v", rt, err)
	}
}

// TestCheckDeliveryConcurrent: the right code entered at once in several
// processes' worth of goroutines is accepted exactly once, and every
// attempt is counted.
func TestCheckDeliveryConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newStore(t, quickPolicy)
	r := newRoute(t, map[string]string{"h": "hash"})
	if _, err := s.InstallManifest(ctx, r.signed(1)); err != nil {
		t.Fatal(err)
	}
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := s.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "h", Code: r.codes["h"]})
			errs <- err
		}()
	}
	ok := 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			ok++
		case !errors.Is(err, offline.ErrDelivered):
			t.Errorf("concurrent check: %v", err)
		}
	}
	rt, err := s.Route(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ok != 1 || !rt.Deliveries[0].Accepted || rt.Deliveries[0].Attempts < 1 {
		t.Fatalf("%d accepted, route %+v", ok, rt.Deliveries)
	}
}
