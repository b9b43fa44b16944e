package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/courierproto"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/otp"
)

// secrets collects every secret the tests hand to the server; TestMain scans
// all server logs for them at the end of the run.
var (
	secretsMu sync.Mutex
	secrets   []string
	logBuf    proctest.Buffer
)

func remember(s ...string) {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	secrets = append(secrets, s...)
}

func TestMain(m *testing.M) {
	code := m.Run()
	logs := logBuf.String()
	if code == 0 {
		if logs == "" {
			fmt.Println("log scan: no logs captured")
			code = 1
		}
		for _, s := range secrets {
			if len(s) >= 8 && strings.Contains(logs, s) {
				fmt.Printf("log scan: a secret (%d chars, starts %.2s…) appears in the server logs\n", len(s), s)
				code = 1
			}
		}
	}
	os.Exit(code)
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	t      *testing.T
	srv    *Server
	hs     *httptest.Server
	st     store.Store
	clock  *fakeClock
	admin  string
	master *keys.Master
}

// engines returns the DSNs to run a test against: SQLite always, PostgreSQL
// when OUTPOST_TEST_POSTGRES_DSN is set.
func engines(t *testing.T) map[string]func(t *testing.T) string {
	m := map[string]func(t *testing.T) string{
		"sqlite": func(t *testing.T) string { return filepath.Join(t.TempDir(), "outpost.db") },
	}
	if os.Getenv("OUTPOST_TEST_POSTGRES_DSN") != "" {
		m["postgres"] = postgresDSN
	}
	return m
}

func newFixture(t *testing.T, dsn string) *fixture {
	t.Helper()
	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	ck := &fakeClock{t: time.Date(2031, 11, 23, 12, 0, 0, 0, time.UTC)} // years ahead: no test may lean on the wall clock
	logger := slog.New(slog.NewJSONHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pol := online.DefaultPolicy
	s, err := New(Config{Store: st, Master: m, Policy: pol, Logger: logger, Now: ck.Now, SiteKDF: testSiteKDF, DeliveryCosts: courierproto.TestCosts})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Bootstrap(context.Background())
	if err != nil || tok == "" {
		t.Fatalf("bootstrap: %q %v", tok, err)
	}
	remember(tok)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return &fixture{t: t, srv: s, hs: hs, st: st, clock: ck, admin: tok, master: m}
}

type resp struct {
	status int
	body   map[string]any
	raw    []byte
	header http.Header
}

func (r resp) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (f *fixture) call(token, method, path string, body any) resp {
	f.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, f.hs.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := f.hs.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	out := resp{status: res.StatusCode, raw: raw, header: res.Header}
	if len(raw) > 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			f.t.Fatalf("%s %s: non-JSON body %q", method, path, raw)
		}
	}
	if out.status >= 400 && out.errCode() == "" && path != "/metrics" {
		f.t.Fatalf("%s %s: error %d without {\"error\":{\"code\"}} body: %s", method, path, out.status, raw)
	}
	return out
}

// mustCall is call for a request the test relies on: any answer but want fails the test.
func (f *fixture) mustCall(want int, token, method, path string, body any) resp {
	f.t.Helper()
	r := f.call(token, method, path, body)
	if r.status != want {
		f.t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.raw, want)
	}
	return r
}

func (f *fixture) client(scopes ...string) string {
	f.t.Helper()
	r := f.call(f.admin, "POST", "/v1/api-clients", map[string]any{"name": "c-" + strings.Join(scopes, "-"), "scopes": scopes})
	if r.status != 201 {
		f.t.Fatalf("create client: %d %s", r.status, r.raw)
	}
	tok := r.body["token"].(string)
	remember(tok)
	return tok
}

// enrol creates user and an active token, returning its otpauth URI.
func (f *fixture) enrol(user string, params map[string]any) string {
	f.t.Helper()
	if r := f.call(f.admin, "POST", "/v1/users", map[string]any{"id": user}); r.status != 201 && r.status != 409 {
		f.t.Fatalf("create user: %d %s", r.status, r.raw)
	}
	r := f.call(f.admin, "POST", "/v1/users/"+user+"/tokens", params)
	if r.status != 201 {
		f.t.Fatalf("create token: %d %s", r.status, r.raw)
	}
	uri := r.body["otpauth_uri"].(string)
	k := f.key(uri)
	remember(otp.EncodeSecret(k.Secret), fmt.Sprintf("%x", k.Secret))
	code := f.codeAt(uri, 0)
	tid := r.body["id"].(string)
	if r := f.call(f.admin, "POST", "/v1/users/"+user+"/tokens/"+tid+"/confirm", map[string]string{"code": code}); r.status != 200 {
		f.t.Fatalf("confirm: %d %s", r.status, r.raw)
	}
	return uri
}

// key parses an otpauth URI the server gave.
func (f *fixture) key(uri string) *otp.Key {
	f.t.Helper()
	k, err := otp.ParseURI(uri)
	if err != nil {
		f.t.Fatal(err)
	}
	return k
}

// codeAt returns the code for uri at the fixture's clock plus offset steps (TOTP) or at counter offset (HOTP).
func (f *fixture) codeAt(uri string, offset int) string {
	f.t.Helper()
	k := f.key(uri)
	var c uint64
	if k.Type == otp.TypeTOTP {
		c = uint64(int64(k.Step(f.clock.Now())) + int64(offset))
	} else {
		c = uint64(offset)
	}
	s, err := k.CodeAt(k.Secret, c)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func pyotpAvailable(t *testing.T) bool {
	if err := exec.Command("/usr/bin/python3", "-c", "import pyotp").Run(); err != nil {
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatalf("pyotp is required (apt-get install python3-pyotp): %v", err)
		}
		t.Skip("pyotp not installed (apt-get install python3-pyotp); skipping the authenticator interop check")
		return false
	}
	return true
}

// pyotpCode asks Debian's pyotp for the code of uri at Unix time t.
func pyotpCode(t *testing.T, uri string, at time.Time) string {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c",
		"import sys,pyotp; print(pyotp.parse_uri(sys.argv[1]).at(int(sys.argv[2])))", uri, fmt.Sprint(at.Unix())).Output()
	if err != nil {
		t.Fatalf("pyotp: %v", err)
	}
	return strings.TrimSpace(string(out))
}
