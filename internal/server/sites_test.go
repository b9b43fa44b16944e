package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/otp"
	"github.com/outpost-auth/outpost/site"
)

// testSiteKDF keeps argon2id cheap in tests: they need speed, not strength.
var testSiteKDF = keys.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1}

// b64 decodes a base64 field of an answer.
func b64(t *testing.T, r resp, field string) []byte {
	t.Helper()
	s, _ := r.body[field].(string)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		t.Fatalf("field %q is not base64: %s", field, r.raw)
	}
	return b
}

// TestSiteAPI: a scope's whole life through the API, with a real site
// verifier installed from what it answers, on both engines.
func TestSiteAPI(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, dsn(t))
			ctx := context.Background()
			pkgPass, filePass := "site package passphrase 1", "usb key file passphrase 2"
			remember(pkgPass, filePass)
			call := func(method, path string, body any, status int, code string) resp {
				t.Helper()
				r := f.call(f.admin, method, path, body)
				if r.status != status || r.errCode() != code {
					t.Fatalf("%s %s: %d %q, want %d %q: %s", method, path, r.status, r.errCode(), status, code, r.raw)
				}
				return r
			}
			call("GET", "/v1/sites/scopes/north", nil, 404, "scope_not_found")
			r := call("PUT", "/v1/sites/scopes/north", map[string]any{"digits": 8, "window": 2}, 200, "")
			pol, _ := r.body["policy"].(map[string]any)
			if pol["digits"] != 8.0 || pol["window"] != 2.0 || pol["lockout_failures"] != 5.0 {
				t.Fatalf("policy %s", r.raw)
			}

			r = call("POST", "/v1/sites/scopes/north/provision", map[string]any{"site": "cab-17", "passphrase": pkgPass}, 200, "")
			if r.body["serial"] != 1.0 || r.body["signing_key_id"] != f.srv.signer.KeyID {
				t.Fatalf("provision: %s", r.raw)
			}
			clock := f.clock.Now
			s, err := site.Init(ctx, filepath.Join(t.TempDir(), "site"), site.InitConfig{SiteID: "cab-17", ServerKey: f.srv.signer.Public,
				Package: b64(t, r, "package"), Passphrase: []byte(pkgPass), Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()

			r = call("POST", "/v1/sites/scopes/north/credential", map[string]any{"tech": "tech-042"}, 200, "")
			k, err := otp.ParseURI(r.body["otpauth_uri"].(string))
			if err != nil || k.Digits != 8 || r.body["fingerprint"] == "" {
				t.Fatalf("credential: %v %s", err, r.raw)
			}
			remember(otp.EncodeSecret(k.Secret), hex.EncodeToString(k.Secret))
			code, err := k.Generate(k.Secret, 0, f.clock.Now())
			must(t, err)
			if _, err := s.Verify(ctx, "tech-042", code); err != nil {
				t.Fatalf("the site refuses a credential from the API: %v", err)
			}
			// A key file instead of the URI.
			r = call("POST", "/v1/sites/scopes/north/credential", map[string]any{"tech": "tech-042", "epoch": "current", "passphrase": filePass}, 200, "")
			if _, ok := r.body["otpauth_uri"]; ok {
				t.Fatalf("a key file answer also holds the URI: %s", r.raw)
			}
			sealed, secret, err := keys.Open([]byte(filePass), b64(t, r, "key_file"))
			if err != nil || !bytes.Equal(secret, k.Secret) || sealed.Subject != "tech-042" || sealed.Meta["scope"] != "north" {
				t.Fatalf("key file: %+v, %v", sealed, err)
			}
			next := call("POST", "/v1/sites/scopes/north/credential", map[string]any{"tech": "tech-042", "epoch": "next"}, 200, "")
			if next.body["epoch"] != r.body["epoch"].(float64)+1 {
				t.Fatalf("next epoch: %s", next.raw)
			}
			for _, e := range []any{"soon", 9999, 0, -1, true} {
				call("POST", "/v1/sites/scopes/north/credential", map[string]any{"tech": "t", "epoch": e}, 400, map[bool]string{true: "invalid_type", false: "invalid_request"}[e == -1 || e == true])
			}

			// Revocation, delivered to the site.
			r = call("POST", "/v1/sites/scopes/north/revoke", map[string]any{"tech": []string{"tech-042"}, "reason": "lost phone"}, 200, "")
			if r.body["serial"] != 2.0 || r.body["entries"] != 1.0 {
				t.Fatalf("revoke: %s", r.raw)
			}
			if _, err := s.Update(ctx, b64(t, r, "list"), nil); err != nil {
				t.Fatal(err)
			}
			f.clock.Add(time.Minute)
			code, err = k.Generate(k.Secret, 0, f.clock.Now())
			must(t, err)
			if _, err := s.Verify(ctx, "tech-042", code); !errors.Is(err, site.ErrRevoked) {
				t.Fatalf("revoked technician at the site: %v", err)
			}
			call("POST", "/v1/sites/scopes/north/credential", map[string]any{"tech": "tech-042"}, 409, "revoked")
			call("POST", "/v1/sites/scopes/north/revoke", map[string]any{"undo": []string{"nobody"}}, 409, "not_revoked")
			call("POST", "/v1/sites/scopes/north/revoke", map[string]any{"tech": []string{"x"}, "reason": "two\nlines"}, 400, "invalid_request")
			call("POST", "/v1/sites/scopes/south/revoke", map[string]any{"tech": []string{"x"}}, 404, "scope_not_found")

			// Roll, with and without a body.
			r = call("POST", "/v1/sites/scopes/north/roll", nil, 200, "")
			if sites, _ := r.body["sites"].([]any); len(sites) != 1 || sites[0] != "cab-17" {
				t.Fatalf("roll: %s", r.raw)
			}
			f.clock.Add(time.Second)
			call("POST", "/v1/sites/scopes/north/roll", map[string]any{}, 200, "")
			call("POST", "/v1/sites/scopes/north/roll", map[string]any{"now": true}, 400, "unknown_field")
			r = call("GET", "/v1/sites/scopes/north", nil, 200, "")
			if rolls, _ := r.body["emergency_rolls"].([]any); len(rolls) != 2 || r.body["package_serial"] != 1.0 {
				t.Fatalf("scope after two rolls: %s", r.raw)
			}
			call("PUT", "/v1/sites/scopes/north", map[string]any{"digits": 6}, 409, "policy_fixed")
			call("PUT", "/v1/sites/scopes/north", map[string]any{"window": 50}, 400, "invalid_request")
			call("PUT", "/v1/sites/scopes/north", map[string]any{"lockout_s": -1}, 400, "invalid_request")
			call("PUT", "/v1/sites/scopes/north", map[string]any{"colour": "red"}, 400, "unknown_field")

			// Every input is checked.
			call("GET", "/v1/sites/scopes/.hidden", nil, 400, "invalid_id")
			call("POST", "/v1/sites/scopes/north/provision", map[string]any{"site": "bad/site", "passphrase": pkgPass}, 400, "invalid_id")
			call("POST", "/v1/sites/scopes/north/provision", map[string]any{"site": "cab-2", "passphrase": "short"}, 400, "weak_passphrase")
			call("POST", "/v1/sites/scopes/north/provision", map[string]any{"site": "cab-2", "passphrase": strings.Repeat("p", 5000)}, 400, "invalid_request")
			call("POST", "/v1/sites/scopes/north/provision", map[string]any{"site": 7}, 400, "invalid_type")
			call("POST", "/v1/sites/scopes/north/credential", map[string]any{"tech": "has space"}, 400, "invalid_id")
			call("POST", "/v1/sites/scopes/north/credential", map[string]any{"tech": "t", "passphrase": ""}, 400, "weak_passphrase")

			// Only admin clients.
			for _, who := range []string{f.client("issuer"), f.client("verifier")} {
				if r := f.call(who, "GET", "/v1/sites/scopes/north", nil); r.status != 403 {
					t.Fatalf("non-admin client: %d %s", r.status, r.raw)
				}
				if r := f.call(who, "POST", "/v1/sites/scopes/north/credential", map[string]any{"tech": "t"}); r.status != 403 {
					t.Fatalf("non-admin client: %d %s", r.status, r.raw)
				}
			}

			// The audit log holds every change, by this client, and no secret.
			r = call("GET", "/v1/audit?limit=1000", nil, 200, "")
			var out struct {
				Entries []struct {
					Kind, Actor, Subject string
					Data                 json.RawMessage
				}
			}
			if err := json.Unmarshal(r.raw, &out); err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, e := range out.Entries {
				if strings.HasPrefix(e.Kind, "site.") {
					kinds = append(kinds, e.Kind+" "+e.Subject)
					if !strings.HasPrefix(e.Actor, "api:") {
						t.Errorf("%s by %q", e.Kind, e.Actor)
					}
				}
				for _, secret := range []string{pkgPass, filePass, otp.EncodeSecret(k.Secret), hex.EncodeToString(k.Secret)} {
					if strings.Contains(string(e.Data), secret) {
						t.Errorf("audit entry %s holds a secret", e.Kind)
					}
				}
			}
			want := "site.policy north,site.provision north,site.credential tech-042,site.credential tech-042,site.credential tech-042,site.revoke north,site.roll north,site.roll north"
			if got := strings.Join(kinds, ","); got != want {
				t.Errorf("site audit entries:\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestSubjectExportAPI(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	pass := "subject key file passphrase"
	remember(pass)
	r := f.call(f.admin, "POST", "/v1/keys/subject-export", map[string]any{"subject": "tech-042", "epoch": 3, "passphrase": pass})
	if r.status != 200 || r.body["subject"] != "tech-042" || r.body["epoch"] != 3.0 || r.body["purpose"] != "subject-key" {
		t.Fatalf("export: %d %s", r.status, r.raw)
	}
	sealed, secret, err := keys.Open([]byte(pass), b64(t, r, "key_file"))
	want := f.master.Derive(20, keys.PurposeSubject, 3, "tech-042")
	if err != nil || !bytes.Equal(secret, want) || sealed.Subject != "tech-042" || sealed.Epoch != 3 || sealed.Meta["digits"] != "6" {
		t.Fatalf("key file: %+v, %v", sealed, err)
	}
	remember(otp.EncodeSecret(secret), hex.EncodeToString(secret))
	for _, tc := range []struct {
		body         map[string]any
		status       int
		code, client string
	}{
		{map[string]any{"subject": "", "passphrase": pass}, 400, "invalid_request", ""},
		{map[string]any{"subject": "a\nb", "passphrase": pass}, 400, "invalid_request", ""},
		{map[string]any{"subject": strings.Repeat("s", 257), "passphrase": pass}, 400, "invalid_request", ""},
		{map[string]any{"subject": "s", "passphrase": "short"}, 400, "weak_passphrase", ""},
		{map[string]any{"subject": "s", "epoch": -1, "passphrase": pass}, 400, "invalid_type", ""},
		{map[string]any{"subject": "s", "passphrase": pass, "master": true}, 400, "unknown_field", ""},
		{map[string]any{"subject": "s", "passphrase": pass}, 403, "forbidden", "issuer"},
	} {
		tok := f.admin
		if tc.client != "" {
			tok = f.client(tc.client)
		}
		if r := f.call(tok, "POST", "/v1/keys/subject-export", tc.body); r.status != tc.status || r.errCode() != tc.code {
			t.Errorf("%v: %d %s, want %d %s", tc.body, r.status, r.raw, tc.status, tc.code)
		}
	}
	entries, err := f.st.ListAudit(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Kind == "key.export" {
			n++
			if e.Subject != "tech-042" || !strings.Contains(string(e.Data), `"fingerprint"`) || strings.Contains(string(e.Data), pass) {
				t.Errorf("key.export entry %+v", e)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d key.export entries, want 1", n)
	}
}
