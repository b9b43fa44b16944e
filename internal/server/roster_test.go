package server

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/roster"
	"github.com/outpost-auth/outpost/offline"
)

func testLabel(t *testing.T, serial string) (string, []byte) {
	t.Helper()
	key, err := device.GenerateKey(device.P256)
	if err != nil {
		t.Fatal(err)
	}
	l, err := device.NewLabel(serial, "gw-100", key.Public())
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Payload()
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return p, spki
}

// TestRosterOverHTTP: a vouch made offline reaches the roster through the
// HTTP sync, once; an administrator manages it through /v1/roster, each
// change audited; bad requests get JSON errors.
func TestRosterOverHTTP(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, dsn(t))
			ctx := context.Background()
			dev := f.fieldDevice("phone-1")
			if r := f.call(f.admin, "POST", "/v1/roster/vouchers", map[string]any{"device": "phone-1", "allowed": true}); r.status != 200 || r.body["changed"] != true {
				t.Fatalf("allow: %d %s", r.status, r.raw)
			}
			p1, k1 := testLabel(t, "SN-1")
			p2, _ := testLabel(t, "SN-2")
			for _, p := range []string{p1, p2} {
				if _, err := dev.Vouch(ctx, offline.VouchRequest{Label: p, Site: "cab-1", Location: "1.5,2.5"}); err != nil {
					t.Fatal(err)
				}
			}
			if r := f.call(f.admin, "POST", "/v1/roster/expected", map[string]any{"serials": []string{"SN-1"}, "order": "PO-7"}); r.status != 200 || r.body["added"] != 1.0 {
				t.Fatalf("expect: %d %s", r.status, r.raw)
			}
			for range 2 {
				if _, err := dev.Sync(ctx, f.syncClient()); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.srv.Roster().Live(ctx, DefaultRealm, "SN-1", k1); err != nil {
				t.Fatalf("Live after sync: %v", err)
			}
			r := f.call(f.admin, "GET", "/v1/roster?limit=10", nil)
			var list struct {
				Roster []roster.Entry `json:"roster"`
			}
			if err := json.Unmarshal(r.raw, &list); err != nil || len(list.Roster) != 2 || list.Roster[0].State != "live" || list.Roster[1].State != "held" {
				t.Fatalf("list: %v %s", err, r.raw)
			}
			if r := f.call(f.admin, "POST", "/v1/roster/SN-2/approve", map[string]any{}); r.status != 200 || r.body["state"] != "live" {
				t.Fatalf("approve: %d %s", r.status, r.raw)
			}
			if r := f.call(f.admin, "POST", "/v1/roster/SN-1/withdraw", map[string]any{"reason": "lost in transit"}); r.status != 200 || r.body["state"] != "withdrawn" {
				t.Fatalf("withdraw: %d %s", r.status, r.raw)
			}
			if r := f.call(f.admin, "GET", "/v1/roster/SN-1", nil); r.status != 200 || !strings.Contains(string(r.raw), `"lost in transit"`) {
				t.Fatalf("get: %d %s", r.status, r.raw)
			}
			for _, c := range []struct {
				method, path string
				body         any
				status       int
				code         string
			}{
				{"GET", "/v1/roster/SN-404", nil, 404, "no_vouch"},
				{"GET", "/v1/roster/bad%20serial", nil, 400, "invalid_request"},
				{"POST", "/v1/roster/SN-1/approve", map[string]any{}, 409, "invalid_state"},
				{"POST", "/v1/roster/SN-1/reject", map[string]any{"vouch": "x"}, 409, "invalid_state"},
				{"POST", "/v1/roster/expected", map[string]any{"serials": []string{}}, 400, "invalid_request"},
				{"POST", "/v1/roster/expected", map[string]any{"serials": []string{"a b"}}, 400, "invalid_request"},
				{"POST", "/v1/roster/vouchers", map[string]any{"device": "phone-1"}, 400, "invalid_request"},
				{"POST", "/v1/roster/vouchers", map[string]any{"device": "phone-9", "allowed": true}, 404, "device_not_found"},
				{"POST", "/v1/roster/SN-2/withdraw", map[string]any{"reason": strings.Repeat("x", 300)}, 400, "invalid_request"},
				{"POST", "/v1/roster/SN-2/withdraw", map[string]any{"why": "unknown field"}, 400, "unknown_field"},
			} {
				r := f.call(f.admin, c.method, c.path, c.body)
				if r.status != c.status || r.errCode() != c.code {
					t.Errorf("%s %s: %d %q, want %d %q (%s)", c.method, c.path, r.status, r.errCode(), c.status, c.code, r.raw)
				}
			}
			r = f.call(f.admin, "GET", "/v1/audit?limit=1000", nil)
			for _, kind := range []string{roster.KindVoucher, roster.KindExpect, roster.KindVouch, roster.KindApprove, roster.KindWithdraw} {
				if !strings.Contains(string(r.raw), `"`+kind+`"`) {
					t.Errorf("audit log has no %s", kind)
				}
			}
			m := f.call("", "GET", "/metrics", nil)
			if !strings.Contains(string(m.raw), `outpost_roster_vouches_total{event="ingested"} 2`) ||
				!strings.Contains(string(m.raw), `outpost_roster_vouches_total{event="held"} 1`) {
				t.Errorf("metrics lack the roster counters")
			}
		})
	}
}
