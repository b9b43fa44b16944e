package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/otp"
)

func postgresDSN(t *testing.T) string { return storetest.PostgresDSN(t) }

// TestEnrolVerifyOnceWithPyotp is the "done when": a token enrolled
// through its otpauth URI, read by a real authenticator (pyotp), verifies
// once and only once. It is the enrolment path's interop test, so it keeps
// pyotp; the rules it shows are unit-tested without it in internal/online.
func TestEnrolVerifyOnceWithPyotp(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name, func(t *testing.T) {
			pyotpAvailable(t)
			f := newFixture(t, dsn(t))
			verifier := f.client("verifier")
			if r := f.call(f.admin, "POST", "/v1/users", map[string]any{"id": "alice", "display_name": "Alice"}); r.status != 201 {
				t.Fatalf("create user: %d %s", r.status, r.raw)
			}
			r := f.call(f.admin, "POST", "/v1/users/alice/tokens", map[string]any{"type": "totp", "algorithm": "SHA1", "digits": 6, "period": 30})
			if r.status != 201 {
				t.Fatalf("create token: %d %s", r.status, r.raw)
			}
			uri := r.body["otpauth_uri"].(string)
			remember(otp.EncodeSecret(f.key(uri).Secret))
			png, err := base64.StdEncoding.DecodeString(r.body["qr_png"].(string))
			if err != nil || !strings.HasPrefix(string(png), "\x89PNG") {
				t.Fatalf("qr_png is not a base64 PNG")
			}
			tid := r.body["id"].(string)
			// A pending token does not verify.
			if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "alice", "code": pyotpCode(t, uri, f.clock.Now())}); r.status != 401 || r.errCode() != "invalid_code" {
				t.Fatalf("pending token verified: %d %s", r.status, r.raw)
			}
			code := pyotpCode(t, uri, f.clock.Now())
			if r := f.call(f.admin, "POST", "/v1/users/alice/tokens/"+tid+"/confirm", map[string]string{"code": code}); r.status != 200 {
				t.Fatalf("confirm: %d %s", r.status, r.raw)
			}
			// The confirming code is consumed.
			if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "alice", "code": code}); r.status != 401 || r.errCode() != "replayed" {
				t.Fatalf("confirm code reused: %d %s", r.status, r.raw)
			}
			f.clock.Add(30 * time.Second)
			code = pyotpCode(t, uri, f.clock.Now())
			if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "alice", "code": code}); r.status != 200 || r.body["ok"] != true || r.body["token"] != tid {
				t.Fatalf("verify: %d %s", r.status, r.raw)
			}
			if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "alice", "code": code}); r.status != 401 || r.errCode() != "replayed" {
				t.Fatalf("second use: %d %s", r.status, r.raw)
			}
			// An older code inside the window is refused too: steps only move forward.
			f.clock.Add(30 * time.Second)
			old := pyotpCode(t, uri, f.clock.Now().Add(-60*time.Second))
			if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "alice", "code": old}); r.status != 401 {
				t.Fatalf("older code: %d %s", r.status, r.raw)
			}
		})
	}
}

func TestConcurrentVerifyAcceptsOnce(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, dsn(t))
			verifier := f.client("verifier")
			uri := f.enrol("bob", map[string]any{"type": "totp"})
			f.clock.Add(30 * time.Second)
			code := f.codeAt(uri, 0)
			var wg sync.WaitGroup
			results := make(chan int, 20)
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results <- f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "bob", "code": code}).status
				}()
			}
			wg.Wait()
			close(results)
			ok := 0
			for s := range results {
				if s == 200 {
					ok++
				} else if s != 401 && s != 429 {
					t.Errorf("unexpected status %d", s)
				}
			}
			if ok != 1 {
				t.Fatalf("%d of 20 concurrent requests accepted the same code, want exactly 1", ok)
			}
		})
	}
}

func TestHOTPLookaheadAndResync(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	verifier := f.client("verifier")
	uri := f.enrol("carol", map[string]any{"type": "hotp", "digits": 8}) // confirm used counter 0..
	// enrol confirmed with counter 0; counters 1..11 are in the look-ahead window.
	// HOTP never looks behind the last used counter, so an old code is simply not valid.
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "carol", "code": f.codeAt(uri, 5)}); r.status != 200 {
		t.Fatalf("counter 5: %d %s", r.status, r.raw)
	}
	// Counters just behind the last used one are recognised: replayed (issue 9, item 7).
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "carol", "code": f.codeAt(uri, 3)}); r.status != 401 || r.errCode() != "replayed" {
		t.Fatalf("counter 3 after 5: %d %s", r.status, r.raw)
	}
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "carol", "code": f.codeAt(uri, 17)}); r.status != 401 || r.errCode() != "invalid_code" {
		t.Fatalf("counter 17 beyond the look-ahead: %d %s", r.status, r.raw)
	}
	r := f.call(f.admin, "GET", "/v1/users/carol/tokens", nil)
	tid := r.body["tokens"].([]any)[0].(map[string]any)["id"].(string)
	if r := f.call(f.admin, "POST", "/v1/users/carol/tokens/"+tid+"/resync", map[string]string{"code1": f.codeAt(uri, 100), "code2": f.codeAt(uri, 102)}); r.status != 401 {
		t.Fatalf("non-consecutive resync: %d %s", r.status, r.raw)
	}
	if r := f.call(f.admin, "POST", "/v1/users/carol/tokens/"+tid+"/resync", map[string]string{"code1": f.codeAt(uri, 100), "code2": f.codeAt(uri, 101)}); r.status != 200 {
		t.Fatalf("resync: %d %s", r.status, r.raw)
	}
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "carol", "code": f.codeAt(uri, 101)}); r.status != 401 {
		t.Fatalf("resync code reused: %d %s", r.status, r.raw)
	}
	f.clock.Add(f.srv.cfg.Policy.Delay(4)) // four failures so far: the bad resync counts too
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "carol", "code": f.codeAt(uri, 102)}); r.status != 200 {
		t.Fatalf("after resync: %d %s", r.status, r.raw)
	}
}

func TestPINAndOTP(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	verifier := f.client("verifier")
	uri := f.enrol("dave", map[string]any{})
	remember("482916307715")
	if r := f.call(f.admin, "PUT", "/v1/users/dave/pin", map[string]string{"pin": "482916307715"}); r.status != 204 {
		t.Fatalf("set pin: %d %s", r.status, r.raw)
	}
	for _, bad := range []string{"12", "1234567890123", "12a4", ""} {
		if r := f.call(f.admin, "PUT", "/v1/users/dave/pin", map[string]string{"pin": bad}); r.status != 400 || r.errCode() != "invalid_pin" {
			t.Fatalf("pin %q: %d %s", bad, r.status, r.raw)
		}
	}
	f.clock.Add(30 * time.Second)
	code := f.codeAt(uri, 0)
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "dave", "code": code}); r.status != 401 || r.errCode() != "invalid_code" {
		t.Fatalf("no pin: %d %s", r.status, r.raw)
	}
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "dave", "code": code, "pin": "000000"}); r.status != 401 {
		t.Fatalf("wrong pin: %d %s", r.status, r.raw)
	}
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "dave", "code": code, "pin": "482916307715"}); r.status != 200 {
		t.Fatalf("pin + otp: %d %s", r.status, r.raw)
	}
	if r := f.call(f.admin, "GET", "/v1/users/dave", nil); r.body["has_pin"] != true || r.body["failures"].(float64) != 0 {
		t.Fatalf("user after success: %s", r.raw)
	}
}

func TestLockoutAndReset(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	verifier := f.client("verifier")
	uri := f.enrol("erin", map[string]any{})
	wrong := "000000"
	if f.codeAt(uri, 0) == wrong || f.codeAt(uri, 1) == wrong || f.codeAt(uri, -1) == wrong {
		wrong = "111111"
	}
	max := f.srv.cfg.Policy.MaxFailures
	for i := 1; i <= max; i++ {
		r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "erin", "code": wrong})
		if r.status != 401 {
			t.Fatalf("failure %d: %d %s", i, r.status, r.raw)
		}
		// A failure beyond the free ones imposes a growing delay: 429 with retry_after.
		if d := f.srv.cfg.Policy.Delay(i); d > 0 {
			r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "erin", "code": wrong})
			if i < max && (r.status != 429 || r.errCode() != "locked" || r.header.Get("Retry-After") == "") {
				t.Fatalf("during delay after failure %d: %d %s", i, r.status, r.raw)
			}
			f.clock.Add(d)
		}
	}
	f.clock.Add(time.Hour)
	code := f.codeAt(uri, 0)
	r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "erin", "code": code})
	if r.status != 429 || r.errCode() != "locked" {
		t.Fatalf("locked user with the right code: %d %s", r.status, r.raw)
	}
	if r := f.call(verifier, "DELETE", "/v1/users/erin/lockout", nil); r.status != 403 {
		t.Fatalf("verifier reset lockout: %d", r.status)
	}
	if r := f.call(f.admin, "DELETE", "/v1/users/erin/lockout", nil); r.status != 204 {
		t.Fatalf("reset: %d %s", r.status, r.raw)
	}
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "erin", "code": code}); r.status != 200 {
		t.Fatalf("after reset: %d %s", r.status, r.raw)
	}
	rep, err := audit.VerifyStore(context.Background(), f.st)
	if err != nil || !rep.OK {
		t.Fatalf("audit: %+v %v", rep, err)
	}
	es, err := f.st.ListAudit(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range es {
		kinds = append(kinds, e.Kind)
	}
	for _, k := range []string{audit.UserCreate, audit.TokenCreate, audit.TokenConfirm, audit.VerifyFail, audit.Lockout, audit.LockoutReset, audit.VerifyOK, audit.AuthDenied} {
		if !slices.Contains(kinds, k) {
			t.Errorf("audit log lacks %s", k)
		}
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	verifier := f.client("verifier")
	issuer := f.client("issuer")
	f.enrol("frank", map[string]any{"digits": 8})
	big := `{"id":"` + strings.Repeat("a", MaxBody) + `"}`
	cases := []struct {
		name, token, method, path string
		body                      any
		status                    int
		code                      string
	}{
		{"malformed json", f.admin, "POST", "/v1/users", `{"id":`, 400, "invalid_json"},
		{"not json", f.admin, "POST", "/v1/users", `hello`, 400, "invalid_json"},
		{"empty body", f.admin, "POST", "/v1/users", ``, 400, "invalid_json"},
		{"unknown field", f.admin, "POST", "/v1/users", `{"id":"x","admin":true}`, 400, "unknown_field"},
		{"wrong type", f.admin, "POST", "/v1/users", `{"id":42}`, 400, "invalid_type"},
		{"trailing data", f.admin, "POST", "/v1/users", `{"id":"x"} {"id":"y"}`, 400, "invalid_json"},
		{"oversize", f.admin, "POST", "/v1/users", big, 413, "body_too_large"},
		{"bad user id", f.admin, "POST", "/v1/users", `{"id":"a/b"}`, 400, "invalid_user"},
		{"empty user id", f.admin, "POST", "/v1/users", `{"id":""}`, 400, "invalid_user"},
		{"duplicate user", f.admin, "POST", "/v1/users", `{"id":"frank"}`, 409, "exists"},
		{"unknown user", f.admin, "GET", "/v1/users/nobody", nil, 404, "user_not_found"},
		{"unknown user tokens", f.admin, "POST", "/v1/users/nobody/tokens", `{}`, 404, "user_not_found"},
		{"unknown token", f.admin, "POST", "/v1/users/frank/tokens/tok_nope/confirm", `{"code":"12345678"}`, 404, "token_not_found"},
		{"bad digits", f.admin, "POST", "/v1/users/frank/tokens", `{"digits":5}`, 400, "invalid_token_params"},
		{"bad algorithm", f.admin, "POST", "/v1/users/frank/tokens", `{"algorithm":"MD5"}`, 400, "invalid_algorithm"},
		{"bad type", f.admin, "POST", "/v1/users/frank/tokens", `{"type":"sms"}`, 400, "invalid_type"},
		{"huge period", f.admin, "POST", "/v1/users/frank/tokens", `{"period":99999999}`, 400, "invalid_token_params"},
		{"no token", "", "POST", "/v1/verify", `{"user":"frank","code":"12345678"}`, 401, "unauthenticated"},
		{"garbage token", "opk_nope", "POST", "/v1/verify", `{"user":"frank","code":"12345678"}`, 401, "unauthenticated"},
		{"unknown token", "opk_" + strings.Repeat("A", 43), "POST", "/v1/verify", `{"user":"frank","code":"12345678"}`, 401, "unauthenticated"},
		{"verifier creates user", verifier, "POST", "/v1/users", `{"id":"z"}`, 403, "forbidden"},
		{"issuer verifies", issuer, "POST", "/v1/verify", `{"user":"frank","code":"12345678"}`, 403, "forbidden"},
		{"issuer makes clients", issuer, "POST", "/v1/api-clients", `{"name":"x","scopes":["admin"]}`, 403, "forbidden"},
		{"short code", verifier, "POST", "/v1/verify", `{"user":"frank","code":"123"}`, 400, "malformed_code"},
		{"long code", verifier, "POST", "/v1/verify", `{"user":"frank","code":"12345678901"}`, 400, "malformed_code"},
		{"non-digit code", verifier, "POST", "/v1/verify", `{"user":"frank","code":"1234567a"}`, 400, "malformed_code"},
		{"code as number", verifier, "POST", "/v1/verify", `{"user":"frank","code":12345678}`, 400, "invalid_type"},
		{"unknown user verify", verifier, "POST", "/v1/verify", `{"user":"ghost","code":"12345678"}`, 401, "invalid_code"},
		{"wrong content type", f.admin, "POST", "/v1/users", "id=x", 415, "unsupported_media_type"},
		{"bad scope", f.admin, "POST", "/v1/api-clients", `{"name":"x","scopes":["root"]}`, 400, "invalid_scopes"},
		{"no such path", f.admin, "GET", "/v1/nothing", nil, 404, "not_found"},
		{"wrong method", f.admin, "PATCH", "/v1/users", nil, 405, "method_not_allowed"},
		{"bad limit", f.admin, "GET", "/v1/users?limit=0", nil, 400, "invalid_limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, err := f.st.GetUser(context.Background(), DefaultRealm, "frank")
			if err != nil {
				t.Fatal(err)
			}
			var r resp
			if c.name == "wrong content type" {
				req, err := http.NewRequest(c.method, f.hs.URL+c.path, strings.NewReader(c.body.(string)))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+c.token)
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				res, err := f.hs.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var body map[string]any
				if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				r = resp{status: res.StatusCode, body: body}
			} else {
				r = f.call(c.token, c.method, c.path, c.body)
			}
			if r.status != c.status || r.errCode() != c.code {
				t.Fatalf("got %d %q, want %d %q (%s)", r.status, r.errCode(), c.status, c.code, r.raw)
			}
			after, err := f.st.GetUser(context.Background(), DefaultRealm, "frank")
			if err != nil || after.Failures != before.Failures {
				t.Fatalf("bad input changed frank's failure counter %d -> %d", before.Failures, after.Failures)
			}
		})
	}
}

// TestOpenAPIMatchesRoutes fails when a route and the OpenAPI document disagree.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	r := f.call("", "GET", "/v1/openapi.json", nil)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(r.raw, &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi document: %v %q", err, doc.OpenAPI)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m, raw := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
			var op struct {
				Scopes []string `json:"x-outpost-scopes"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", m, p, err)
			}
			for _, rt := range f.srv.routes {
				if rt.method == strings.ToUpper(m) && rt.pattern == p {
					for _, s := range rt.scopes {
						if !slices.Contains(op.Scopes, s) {
							t.Errorf("%s %s: scope %s not documented", m, p, s)
						}
					}
				}
			}
		}
	}
	served := map[string]bool{}
	for _, rt := range f.srv.routes {
		k := rt.method + " " + rt.pattern
		served[k] = true
		if !documented[k] {
			t.Errorf("route %s is not in the OpenAPI document", k)
		}
	}
	for k := range documented {
		if !served[k] {
			t.Errorf("the OpenAPI document lists %s, which the server does not serve", k)
		}
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	if r := f.call("", "GET", "/healthz", nil); r.status != 200 {
		t.Fatal(r.status)
	}
	if r := f.call("", "GET", "/readyz", nil); r.status != 200 || r.body["engine"] != "sqlite" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	f.call("", "GET", "/v1/users", nil)
	r := f.call("", "GET", "/metrics", nil)
	if r.status != 200 || !strings.Contains(string(r.raw), "outpost_http_requests_total") {
		t.Fatalf("metrics: %d", r.status)
	}
	f.st.Close()
	if r := f.call("", "GET", "/readyz", nil); r.status != 503 {
		t.Fatalf("readyz with a closed store: %d", r.status)
	}
}

func TestAPIClientsAndPaging(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	for i := range 25 {
		f.mustCall(201, f.admin, "POST", "/v1/users", map[string]any{"id": fmt.Sprintf("u%02d", i)})
	}
	var all []string
	after := ""
	for {
		r := f.call(f.admin, "GET", "/v1/users?limit=10&after="+after, nil)
		for _, u := range r.body["users"].([]any) {
			all = append(all, u.(map[string]any)["id"].(string))
		}
		next, _ := r.body["next"].(string)
		if next == "" {
			break
		}
		after = next
	}
	if len(all) != 25 || !slices.IsSorted(all) {
		t.Fatalf("paging returned %d users: %v", len(all), all)
	}
	v := f.client("verifier")
	r := f.call(f.admin, "GET", "/v1/api-clients", nil)
	var id string
	for _, c := range r.body["api_clients"].([]any) {
		m := c.(map[string]any)
		if _, ok := m["token"]; ok {
			t.Fatal("list shows a token")
		}
		if m["name"] == "c-verifier" {
			id = m["id"].(string)
		}
	}
	if r := f.call(f.admin, "DELETE", "/v1/api-clients/"+id, nil); r.status != 204 {
		t.Fatalf("disable: %d %s", r.status, r.raw)
	}
	if r := f.call(v, "POST", "/v1/verify", map[string]string{"user": "u01", "code": "123456"}); r.status != 401 {
		t.Fatalf("disabled client still works: %d", r.status)
	}
	if r := f.call(f.admin, "DELETE", "/v1/users/u01", nil); r.status != 204 {
		t.Fatal(r.status)
	}
	if r := f.call(f.admin, "GET", "/v1/users/u01", nil); r.status != 404 {
		t.Fatal(r.status)
	}
}

// TestAuditTamperDetected alters an entry in the SQLite file and expects
// the chain check to name it.
func TestAuditTamperDetected(t *testing.T) {
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Skip("sqlite3 CLI not installed; tamper test runs in the store package")
	}
	path := filepath.Join(t.TempDir(), "o.db")
	f := newFixture(t, path)
	for i := range 5 {
		f.mustCall(201, f.admin, "POST", "/v1/users", map[string]any{"id": fmt.Sprintf("t%d", i)})
	}
	if out, err := exec.Command("sqlite3", path, "UPDATE audit_log SET subject='mallory' WHERE seq=3").CombinedOutput(); err != nil {
		t.Skipf("cannot edit the audit table directly (%v: %s)", err, out)
	}
	r := f.call(f.admin, "GET", "/v1/audit/verify", nil)
	if r.body["ok"] != false || r.body["broken_at"].(float64) != 3 {
		t.Fatalf("tamper not found: %s", r.raw)
	}
}

// TestParallelGuessesMeetTheLockout: a burst of parallel wrong codes for one
// user is evaluated one by one, so it gets no more guesses than the lockout allows.
func TestParallelGuessesMeetTheLockout(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	verifier := f.client("verifier")
	uri := f.enrol("kate", map[string]any{})
	wrong := "000000"
	for _, off := range []int{-1, 0, 1} {
		if f.codeAt(uri, off) == wrong {
			wrong = "111111"
		}
	}
	const n = 60
	statuses := parallelStatuses(n, func() resp {
		return f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "kate", "code": wrong})
	})
	if statuses[401] > f.srv.cfg.Policy.MaxFailures || statuses[401]+statuses[429] != n {
		t.Fatalf("%d parallel guesses: %v; at most %d may be evaluated", n, statuses, f.srv.cfg.Policy.MaxFailures)
	}
}

// parallelStatuses makes n calls at once and counts their statuses.
func parallelStatuses(n int, call func() resp) map[int]int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := call()
			mu.Lock()
			statuses[r.status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return statuses
}

// TestReplayIsNoPINOracle: a used code answers "replayed" whether the PIN is
// right or wrong, and a malformed code is refused before the user is looked up.
func TestReplayIsNoPINOracle(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	verifier := f.client("verifier")
	uri := f.enrol("liam", map[string]any{})
	remember("604918273645")
	f.mustCall(204, f.admin, "PUT", "/v1/users/liam/pin", map[string]string{"pin": "604918273645"})
	f.clock.Add(30 * time.Second)
	code := f.codeAt(uri, 0)
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "liam", "code": code, "pin": "604918273645"}); r.status != 200 {
		t.Fatalf("first use: %d %s", r.status, r.raw)
	}
	for _, p := range []string{"604918273645", "111111111111"} {
		r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "liam", "code": code, "pin": p})
		if r.status != 401 || r.errCode() != "replayed" {
			t.Fatalf("replay with pin %.2s…: %d %s (the answer must not depend on the PIN)", p, r.status, r.raw)
		}
	}
	for _, user := range []string{"liam", "nobody-at-all"} {
		if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": user, "code": "12"}); r.status != 400 || r.errCode() != "malformed_code" {
			t.Fatalf("malformed code for %s: %d %s", user, r.status, r.raw)
		}
	}
}
