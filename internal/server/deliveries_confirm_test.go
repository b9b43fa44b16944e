package server

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/delivery"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/deliverytoken"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/qr"
)

// TestDeliveryConfirmAPI: POST /v1/deliveries/{id}/confirm, each answer of
// the online confirm, on both engines; and the token in a token-mode
// delivery's answers.
func TestDeliveryConfirmAPI(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, dsn(t))
			f.registerDevice(t, "dev-1")
			f.registerDevice(t, "dev-2")
			iss, ver := f.client("issuer"), f.client("verifier")
			due := f.clock.Now().Add(48 * time.Hour).Format(time.RFC3339)
			create := func(id, mode string) map[string]any {
				r := f.mustCall(http.StatusCreated, iss, "POST", "/v1/deliveries", map[string]any{"id": id,
					"recipient": map[string]string{"phone": "+33612345678"}, "device": "dev-1", "not_after": due, "mode": mode})
				return r.body
			}
			code := create("p1", "hash")["code"].(string)
			wrong := "000000000"
			for wrong[:8] == code[:8] {
				wrong = "111111111"
			}
			wrong = wrong[:8] + string(deliverycode.CheckDigit(wrong[:8]))
			typo := []byte(code)
			typo[0] = '0' + (typo[0]-'0'+1)%10
			path := "/v1/deliveries/p1/confirm"

			tests := []struct {
				name   string
				token  string
				body   map[string]string
				status int
				code   string
			}{
				{"verifier scope", ver, map[string]string{"code": code, "device": "dev-1"}, http.StatusForbidden, "forbidden"},
				{"no device", iss, map[string]string{"code": code}, http.StatusBadRequest, "invalid_device"},
				{"not a code", iss, map[string]string{"code": "hello", "device": "dev-1"}, http.StatusBadRequest, "invalid_request"},
				{"typo", iss, map[string]string{"code": string(typo), "device": "dev-1"}, http.StatusBadRequest, "typo"},
				{"another device", iss, map[string]string{"code": code, "device": "dev-2"}, http.StatusForbidden, "wrong_device"},
				{"wrong code", iss, map[string]string{"code": wrong, "device": "dev-1"}, http.StatusUnauthorized, "wrong_code"},
				{"right code", iss, map[string]string{"code": code, "device": "dev-1"}, http.StatusOK, ""},
				{"used code", iss, map[string]string{"code": code, "device": "dev-1"}, http.StatusConflict, "already_delivered"},
			}
			for _, tc := range tests {
				r := f.call(tc.token, "POST", path, tc.body)
				if r.status != tc.status || r.errCode() != tc.code {
					t.Fatalf("%s: %d %s", tc.name, r.status, r.raw)
				}
				if strings.Contains(string(r.raw), code) {
					t.Fatalf("%s: the answer repeats the code: %s", tc.name, r.raw)
				}
				if tc.status == http.StatusOK && r.body["state"] != "delivered" {
					t.Fatalf("%s: %s", tc.name, r.raw)
				}
			}
			if r := f.call(iss, "POST", "/v1/deliveries/nope/confirm", map[string]string{"code": code, "device": "dev-1"}); r.errCode() != "delivery_not_found" {
				t.Fatalf("unknown delivery: %s", r.raw)
			}

			// The limit: the fifth wrong code fails the delivery.
			code2 := create("p2", "hash")["code"].(string)
			w2 := "222222222"
			if w2[:8] == code2[:8] {
				w2 = "333333333"
			}
			w2 = w2[:8] + string(deliverycode.CheckDigit(w2[:8]))
			for i := 1; i <= 5; i++ {
				r := f.call(iss, "POST", "/v1/deliveries/p2/confirm", map[string]string{"code": w2, "device": "dev-1"})
				want := "wrong_code"
				if i == 5 {
					want = "attempts_exhausted"
				}
				if r.errCode() != want {
					t.Fatalf("wrong code %d: %s", i, r.raw)
				}
			}
			r := f.call(iss, "POST", "/v1/deliveries/p2/confirm", map[string]string{"code": code2, "device": "dev-1"})
			if r.status != http.StatusConflict || r.errCode() != "attempts_exhausted" || !strings.Contains(string(r.raw), "reassign") {
				t.Fatalf("after the limit: %s", r.raw)
			}
			if r := f.mustCall(http.StatusOK, iss, "GET", "/v1/deliveries/p2", nil); r.body["state"] != "failed" {
				t.Fatalf("state: %s", r.raw)
			}
			if n := len(f.auditOf("delivery.attempt")); n != 7 {
				t.Fatalf("%d attempts audited, want 7", n)
			}
			for _, kind := range []string{"delivery.attempt", "delivery.wrong_code", "delivery.deliver", "delivery.fail", "delivery.confirm_refused"} {
				es := f.auditOf(kind)
				if len(es) == 0 {
					t.Fatalf("no %s entry", kind)
				}
				for _, e := range es {
					if strings.Contains(string(e.Data), code) || strings.Contains(string(e.Data), code2) {
						t.Fatalf("%s holds a code: %s", kind, e.Data)
					}
				}
			}

			// Token mode: the token is in the answer, as text and QR, and
			// verifies with the realm's key.
			tb := create("p3", "token")
			tok, _ := tb["token"].(map[string]any)
			text, _ := tok["text"].(string)
			png, err := base64.StdEncoding.DecodeString(tok["png"].(string))
			if err != nil || !strings.HasPrefix(text, deliverytoken.Prefix) {
				t.Fatalf("token: %v %s", err, tb)
			}
			if scanned, err := qr.Decode(bytes.NewReader(png)); err != nil || scanned != text {
				t.Fatalf("QR: %q %v", scanned, err)
			}
			keys, err := f.srv.deliveries.PublicKeys(DefaultRealm)
			if err != nil {
				t.Fatal(err)
			}
			c, err := deliverytoken.Verify(ed25519.PublicKey(keys.Token), text, f.clock.Now())
			if err != nil || c.For(DefaultRealm, "p3", 1, "dev-1") != nil {
				t.Fatalf("verify: %+v %v", c, err)
			}
			r = f.mustCall(http.StatusOK, iss, "POST", "/v1/deliveries/p3/reassign", map[string]string{"device": "dev-2"})
			if tok2, _ := r.body["token"].(map[string]any); tok2 == nil || tok2["text"] == text {
				t.Fatalf("reassign in token mode: %s", r.raw)
			}
			if r := f.mustCall(http.StatusOK, iss, "GET", "/v1/deliveries/p3", nil); r.body["token"] != nil {
				t.Fatalf("get repeats the token: %s", r.raw)
			}
			if _, ok := create("p4", "hash")["token"]; ok {
				t.Fatal("hash mode answer with a token")
			}
		})
	}
}

// TestDeliveryDeviceConfirmAPI: POST /v1/deliveries/{id}/device-confirm,
// authenticated by the device's own signature as sync is: a registered
// device confirms its delivery; another device, an unregistered key and a
// replay are refused.
func TestDeliveryDeviceConfirmAPI(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "d.db"))
	iss := f.client("issuer")
	register := func(id string, seed byte) *keys.Signer {
		priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32))
		pub := priv.Public().(ed25519.PublicKey)
		f.mustCall(http.StatusCreated, f.admin, "POST", "/v1/devices", map[string]string{"id": id, "public_key": string(keys.MarshalPublicPEM(pub))})
		return &keys.Signer{Private: priv, Public: pub, KeyID: keys.KeyID(pub)}
	}
	van7, van9 := register("van-7", 7), register("van-9", 9)
	due := f.clock.Now().Add(48 * time.Hour).Format(time.RFC3339)
	r := f.mustCall(http.StatusCreated, iss, "POST", "/v1/deliveries", map[string]any{"id": "p1",
		"recipient": map[string]string{"email": "ana@example.org"}, "device": "van-7", "not_after": due, "mode": "fingerprint"})
	code := r.body["code"].(string)
	sign := func(s *keys.Signer, device string) []byte {
		data, err := delivery.SignConfirm(s, device, delivery.ConfirmBody{Realm: DefaultRealm, Delivery: "p1", Code: code}, f.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	stranger := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, 32))
	path := "/v1/deliveries/p1/device-confirm"
	for _, tc := range []struct {
		name   string
		data   []byte
		status int
		code   string
	}{
		{"another registered device", sign(van9, "van-9"), http.StatusForbidden, "wrong_device"},
		{"an unregistered key", sign(&keys.Signer{Private: stranger, Public: stranger.Public().(ed25519.PublicKey),
			KeyID: keys.KeyID(stranger.Public().(ed25519.PublicKey))}, "van-7"), http.StatusUnauthorized, "device_unauthenticated"},
		{"not an artifact", []byte(`{"code":"123"}`), http.StatusUnauthorized, "device_unauthenticated"},
	} {
		if r := f.call("", "POST", path, tc.data); r.status != tc.status || r.errCode() != tc.code {
			t.Fatalf("%s: %d %s", tc.name, r.status, r.raw)
		}
	}
	good := sign(van7, "van-7")
	if r := f.call("", "POST", path, good); r.status != http.StatusOK || r.body["state"] != "delivered" {
		t.Fatalf("confirm: %d %s", r.status, r.raw)
	}
	if r := f.call("", "POST", path, good); r.status != http.StatusConflict || r.errCode() != "replayed" {
		t.Fatalf("replay: %d %s", r.status, r.raw)
	}
	if es := f.auditOf("delivery.deliver"); len(es) != 1 || es[0].Actor != "device:van-7" {
		t.Fatalf("deliver entries: %+v", es)
	}
}

// TestDeliveryKeysAPI: GET /v1/keys/deliveries answers the keys the service
// derives, the token key as PEM that keys.ParsePublicPEM reads.
func TestDeliveryKeysAPI(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "k.db"))
	iss, ver := f.client("issuer"), f.client("verifier")
	if r := f.call(ver, "GET", "/v1/keys/deliveries", nil); r.status != http.StatusForbidden {
		t.Fatalf("verifier: %d", r.status)
	}
	r := f.mustCall(http.StatusOK, iss, "GET", "/v1/keys/deliveries", nil)
	want, err := f.srv.deliveries.PublicKeys(DefaultRealm)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keys.ParsePublicPEM([]byte(r.body["token_public_key_pem"].(string)))
	seal, _ := base64.StdEncoding.DecodeString(r.body["seal_public_key"].(string))
	if err != nil || !pub.Equal(want.Token) || !bytes.Equal(seal, want.Seal) || r.body["token_key_id"] != keys.KeyID(want.Token) {
		t.Fatalf("keys: %v %s", err, r.raw)
	}
}
