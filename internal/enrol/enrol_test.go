package enrol_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/ca"
	"github.com/outpost-auth/outpost/internal/enrol"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

var ctx = context.Background()

// fakeRoster is the roster's Vouches for the tests: serial → vouched
// key, withdrawn serials, and whether to skip the key check (to reach the
// service's own check of a second key).
type fakeRoster struct {
	mu        sync.Mutex
	keys      map[string][]byte
	withdrawn map[string]bool
	anyKey    bool
	enrolled  []string
}

func (f *fakeRoster) Live(_ context.Context, realm, serial string, spki []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.keys[realm+"/"+serial]
	switch {
	case !ok:
		return errors.New("no vouch for this serial")
	case f.withdrawn[realm+"/"+serial]:
		return errors.New("the vouch was withdrawn")
	case !f.anyKey && string(k) != string(spki):
		return errors.New("key mismatch: the vouch names another key")
	}
	return nil
}

func (f *fakeRoster) Enrolled(_ context.Context, realm, serial string, _ []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrolled = append(f.enrolled, realm+"/"+serial)
	return nil
}

type clk struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clk) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clk) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	st     store.Store
	svc    *enrol.Service
	roster *fakeRoster
	clock  *clk
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	st := storetest.Open(t, storetest.SQLitePath(t))
	c := &clk{t: time.Date(2031, 6, 1, 12, 0, 0, 0, time.UTC)}
	if err := st.CreateRealm(ctx, store.Realm{ID: "default", Name: "Default"}); err != nil {
		t.Fatal(err)
	}
	m, err := keys.MasterFromBytes([]byte("outpost enrol test master key 32"))
	if err != nil {
		t.Fatal(err)
	}
	a, created, err := ca.LoadOrCreate(ctx, st.(store.CAStore), m, "test", c.Now())
	if err != nil || !created {
		t.Fatalf("LoadOrCreate: %v %v", created, err)
	}
	r := &fakeRoster{keys: map[string][]byte{}, withdrawn: map[string]bool{}}
	svc := &enrol.Service{Store: st.(store.CAStore), Audit: &audit.Log{Store: st, Now: c.Now}, CA: a, Vouches: r, Now: c.Now}
	return &fixture{st: st, svc: svc, roster: r, clock: c}
}

// device is a device key with its vouch.
type device struct {
	serial string
	key    crypto.Signer
	spki   []byte
}

func (f *fixture) vouched(t testing.TB, serial string) device {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(k.Public())
	f.roster.mu.Lock()
	f.roster.keys["default/"+serial] = spki
	f.roster.mu.Unlock()
	return device{serial: serial, key: k, spki: spki}
}

func csrFor(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var exporterA = []byte(strings.Repeat("A", 32))
var exporterB = []byte(strings.Repeat("B", 32))

// request makes a good first contact for d on a connection with exporterA.
func (f *fixture) request(t testing.TB, d device) enrol.Request {
	t.Helper()
	nonce, _, err := f.svc.Challenge(ctx, "default", d.serial)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := enrol.SignProof(d.key, nonce, exporterA)
	if err != nil {
		t.Fatal(err)
	}
	return enrol.Request{Realm: "default", Serial: d.serial, Nonce: nonce, CSR: csrFor(t, d.key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: d.serial}}),
		Signature: sig, Exporter: exporterA}
}

func (f *fixture) certs(t testing.TB) int {
	t.Helper()
	cs, err := f.svc.Certs(ctx, "default", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(cs)
}

func (f *fixture) refusals(t testing.TB) []string {
	t.Helper()
	es, err := f.st.ListAudit(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if e.Kind == audit.DeviceRefused {
			out = append(out, e.Subject+" "+string(e.Data))
		}
	}
	return out
}

func TestEnrolIssuesAShortLivedClientCertificate(t *testing.T) {
	f := newFixture(t)
	d := f.vouched(t, "SN-0042")
	iss, err := f.svc.Enrol(ctx, f.request(t, d))
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Cert
	want := "urn:outpost:device:default:SN-0042"
	if len(c.URIs) != 1 || c.URIs[0].String() != want || len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) != 0 {
		t.Errorf("names: %v %v", c.URIs, c.DNSNames)
	}
	if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature || len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("usage: CA %v, KeyUsage %v, ExtKeyUsage %v", c.IsCA, c.KeyUsage, c.ExtKeyUsage)
	}
	if c.SerialNumber.BitLen() < 120 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial number of %d bits", c.SerialNumber.BitLen())
	}
	if got := c.NotAfter.Sub(f.clock.Now()); got != enrol.DefaultValidity {
		t.Errorf("valid for %v after issue, want %v", got, enrol.DefaultValidity)
	}
	if _, err := f.svc.CA.VerifyDevice(c, f.clock.Now()); err != nil {
		t.Errorf("the CA does not verify its own certificate: %v", err)
	}
	if len(f.roster.enrolled) != 1 || f.roster.enrolled[0] != "default/SN-0042" {
		t.Errorf("roster told %v", f.roster.enrolled)
	}
	if id, err := f.svc.Authenticate(ctx, []*x509.Certificate{c}, false); err != nil || id.Serial != "SN-0042" || id.Expired {
		t.Errorf("Authenticate = %+v, %v", id, err)
	}
}

// TestEnrolEd25519: a device with an Ed25519 key (the label's other type)
// enrols and renews the same way.
func TestEnrolEd25519(t *testing.T) {
	f := newFixture(t)
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(k.Public())
	f.roster.keys["default/SN-ED"] = spki
	iss, err := f.svc.Enrol(ctx, f.request(t, device{serial: "SN-ED", key: k, spki: spki}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Renew(ctx, []*x509.Certificate{iss.Cert}, csrFor(t, k, &x509.CertificateRequest{})); err != nil {
		t.Fatalf("renew: %v", err)
	}
}

// TestEnrolRefusals is the issue's list of bad inputs: each is refused
// with its sentinel, audited, and issues nothing.
func TestEnrolRefusals(t *testing.T) {
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tests := []struct {
		name   string
		mutate func(t *testing.T, f *fixture, d device, r *enrol.Request)
		want   error
		reason string
	}{
		{"CSR key not the label's", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			r.CSR = csrFor(t, other, &x509.CertificateRequest{})
			r.Signature, _ = enrol.SignProof(other, r.Nonce, exporterA)
		}, enrol.ErrVouch, "vouch"},
		{"extra SANs", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			r.CSR = csrFor(t, d.key, &x509.CertificateRequest{DNSNames: []string{"bank.example"}, URIs: []*url.URL{ca.DeviceURI("default", "SN-OTHER")}})
		}, enrol.ErrCSR, "csr"},
		{"CA:true", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			bc, _ := asn1.Marshal(struct {
				IsCA bool
			}{true})
			r.CSR = csrFor(t, d.key, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}}})
		}, enrol.ErrCSR, "csr"},
		{"other extension", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			r.CSR = csrFor(t, d.key, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Value: []byte{3, 2, 1, 6}}}})
		}, enrol.ErrCSR, "csr"},
		{"common name of another serial", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			r.CSR = csrFor(t, d.key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "SN-OTHER"}})
		}, enrol.ErrCSR, "csr"},
		{"challenge signed for another connection", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			r.Signature, _ = enrol.SignProof(d.key, r.Nonce, exporterB)
		}, enrol.ErrBinding, "binding"},
		{"answer relayed onto another connection", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			r.Exporter = exporterB // the signature is over exporterA, the server sees B
		}, enrol.ErrBinding, "binding"},
		{"replayed challenge", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			good := *r
			if _, err := f.svc.Enrol(ctx, good); err != nil {
				t.Fatal(err)
			}
		}, enrol.ErrChallenge, "challenge"},
		{"expired challenge", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			f.clock.Add(enrol.DefaultChallengeTTL)
		}, enrol.ErrChallenge, "challenge"},
		{"challenge of another serial", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			f.vouched(t, "SN-OTHER")
			n, _, _ := f.svc.Challenge(ctx, "default", "SN-OTHER")
			r.Nonce = n
			r.Signature, _ = enrol.SignProof(d.key, n, exporterA)
		}, enrol.ErrChallenge, "challenge"},
		{"withdrawn vouch", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			f.roster.withdrawn["default/"+d.serial] = true
		}, enrol.ErrVouch, "vouch"},
		{"no vouch", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			delete(f.roster.keys, "default/"+d.serial)
		}, enrol.ErrVouch, "vouch"},
		{"second device, same serial, another key", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			first := *r
			if _, err := f.svc.Enrol(ctx, first); err != nil {
				t.Fatal(err)
			}
			f.roster.anyKey = true // past the roster, to the service's own check
			n, _, _ := f.svc.Challenge(ctx, "default", d.serial)
			r.Nonce = n
			r.CSR = csrFor(t, other, &x509.CertificateRequest{})
			r.Signature, _ = enrol.SignProof(other, n, exporterA)
		}, enrol.ErrKeyMismatch, "key_mismatch"},
		{"revoked device", func(t *testing.T, f *fixture, d device, r *enrol.Request) {
			first := *r
			if _, err := f.svc.Enrol(ctx, first); err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.Revoke(ctx, "default", d.serial, "stolen", "api:admin"); err != nil {
				t.Fatal(err)
			}
			n, _, _ := f.svc.Challenge(ctx, "default", d.serial)
			r.Nonce = n
			r.Signature, _ = enrol.SignProof(d.key, n, exporterA)
		}, enrol.ErrRevoked, "revoked"},
		{"not TLS", func(t *testing.T, f *fixture, d device, r *enrol.Request) { r.Exporter = nil }, enrol.ErrNoTLS, "no_tls"},
		{"garbage CSR", func(t *testing.T, f *fixture, d device, r *enrol.Request) { r.CSR = []byte("garbage") }, enrol.ErrCSR, "csr"},
		{"invalid serial", func(t *testing.T, f *fixture, d device, r *enrol.Request) { r.Serial = "SN 1/../x" }, enrol.ErrInvalid, "invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			d := f.vouched(t, "SN-0042")
			r := f.request(t, d)
			tc.mutate(t, f, d, &r)
			before, refusedBefore := f.certs(t), len(f.refusals(t))
			_, err := f.svc.Enrol(ctx, r)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if f.certs(t) != before {
				t.Error("a refused enrolment issued a certificate")
			}
			ref := f.refusals(t)
			if len(ref) != refusedBefore+1 || !strings.Contains(ref[len(ref)-1], `"reason":"`+tc.reason+`"`) {
				t.Errorf("refusals audited: %v, want one more with reason %s", ref, tc.reason)
			}
		})
	}
}

// TestNoRoster: until the lead wires the roster, serve refuses enrolment clearly.
func TestNoRoster(t *testing.T) {
	f := newFixture(t)
	d := f.vouched(t, "SN-1")
	r := f.request(t, d)
	f.svc.Vouches = nil
	if _, err := f.svc.Enrol(ctx, r); !errors.Is(err, enrol.ErrNoRoster) || !strings.Contains(err.Error(), "no roster configured") {
		t.Fatalf("got %v", err)
	}
	if _, _, err := f.svc.Challenge(ctx, "default", "SN-1"); !errors.Is(err, enrol.ErrNoRoster) {
		t.Fatalf("challenge: %v", err)
	}
}

func TestRenewal(t *testing.T) {
	f := newFixture(t)
	d := f.vouched(t, "SN-7")
	iss, err := f.svc.Enrol(ctx, f.request(t, d))
	if err != nil {
		t.Fatal(err)
	}
	peer := []*x509.Certificate{iss.Cert}
	same := csrFor(t, d.key, &x509.CertificateRequest{})

	// Before expiry: renewal works, for the same key only.
	f.clock.Add(20 * time.Hour)
	r1, err := f.svc.Renew(ctx, peer, same)
	if err != nil {
		t.Fatal(err)
	}
	if !r1.Cert.NotAfter.Equal(f.clock.Now().Add(enrol.DefaultValidity).Truncate(time.Second)) && r1.Cert.NotAfter.Sub(f.clock.Now()) != enrol.DefaultValidity {
		t.Errorf("renewed until %v", r1.Cert.NotAfter)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := f.svc.Renew(ctx, peer, csrFor(t, other, &x509.CertificateRequest{})); !errors.Is(err, enrol.ErrCSR) {
		t.Errorf("renewal to another key: %v", err)
	}
	// The attacker's test: the device's own key signs a CSR naming another device.
	if _, err := f.svc.Renew(ctx, peer, csrFor(t, d.key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "SN-8"}})); !errors.Is(err, enrol.ErrCSR) {
		t.Errorf("renewal naming another serial: %v", err)
	}

	// After expiry: only renewal, within the grace.
	peer = []*x509.Certificate{r1.Cert}
	f.clock.Add(enrol.DefaultValidity + 10*24*time.Hour)
	if _, err := f.svc.Authenticate(ctx, peer, false); !errors.Is(err, enrol.ErrExpired) {
		t.Errorf("expired certificate outside renewal: %v", err)
	}
	id, err := f.svc.Authenticate(ctx, peer, true)
	if err != nil || !id.Expired {
		t.Errorf("expired within grace, renewal: %+v %v", id, err)
	}
	r2, err := f.svc.Renew(ctx, peer, same)
	if err != nil {
		t.Fatalf("renewal within grace: %v", err)
	}
	// Beyond the grace: back to first contact.
	f.clock.Add(enrol.DefaultValidity + enrol.DefaultGrace + time.Second)
	if _, err := f.svc.Renew(ctx, []*x509.Certificate{r2.Cert}, same); !errors.Is(err, enrol.ErrExpired) || !strings.Contains(err.Error(), "enrol again") {
		t.Errorf("renewal beyond grace: %v", err)
	}
	again, err := f.svc.Enrol(ctx, f.request(t, d))
	if err != nil {
		t.Fatalf("first contact again after the grace: %v", err)
	}

	// A withdrawn vouch stops renewal and authentication at once.
	f.roster.withdrawn["default/SN-7"] = true
	last := again.Cert
	if _, err := f.svc.Renew(ctx, []*x509.Certificate{last}, same); !errors.Is(err, enrol.ErrVouch) {
		t.Errorf("renewal with a withdrawn vouch: %v", err)
	}
	delete(f.roster.withdrawn, "default/SN-7")

	// Revocation stops it too.
	if d, err := f.svc.Revoke(ctx, "default", "SN-7", "", "api:admin"); err != nil || d.Status != store.CADeviceRevoked {
		t.Fatal(err)
	}
	if _, err := f.svc.Renew(ctx, []*x509.Certificate{last}, same); !errors.Is(err, enrol.ErrRevoked) {
		t.Errorf("renewal of a revoked device: %v", err)
	}
	if _, err := f.svc.Revoke(ctx, "default", "SN-7", "", "api:admin"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second revoke: %v", err)
	}
}

// TestOtherCA: a certificate from another CA, even for the same device and
// key, authenticates nothing.
func TestOtherCA(t *testing.T) {
	f := newFixture(t)
	d := f.vouched(t, "SN-9")
	if _, err := f.svc.Enrol(ctx, f.request(t, d)); err != nil {
		t.Fatal(err)
	}
	g := newFixture(t) // another server, another CA
	der, _, err := g.svc.CA.IssueDevice(d.key.Public(), "default", "SN-9", f.clock.Now(), f.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	if _, err := f.svc.Authenticate(ctx, []*x509.Certificate{c}, true); !errors.Is(err, enrol.ErrNotDevice) {
		t.Errorf("other CA's certificate: %v", err)
	}
	if _, err := f.svc.Renew(ctx, []*x509.Certificate{c}, csrFor(t, d.key, &x509.CertificateRequest{})); !errors.Is(err, enrol.ErrNotDevice) {
		t.Errorf("renewal with another CA's certificate: %v", err)
	}
}

func estBody(t testing.TB, key crypto.Signer, cn, password string) []byte {
	t.Helper()
	if password != "" {
		pw, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagPrintableString, Bytes: []byte(password)})
		return []byte(base64.StdEncoding.EncodeToString(csrWithPassword(t, key, cn, pw)))
	}
	return []byte(base64.StdEncoding.EncodeToString(csrFor(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}})))
}

// csrWithPassword builds a CSR with a challengePassword attribute by hand
// (crypto/x509 cannot write one).
func csrWithPassword(t testing.TB, key crypto.Signer, cn string, pwValue []byte) []byte {
	t.Helper()
	base := csrFor(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}})
	req, _ := x509.ParseCertificateRequest(base)
	var tbs struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []asn1.RawValue `asn1:"tag:0"`
	}
	if _, err := asn1.Unmarshal(req.RawTBSCertificateRequest, &tbs); err != nil {
		t.Fatal(err)
	}
	attr, _ := asn1.Marshal(struct {
		Type   asn1.ObjectIdentifier
		Values []asn1.RawValue `asn1:"set"`
	}{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}, []asn1.RawValue{{FullBytes: pwValue}}})
	tbs.Attributes = []asn1.RawValue{{FullBytes: attr}}
	tbsDER, err := asn1.Marshal(tbs)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tbsDER)
	sig, err := key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	out, err := asn1.Marshal(struct {
		TBS asn1.RawValue
		Alg pkix.AlgorithmIdentifier
		Sig asn1.BitString
	}{asn1.RawValue{FullBytes: tbsDER}, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}}, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEnrolEST(t *testing.T) {
	f := newFixture(t)
	d := f.vouched(t, "SN-EST")
	nonce, _, err := f.svc.Challenge(ctx, "default", d.serial)
	if err != nil {
		t.Fatal(err)
	}
	// The token alone: the weaker binding a shell client can make.
	iss, err := f.svc.EnrolEST(ctx, "default", estBody(t, d.key, d.serial, hex.EncodeToString(nonce)), exporterA)
	if err != nil {
		t.Fatal(err)
	}
	if iss.Serial != d.serial {
		t.Errorf("issued to %s", iss.Serial)
	}
	// Replayed: refused.
	if _, err := f.svc.EnrolEST(ctx, "default", estBody(t, d.key, d.serial, hex.EncodeToString(nonce)), exporterA); !errors.Is(err, enrol.ErrChallenge) {
		t.Errorf("replayed EST token: %v", err)
	}
	// With the exporter: bound to the connection.
	nonce, _, _ = f.svc.Challenge(ctx, "default", d.serial)
	pw := hex.EncodeToString(nonce) + "." + hex.EncodeToString(exporterA)
	if _, err := f.svc.EnrolEST(ctx, "default", estBody(t, d.key, d.serial, pw), exporterB); !errors.Is(err, enrol.ErrBinding) {
		t.Errorf("EST answer for another connection: %v", err)
	}
	if _, err := f.svc.EnrolEST(ctx, "default", estBody(t, d.key, d.serial, pw), exporterA); err != nil {
		t.Errorf("bound EST enrolment: %v", err)
	}
	// No token at all.
	if _, err := f.svc.EnrolEST(ctx, "default", estBody(t, d.key, d.serial, ""), exporterA); !errors.Is(err, enrol.ErrChallenge) {
		t.Errorf("EST without a token: %v", err)
	}
}

func TestCertsOnlyRoundTrip(t *testing.T) {
	f := newFixture(t)
	body := enrol.CertsOnly(f.svc.CA.CACerts())
	cs, err := enrol.ParseCertsOnly(body)
	if err != nil || len(cs) != 2 || !cs[0].Equal(f.svc.CA.Issuing) || !cs[1].Equal(f.svc.CA.Root) {
		t.Fatalf("round trip: %v %d", err, len(cs))
	}
	if _, err := enrol.ParseCertsOnly(append(body, 0)); err == nil {
		t.Error("trailing data accepted")
	}
}

func Example_fingerprint() {
	fmt.Println(len(ca.Fingerprint([]byte("x"))))
	// Output: 64
}
