package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/pin"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/otp"
)

// fuzzServer is a real server on SQLite for the fuzzers, called through
// its root handler without a network in between. Nothing it does per
// request may be heavy:
//
//   - bundles are made with a cheap KDF under the default floor, so every
//     bundle the fuzzing client (issuer and verifier, never admin: it may
//     not override the floor) asks for is refused by the plan, before any
//     KDF work; the setup checks it;
//   - PINs are hashed at argon2id's smallest cost while a fuzzer runs
//     (pin.Cost is restored afterwards), since PUT …/pin is fuzzed.
type fuzzServer struct {
	srv    *Server
	h      http.Handler
	st     store.Store
	admin  string            // admin scope
	client string            // issuer and verifier scopes
	tokens map[string]string // user → token id, for path parameters
}

func newFuzzServer(f testing.TB) *fuzzServer {
	old := pin.Cost
	pin.Cost.Time, pin.Cost.MemoryKiB, pin.Cost.Threads = 1, 8, 1
	f.Cleanup(func() { pin.Cost = old })
	st, err := store.Open(context.Background(), filepath.Join(f.TempDir(), "outpost.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	m, err := keys.MasterFromBytes([]byte("outpost server fuzzing master k!"))
	if err != nil {
		f.Fatal(err)
	}
	ck := &fakeClock{t: time.Date(2031, 11, 23, 12, 0, 0, 0, time.UTC)}
	logger := slog.New(slog.NewJSONHandler(&fuzzLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(Config{Store: st, Master: m, Policy: online.DefaultPolicy, Logger: logger, Now: ck.Now,
		BundleKDF: cost.KDF{Time: 1, MemoryKiB: 64, Threads: 1},
		// Site packages and key files at the smallest sealing cost allowed.
		SiteKDF: keys.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1},
		// Audit export and prune write and read real segment files.
		AuditSegmentDir: filepath.Join(f.TempDir(), "segments"),
		// A roster that vouches for nothing: enrolment is checked up to it.
		Vouches: noVouches{}})
	if err != nil {
		f.Fatal(err)
	}
	admin, err := s.Bootstrap(context.Background())
	if err != nil {
		f.Fatal(err)
	}
	fs := &fuzzServer{srv: s, h: s.Handler(), st: st, admin: admin}
	remember(admin)
	var client struct{ Token string }
	if err := json.Unmarshal(fs.must(f, "POST", "/v1/api-clients", admin, `{"name":"fuzz","scopes":["issuer","verifier"]}`), &client); err != nil {
		f.Fatal(err)
	}
	fs.client = client.Token
	remember(fs.client)
	// alice has a confirmed HOTP token, bob a TOTP token and a PIN.
	var tok struct {
		ID  string `json:"id"`
		URI string `json:"otpauth_uri"`
	}
	fs.must(f, "POST", "/v1/users", fs.client, `{"id":"alice"}`)
	if err := json.Unmarshal(fs.must(f, "POST", "/v1/users/alice/tokens", fs.client, `{"type":"hotp"}`), &tok); err != nil {
		f.Fatal(err)
	}
	k, err := otp.ParseURI(tok.URI)
	if err != nil {
		f.Fatal(err)
	}
	remember(otp.EncodeSecret(k.Secret), fmt.Sprintf("%x", k.Secret))
	code, err := k.CodeAt(k.Secret, 0)
	if err != nil {
		f.Fatal(err)
	}
	fs.must(f, "POST", "/v1/users/alice/tokens/"+tok.ID+"/confirm", fs.client, `{"code":"`+code+`"}`)
	fs.tokens = map[string]string{"alice": tok.ID}
	fs.must(f, "POST", "/v1/users", fs.client, `{"id":"bob"}`)
	if err := json.Unmarshal(fs.must(f, "POST", "/v1/users/bob/tokens", fs.client, `{}`), &tok); err != nil {
		f.Fatal(err)
	}
	if k, err = otp.ParseURI(tok.URI); err != nil {
		f.Fatal(err)
	}
	remember(otp.EncodeSecret(k.Secret), fmt.Sprintf("%x", k.Secret))
	if code, err = k.CodeAt(k.Secret, k.Step(ck.Now())); err != nil {
		f.Fatal(err)
	}
	fs.must(f, "POST", "/v1/users/bob/tokens/"+tok.ID+"/confirm", fs.client, `{"code":"`+code+`"}`)
	fs.must(f, "PUT", "/v1/users/bob/pin", fs.client, `{"pin":"2468"}`)
	// A device to revoke; dev-new gets enrolment codes.
	pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)).Public().(ed25519.PublicKey)
	body, err := json.Marshal(map[string]string{"id": "dev-gone", "public_key": string(keys.MarshalPublicPEM(pub))})
	if err != nil {
		f.Fatal(err)
	}
	fs.must(f, "POST", "/v1/devices", admin, string(body))
	// No bundle reaches the KDF.
	if status, body := fs.do("POST", "/v1/offline/bundles", fs.client, `{"user":"alice","device":"dev-gone","count":1}`); status != http.StatusUnprocessableEntity {
		f.Fatalf("a bundle was not refused below the floor: %d %s", status, body)
	}
	return fs
}

// noVouches is a roster that holds no vouch.
type noVouches struct{}

func (noVouches) Live(context.Context, string, string, []byte) error { return errors.New("no vouch") }
func (noVouches) Enrolled(context.Context, string, string, []byte) error {
	return errors.New("no vouch")
}

// must sends a setup request, which must succeed.
func (fs *fuzzServer) must(t testing.TB, method, path, token, body string) []byte {
	t.Helper()
	status, answer := fs.do(method, path, token, body)
	if status >= 300 {
		t.Fatalf("setup: %s %s: %d %s", method, path, status, answer)
	}
	return answer
}

// do sends one request through the server's root handler.
func (fs *fuzzServer) do(method, path, token, body string) (int, []byte) {
	return fs.doOn(fs.h, method, path, token, body)
}

// doOn sends one request through h (the API's or the device listener's handler).
func (fs *fuzzServer) doOn(h http.Handler, method, path, token, body string) (int, []byte) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// fuzzLog keeps the first MiB of the fuzz servers' logs for TestMain's
// secret scan and drops the rest: a fuzzer logs millions of requests.
var fuzzLog cappedWriter

type cappedWriter struct {
	mu sync.Mutex
	n  int
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n < 1<<20 {
		w.n += len(p)
		logBuf.Write(p)
	}
	return len(p), nil
}

// fuzzRoute is one JSON endpoint of FuzzHandlers.
type fuzzRoute struct {
	method, path, token string
	h                   http.Handler
}

// routes lists every route that takes a JSON body (POST and PUT), from the
// server's own route table, so that a new endpoint is fuzzed without
// anyone remembering to, with its path parameters filled in and the token
// of the scope it needs. A route with a parameter it cannot fill is an
// error.
func (fs *fuzzServer) routes() ([]fuzzRoute, error) {
	var out []fuzzRoute
	for _, rt := range fs.srv.routes {
		if rt.raw != nil || (rt.method != "POST" && rt.method != "PUT") {
			continue
		}
		path := rt.pattern
		switch {
		case strings.HasPrefix(path, "/v1/users/{id}"):
			path = strings.Replace(strings.Replace(path, "{id}", "alice", 1), "{tid}", fs.tokens["alice"], 1)
		case path == "/v1/devices/{id}/enrolment":
			path = "/v1/devices/dev-new/enrolment"
		case path == "/v1/devices/{id}/revoke":
			path = "/v1/devices/dev-gone/revoke"
		case strings.HasPrefix(path, "/v1/deliveries/{id}"):
			path = strings.Replace(path, "{id}", "parcel-1", 1)
		case strings.HasPrefix(path, "/v1/outbox/{id}"):
			path = strings.Replace(path, "{id}", "ob-0000", 1)
		case strings.HasPrefix(path, "/v1/roster/{serial}"):
			path = strings.Replace(path, "{serial}", "SN-1", 1)
		case strings.HasPrefix(path, "/v1/sites/scopes/{scope}"):
			path = strings.Replace(path, "{scope}", "north", 1)
		case strings.HasPrefix(path, "/v1/ca/devices/{serial}"):
			path = strings.Replace(path, "{serial}", "SN-1", 1)
		}
		if strings.Contains(path, "{") {
			return nil, fmt.Errorf("FuzzHandlers cannot fill the parameters of %s %s: add it to fuzzServer.routes", rt.method, rt.pattern)
		}
		tok := ""
		switch {
		case len(rt.scopes) == 1 && rt.scopes[0] == store.ScopeAdmin:
			tok = fs.admin
		case len(rt.scopes) > 0:
			tok = fs.client
		}
		h := fs.h
		if rt.on == onDevice { // the device listener's routes (onboarding.go)
			h = fs.srv.DeviceHandler()
		}
		out = append(out, fuzzRoute{rt.method, path, tok, h})
	}
	return out, nil
}

// checkAnswer is what every answer must be: never a 5xx, and for an error
// a JSON body {"error":{"code":"…","message":"…"}}.
func checkAnswer(t *testing.T, what string, status int, body []byte) {
	t.Helper()
	if status >= 500 {
		t.Fatalf("%s: status %d: %s", what, status, body)
	}
	if status < 400 {
		if len(body) > 0 && !json.Valid(body) {
			t.Fatalf("%s: status %d with a body that is not JSON: %q", what, status, body)
		}
		return
	}
	var e struct {
		Error *struct {
			Code    *string `json:"code"`
			Message *string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Code == nil || *e.Error.Code == "" || e.Error.Message == nil {
		t.Fatalf("%s: status %d without a {\"error\":{\"code\",\"message\"}} body: %q", what, status, body)
	}
}

// fuzzSeed is one of FuzzHandlers' seeds: a route's index in routes (the
// order of the server's route table, which the checked-in corpus follows)
// and a body.
type fuzzSeed struct {
	route uint8
	body  string
}

// fuzzHandlerSeeds gives every route "{}" and the good bodies below, found
// by the end of the route's path.
func fuzzHandlerSeeds(routes []fuzzRoute) []fuzzSeed {
	seeds := map[string][]string{
		"/v1/users":                       {`{"id":"carol","display_name":"Carol"}`},
		"/v1/users/alice/pin":             {`{"pin":"1357"}`},
		"/v1/users/alice/tokens":          {`{"type":"totp","algorithm":"SHA256","digits":8,"period":60,"seed":"random"}`, `{"type":"hotp"}`},
		"/confirm":                        {`{"code":"123456"}`},
		"/resync":                         {`{"code1":"123456","code2":"654321"}`},
		"/v1/verify":                      {`{"user":"alice","code":"123456"}`, `{"user":"bob","code":"123456","pin":"2468"}`},
		"/v1/api-clients":                 {`{"name":"radius","scopes":["verifier"]}`},
		"/v1/offline/bundles":             {`{"user":"alice","device":"dev-gone","count":5,"secrets":{"door":"4711"}}`, `{"user":"bob","device":"dev-gone","from":"2026-11-23T12:00:00Z","until":"2026-11-23T13:00:00Z","pin":"2468"}`},
		"/v1/offline/login":               {`{"user":"bob","device":"dev-gone","code":"123456","pin":"2468"}`},
		"/v1/devices":                     {`{"id":"dev-2","public_key":"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAbm9wZW5vcGVub3Blbm9wZW5vcGVub3Blbm9wZW5vcGU=\n-----END PUBLIC KEY-----\n"}`},
		"/enrolment":                      {`{"ttl_seconds":600}`},
		"/revoke":                         {`{"burn_hotp":true}`},
		"/v1/devices/enrol":               {`{"device":"dev-new","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","code":"ABCD-EFGH","sig":"AAAA"}`},
		"/v1/sync":                        {`{"outpost_artifact":1,"kid":"ed25519:0000000000000000","payload":"e30=","sig":"AAAA"}`},
		"/v1/sites/scopes/north":          {`{"digits":6,"period":30}`},
		"/provision":                      {`{"site":"cab-1","passphrase":"a package passphrase"}`},
		"/credential":                     {`{"tech":"tech-1","epoch":"current"}`},
		"/v1/keys/subject-export":         {`{"subject":"tech-1","epoch":0,"passphrase":"a key file passphrase"}`},
		"/v1/deliveries":                  {`{"id":"parcel-1","recipient":{"email":"ana@example.org"},"device":"dev-2","not_after":"2031-11-24T12:00:00Z","mode":"hash"}`},
		"/reassign":                       {`{"device":"dev-3"}`},
		"/v1/audit/export":                {`{"through":3}`},
		"/v1/audit/prune":                 {`{"before":5}`, `{"older_than":"30d"}`},
		"/v1/webhook":                     {`{"url":"https://shipper.example/hook"}`, `{"url":"http://127.0.0.1:9/hook","secret":"0123456789abcdef"}`},
		"/v1/roster/expected":             {`{"serials":["SN-1","SN-2"],"order":"PO-7"}`},
		"/v1/roster/vouchers":             {`{"device":"dev-2","allowed":true}`},
		"/withdraw":                       {`{"reason":"stolen"}`},
		"/approve":                        {`{"vouch":"dev-2:7"}`},
		"/reject":                         {`{}`},
		"/v1/enrol/challenge":             {`{"realm":"default","serial":"SN-1"}`},
		"/v1/enrol":                       {`{"serial":"SN-1","nonce":"00","csr":"MAA=","signature":"MAA="}`},
		"/v1/device/renew":                {`{"csr":"MAA="}`},
		"/v1/ca/devices/SN-1/revoke":      {`{"reason":"lost"}`},
		"/device-confirm":                 {`{"outpost_artifact":1,"kid":"ed25519:0000000000000000","payload":"e30=","sig":"AAAA"}`},
		"/v1/deliveries/parcel-1/confirm": {`{"code":"582039170","device":"dev-2"}`, `{"code":"5820 3917 1","device":"dev-2"}`},
	}
	var out []fuzzSeed
	for i, rt := range routes {
		out = append(out, fuzzSeed{uint8(i), `{}`})
		for suffix, bodies := range seeds {
			if strings.HasSuffix(rt.path, suffix) {
				for _, b := range bodies {
					out = append(out, fuzzSeed{uint8(i), b})
				}
			}
		}
	}
	return out
}

// FuzzHandlers sends fuzzed bodies to every POST and PUT endpoint of a
// real server, chosen by the first argument, and checks that no body makes
// a 5xx and that every error is in the API's JSON form. The server's state
// carries over between executions (users, clients and devices are created,
// failures lock users out): that is what a server sees too. The bundle
// endpoints are fuzzed up to the plan, which refuses every bundle below
// the floor (see fuzzServer): their KDF work is for the bundle tests.
func FuzzHandlers(f *testing.F) {
	fs := newFuzzServer(f)
	routes, err := fs.routes()
	if err != nil {
		f.Fatal(err)
	}
	for _, sd := range fuzzHandlerSeeds(routes) {
		f.Add(sd.route, []byte(sd.body))
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := routes[int(route)%len(routes)]
		status, answer := fs.doOn(rt.h, rt.method, rt.path, rt.token, string(body))
		checkAnswer(t, rt.method+" "+rt.path, status, answer)
	})
}

// fuzzEnrolSeeds are FuzzEnrol's seeds: a good enrolment, a bad
// signature, an active device, another key, fields missing.
var fuzzEnrolSeeds = []string{
	`{"device":"@device","public_key":"@pub","code":"@code","sig":"@sig"}`,
	`{"device":"@device","public_key":"@pub","code":"@code","sig":"AAAA"}`,
	`{"device":"dev-gone","public_key":"@pub","code":"@code","sig":"@sig"}`,
	`{"device":"@device","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","code":"ABCD-EFGH-IJKL","sig":"@sig"}`,
	`{"device":"@device"}`,
}

// enrolSlot is the pending device FuzzEnrol's inputs may enrol: its id,
// its enrolment code and the key it enrols with.
type enrolSlot struct {
	n      int
	device string
	code   string
	key    ed25519.PrivateKey
}

// FuzzEnrol fuzzes the enrolment request, POST /v1/devices/enrol: the one
// JSON decoder of the server that anyone may call without a token. Inputs
// may name the pending device, its code, the enrolling key and a good
// signature by the placeholders "@device", "@code", "@pub" and "@sig"
// (the code is random, so no checked-in input could hold it). Besides the
// answer's form, a 200 must come only for a body whose signature verifies
// over its device, key and code, and must activate that device with that
// key; a refusal must leave the device pending. After each enrolment the
// harness opens a new pending device, so that enrolling stays reachable.
func FuzzEnrol(f *testing.F) {
	for _, b := range fuzzEnrolSeeds {
		f.Add([]byte(b))
	}
	fs := newFuzzServer(f)
	slot := fs.newSlot(f, 1)
	f.Fuzz(func(t *testing.T, body []byte) {
		pub := slot.key.Public().(ed25519.PublicKey)
		sig := ed25519.Sign(slot.key, syncproto.EnrolMessage(slot.device, pub, slot.code))
		for k, v := range map[string]any{`"@device"`: slot.device, `"@code"`: slot.code, `"@pub"`: []byte(pub), `"@sig"`: sig} {
			j, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			body = bytes.ReplaceAll(body, []byte(k), j)
		}
		status, answer := fs.do("POST", "/v1/devices/enrol", "", string(body))
		checkAnswer(t, "POST /v1/devices/enrol", status, answer)
		d, err := fs.st.(store.SyncStore).GetDevice(context.Background(), slot.device)
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusOK {
			if d.Status != store.DevicePending {
				t.Fatalf("refused (%d %s) but device %s is %s", status, answer, slot.device, d.Status)
			}
			return
		}
		var e syncproto.Enrol
		if err := json.Unmarshal(body, &e); err != nil || e.Device != slot.device ||
			!ed25519.Verify(e.PublicKey, syncproto.EnrolMessage(e.Device, e.PublicKey, e.Code), e.Sig) {
			t.Fatalf("enrolled %s with a body whose signature does not verify: %s", slot.device, body)
		}
		if d.Status != store.DeviceActive || !bytes.Equal(d.PublicKey, e.PublicKey) {
			t.Fatalf("enrolment answered 200 but the device is %+v", d)
		}
		slot = fs.newSlot(t, slot.n+1)
	})
}

// newSlot makes pending device dev-enrol-N with a fresh code, and the key
// it enrols with (derived from N: an enrolled key cannot enrol again).
func (fs *fuzzServer) newSlot(t testing.TB, n int) enrolSlot {
	t.Helper()
	s := enrolSlot{n: n, device: fmt.Sprintf("dev-enrol-%d", n)}
	status, body := fs.do("POST", "/v1/devices/"+s.device+"/enrolment", fs.admin, `{}`)
	var out struct{ Code string }
	if status != http.StatusCreated || json.Unmarshal(body, &out) != nil {
		t.Fatalf("enrolment code for %s: %d %s", s.device, status, body)
	}
	s.code = out.Code
	seed := sha256.Sum256([]byte(s.device))
	s.key = ed25519.NewKeyFromSeed(seed[:])
	return s
}
