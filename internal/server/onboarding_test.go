package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/enrol"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
)

// fakeRoster is a fake of the roster's Vouches: serial → vouched key.
type fakeRoster struct {
	mu        sync.Mutex
	keys      map[string][]byte
	withdrawn map[string]bool
}

func (r *fakeRoster) Live(_ context.Context, realm, serial string, spki []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.keys[realm+"/"+serial]
	switch {
	case !ok:
		return errors.New("no vouch for this serial")
	case r.withdrawn[realm+"/"+serial]:
		return errors.New("the vouch was withdrawn")
	case string(k) != string(spki):
		return errors.New("key mismatch")
	}
	return nil
}

func (r *fakeRoster) Enrolled(context.Context, string, string, []byte) error { return nil }

func (r *fakeRoster) vouch(t testing.TB, serial string) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(k.Public())
	r.mu.Lock()
	r.keys["default/"+serial] = spki
	r.mu.Unlock()
	return k
}

// onboardFixture is a server with a fake roster: the API on httptest, and
// the device listener on a real TLS 1.3 socket, as `outpost serve
// --device-addr` runs it.
type onboardFixture struct {
	*fixture
	roster *fakeRoster
	device string // https://127.0.0.1:PORT
	roots  *x509.CertPool
	rootPE []byte
}

func newOnboardFixture(t *testing.T, ck *fakeClock, vouches bool, opts ...func(*Config)) *onboardFixture {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "outpost.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeRoster{keys: map[string][]byte{}, withdrawn: map[string]bool{}}
	cfg := Config{Store: st, Master: m, Policy: online.DefaultPolicy, Now: ck.Now, SiteKDF: testSiteKDF,
		Logger: slog.New(slog.NewJSONHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if vouches {
		cfg.Vouches = r
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Bootstrap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	remember(tok)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	tc, err := s.DeviceTLSConfig([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dev := &http.Server{Handler: s.DeviceHandler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	go dev.Serve(tls.NewListener(ln, tc))
	t.Cleanup(func() { dev.Close() })
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.CARootPEM()) {
		t.Fatal("root PEM")
	}
	f := &fixture{t: t, srv: s, hs: hs, st: st, clock: ck, admin: tok, master: m}
	return &onboardFixture{fixture: f, roster: r, device: "https://" + ln.Addr().String(), roots: roots, rootPE: s.CARootPEM()}
}

func (o *onboardFixture) client(key crypto.Signer) *enrol.Client {
	return &enrol.Client{Server: o.device, Roots: o.roots, Key: key, Now: o.clock.Now}
}

func withCert(c *enrol.Client, a enrol.Answer, key crypto.Signer) *enrol.Client {
	cc := *c
	var chain [][]byte
	rest := []byte(a.Certificate)
	for {
		var der []byte
		der, rest = pemNext(rest)
		if der == nil {
			break
		}
		chain = append(chain, der)
	}
	cc.Certificate = &tls.Certificate{Certificate: chain, PrivateKey: key}
	return &cc
}

func refusedWith(t *testing.T, err error, code string) {
	t.Helper()
	var se *enrol.ServerError
	if !errors.As(err, &se) || se.Code != code {
		t.Fatalf("got %v, want a refusal %s", err, code)
	}
}

// TestDeviceOnboardingOverTLS runs the device's story against the real
// listener: first contact, mutual TLS, renewal (also after expiry, within
// the grace), revocation refused at the handshake.
func TestDeviceOnboardingOverTLS(t *testing.T) {
	o := newOnboardFixture(t, &fakeClock{t: time.Date(2031, 11, 23, 12, 0, 0, 0, time.UTC)}, true)
	ctx := context.Background()
	key := o.roster.vouch(t, "SN-0042")
	c := o.client(key)
	a, err := c.Enrol(ctx, "SN-0042")
	if err != nil {
		t.Fatal(err)
	}
	dc := withCert(c, a, key)
	who, err := dc.Whoami(ctx)
	if err != nil || !strings.Contains(string(who), `"serial":"SN-0042"`) {
		t.Fatalf("whoami: %s %v", who, err)
	}
	// Without a certificate: the handshake passes (first contact needs
	// it), the route refuses.
	if _, err := c.Whoami(ctx); err == nil {
		t.Fatal("whoami without a certificate succeeded")
	} else {
		refusedWith(t, err, "no_certificate")
	}

	// Renewal before expiry, and within the grace after it.
	o.clock.Add(23 * time.Hour)
	a2, err := dc.Renew(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dc = withCert(c, a2, key)
	o.clock.Add(48 * time.Hour) // expired a day ago
	if _, err := dc.Whoami(ctx); err == nil {
		t.Fatal("whoami with an expired certificate succeeded")
	} else {
		refusedWith(t, err, "expired")
	}
	a3, err := dc.Renew(ctx)
	if err != nil {
		t.Fatalf("renewal within the grace: %v", err)
	}
	dc = withCert(c, a3, key)
	if _, err := dc.Whoami(ctx); err != nil {
		t.Fatalf("whoami after renewal: %v", err)
	}

	// The admin view and revocation, through the API.
	r := o.mustCall(200, o.admin, "GET", "/v1/ca/devices/SN-0042", nil)
	if r.body["status"] != "active" || r.body["certificates"] != float64(3) {
		t.Fatalf("device: %s", r.raw)
	}
	o.mustCall(200, o.admin, "GET", "/v1/ca/certs?device=SN-0042", nil)
	o.mustCall(200, o.admin, "POST", "/v1/ca/devices/SN-0042/revoke", nil)
	o.mustCall(409, o.admin, "POST", "/v1/ca/devices/SN-0042/revoke", nil)
	o.mustCall(404, o.admin, "POST", "/v1/ca/devices/SN-9/revoke", nil)
	if _, err := dc.Whoami(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a revoked device's handshake: %v", err)
	}
	if _, err := dc.Renew(ctx); err == nil {
		t.Fatal("a revoked device renewed")
	}
	metrics := string(o.call("", "GET", "/metrics", nil).raw)
	for _, m := range []string{`outpost_onboarding_enrolments_total{path="json"} 1`, `outpost_onboarding_renewals_total{when="grace"} 1`,
		`outpost_onboarding_refusals_total{reason="revoked"}`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
}

// TestRelayedProofRefused is the attacker's test of first contact: a
// proof made on one connection (the device's, exporter A) is sent on
// another (the relay's, exporter B). The device's own key signed it.
func TestRelayedProofRefused(t *testing.T) {
	o := newOnboardFixture(t, &fakeClock{t: time.Date(2031, 11, 23, 12, 0, 0, 0, time.UTC)}, true)
	key := o.roster.vouch(t, "SN-1")
	dial := func() *tls.Conn {
		c, err := tls.Dial("tcp", strings.TrimPrefix(o.device, "https://"), &tls.Config{RootCAs: o.roots, ServerName: "127.0.0.1", Time: o.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	relay, device := dial(), dial()
	readers := map[*tls.Conn]*bufio.Reader{relay: bufio.NewReader(relay), device: bufio.NewReader(device)}
	post := func(c *tls.Conn, path string, body any) (int, map[string]any) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", "https://device"+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(readers[c], req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	st, ch := post(relay, "/v1/enrol/challenge", map[string]string{"serial": "SN-1"})
	if st != 201 {
		t.Fatalf("challenge: %d %v", st, ch)
	}
	nonce, _ := hex.DecodeString(ch["nonce"].(string))
	cs := device.ConnectionState()
	expDevice, _ := cs.ExportKeyingMaterial(enrol.ExporterLabel, nil, enrol.ExporterLen)
	sig, _ := enrol.SignProof(key, nonce, expDevice)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "SN-1"}}, key)
	st, out := post(relay, "/v1/enrol", map[string]any{"serial": "SN-1", "nonce": ch["nonce"], "csr": csr, "signature": sig})
	if st != 401 || out["error"].(map[string]any)["code"] != "not_bound" {
		t.Fatalf("relayed proof: %d %v", st, out)
	}
	if cs, _ := o.srv.onboard.svc.Certs(context.Background(), "default", "", "", 10); len(cs) != 0 {
		t.Fatal("a relayed proof issued a certificate")
	}
}

// TestServerRosterAnswers: without a roster of its own the server asks the
// roster sync fills (internal/roster), which holds no vouch here: refused,
// clearly.
func TestServerRosterAnswers(t *testing.T) {
	o := newOnboardFixture(t, &fakeClock{t: time.Date(2031, 11, 23, 12, 0, 0, 0, time.UTC)}, false)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err := o.client(key).Enrol(context.Background(), "SN-1")
	refusedWith(t, err, "no_vouch")
	if !strings.Contains(err.Error(), "no vouch") {
		t.Errorf("message: %v", err)
	}
	if r := o.call("", "GET", "/v1/ca/root", nil); r.status != 200 || !strings.Contains(string(r.raw), "BEGIN CERTIFICATE") {
		t.Errorf("root on the API listener: %d", r.status)
	}
}

// pemNext returns the DER of the next CERTIFICATE block of b and the rest.
func pemNext(b []byte) ([]byte, []byte) {
	blk, rest := pem.Decode(b)
	if blk == nil {
		return nil, nil
	}
	return blk.Bytes, rest
}

// TestRevokedDeviceCannotResume is the attacker's test of revocation at
// the handshake: a device (its own key and certificate) that resumes a TLS
// 1.3 session made before its revocation, so that no certificate is sent
// again, is still refused: the device listener checks the device at every
// handshake, resumptions included, and at every request.
func TestRevokedDeviceCannotResume(t *testing.T) {
	o := newOnboardFixture(t, &fakeClock{t: time.Date(2031, 11, 23, 12, 0, 0, 0, time.UTC)}, true)
	key := o.roster.vouch(t, "SN-R")
	a, err := o.client(key).Enrol(context.Background(), "SN-R")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: o.roots, ServerName: "127.0.0.1", Time: o.clock.Now, MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{*withCert(o.client(key), a, key).Certificate}, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	// whoami dials a new connection, asks GET /v1/device/whoami and says
	// whether the session was resumed and the request answered 200.
	whoami := func() (resumed bool, status int, err error) {
		c, err := tls.Dial("tcp", strings.TrimPrefix(o.device, "https://"), cfg)
		if err != nil {
			return false, 0, err
		}
		defer c.Close()
		req, _ := http.NewRequest("GET", "https://device/v1/device/whoami", nil)
		if err := req.Write(c); err != nil {
			return c.ConnectionState().DidResume, 0, err
		}
		res, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return c.ConnectionState().DidResume, 0, err
		}
		res.Body.Close()
		return c.ConnectionState().DidResume, res.StatusCode, nil
	}
	if _, st, err := whoami(); err != nil || st != 200 {
		t.Fatalf("first whoami: %d %v", st, err)
	}
	resumed, st, err := whoami()
	if err != nil || st != 200 {
		t.Fatalf("second whoami: %d %v", st, err)
	}
	if !resumed {
		t.Fatal("the second connection did not resume the session: the test proves nothing")
	}
	o.mustCall(200, o.admin, "POST", "/v1/ca/devices/SN-R/revoke", map[string]string{"reason": "stolen"})
	resumed, st, err = whoami()
	if err == nil && st == 200 {
		t.Fatalf("a revoked device resumed its session and was answered (resumed %v)", resumed)
	}
}
