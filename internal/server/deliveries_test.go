package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/keys"
)

// TestDeliveriesAPI: create (the code once), duplicate 409, get, list,
// reassign (a new code), cancel, refused changes, scopes; both engines.
func TestDeliveriesAPI(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, dsn(t))
			iss, ver := f.client("issuer"), f.client("verifier")
			f.registerDevice(t, "dev-1")
			due := f.clock.Now().Add(48 * time.Hour).Format(time.RFC3339)
			body := map[string]any{"id": "p1", "recipient": map[string]string{"email": "ana@example.org"}, "device": "dev-1", "not_after": due, "mode": "hash"}

			if r := f.call(ver, "POST", "/v1/deliveries", body); r.status != http.StatusForbidden {
				t.Fatalf("verifier scope: %d", r.status)
			}
			r := f.mustCall(http.StatusCreated, iss, "POST", "/v1/deliveries", body)
			code, _ := r.body["code"].(string)
			if _, err := deliverycode.Parse(code); err != nil || r.body["state"] != "created" || r.body["code_version"] != 1.0 {
				t.Fatalf("created: %s", r.raw)
			}
			if strings.Contains(string(r.raw), "ana@") {
				t.Fatalf("the answer repeats the recipient: %s", r.raw)
			}
			if r := f.call(iss, "POST", "/v1/deliveries", body); r.status != http.StatusConflict || r.errCode() != "exists" {
				t.Fatalf("duplicate: %d %s", r.status, r.raw)
			}
			bad := map[string]any{"id": "p2", "recipient": map[string]string{}, "device": "dev-1", "not_after": due, "mode": "hash"}
			if r := f.call(iss, "POST", "/v1/deliveries", bad); r.status != http.StatusBadRequest || r.errCode() != "invalid_request" {
				t.Fatalf("no recipient: %d %s", r.status, r.raw)
			}

			r = f.mustCall(http.StatusOK, iss, "GET", "/v1/deliveries/p1", nil)
			if _, ok := r.body["code"]; ok || r.body["device"] != "dev-1" {
				t.Fatalf("get: %s", r.raw)
			}
			if r := f.call(iss, "GET", "/v1/deliveries/nope", nil); r.status != http.StatusNotFound || r.errCode() != "delivery_not_found" {
				t.Fatalf("get unknown: %d %s", r.status, r.raw)
			}

			if r := f.call(iss, "POST", "/v1/deliveries/p1/reassign", map[string]string{"device": "dev-2"}); r.status != http.StatusBadRequest ||
				!strings.Contains(string(r.raw), "not a registered field device") {
				t.Fatalf("reassign to an unregistered device: %d %s", r.status, r.raw)
			}
			f.registerDevice(t, "dev-2")
			r = f.mustCall(http.StatusOK, iss, "POST", "/v1/deliveries/p1/reassign", map[string]string{"device": "dev-2"})
			if c2, _ := r.body["code"].(string); c2 == "" || c2 == code || r.body["state"] != "reassigned" || r.body["code_version"] != 2.0 {
				t.Fatalf("reassign: %s", r.raw)
			}
			f.mustCall(http.StatusOK, iss, "POST", "/v1/deliveries/p1/cancel", nil)
			if r := f.call(iss, "POST", "/v1/deliveries/p1/cancel", nil); r.status != http.StatusConflict || r.errCode() != "invalid_state" {
				t.Fatalf("cancel twice: %d %s", r.status, r.raw)
			}

			r = f.mustCall(http.StatusOK, iss, "GET", "/v1/deliveries?limit=10", nil)
			list, _ := r.body["deliveries"].([]any)
			if len(list) != 1 || list[0].(map[string]any)["state"] != "cancelled" {
				t.Fatalf("list: %s", r.raw)
			}
			for _, e := range f.auditOf("delivery.create") {
				if strings.Contains(string(e.Data), "ana@") || strings.Contains(string(e.Data), code) {
					t.Fatalf("audit holds the recipient or code: %s", e.Data)
				}
			}
		})
	}
}

// registerDevice registers field device id with a fresh key.
func (f *fixture) registerDevice(t *testing.T, id string) ed25519.PrivateKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.mustCall(http.StatusCreated, f.admin, "POST", "/v1/devices", map[string]string{"id": id, "public_key": string(keys.MarshalPublicPEM(pub))})
	return priv
}
