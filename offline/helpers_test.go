package offline_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

// testKDF keeps unit tests fast; every request using it overrides the floor explicitly.
var testKDF = cost.KDF{Time: 1, MemoryKiB: 64, Threads: 1}

var seed = []byte("12345678901234567890") // RFC 4226 Appendix D

// t0 is the test clock's start: inside the validity of the checked-in bundles.
var t0 = time.Date(2030, 1, 1, 0, 10, 0, 0, time.UTC)

func testSigner(t testing.TB) *keys.Signer {
	t.Helper()
	m, err := keys.MasterFromBytes([]byte("outpost offline test master key!"))
	if err != nil {
		t.Fatal(err)
	}
	return m.Signer(0)
}

func otherSigner(t testing.TB) *keys.Signer {
	t.Helper()
	m, err := keys.MasterFromBytes([]byte("some other server's master key!!"))
	if err != nil {
		t.Fatal(err)
	}
	return m.Signer(0)
}

// clock is a settable device clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time)         { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// newStore creates a field store for dev-1 trusting testSigner, with the policy pol.
func newStore(t *testing.T, pol offline.Policy) (*offline.Store, *fakeClock, string) {
	t.Helper()
	c := &fakeClock{t: t0}
	dir := t.TempDir()
	s, err := offline.Init(context.Background(), dir, offline.Config{DeviceID: "dev-1", ServerKey: testSigner(t).Public, Policy: pol},
		offline.Options{Now: c.Now, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c, dir
}

// quickPolicy has no delays, so that tests need not move the clock between failures.
var quickPolicy = offline.Policy{MaxFailures: 5, ClockTolerance: 5 * time.Minute, TOTPBack: 1, TOTPForward: 1, HOTPLookahead: 4}

func hotpReq(first uint64, count int) bundle.Request {
	return bundle.Request{
		Realm: "acme", User: "alice", TokenID: "tok-1", Device: "dev-1",
		Params: otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6},
		Secret: seed, First: first, Count: count, KDF: testKDF, Override: true,
		Secrets: map[string][]byte{"door": []byte("4711")},
		Now:     t0, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(24 * time.Hour),
	}
}

func totpReq(pin string) bundle.Request {
	return bundle.Request{
		Realm: "acme", User: "bob", TokenID: "tok-2", Device: "dev-1",
		Params: otp.DefaultTOTP, Secret: seed, From: t0.Add(-10 * time.Minute), Until: t0.Add(50 * time.Minute),
		PIN: pin, KDF: testKDF, Override: true, Secrets: map[string][]byte{"admin": []byte("s3cret")},
		Now: t0, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour),
	}
}

func issue(t testing.TB, req bundle.Request) []byte {
	t.Helper()
	data, _, err := bundle.Issue(context.Background(), req, testSigner(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func trusted(t testing.TB) []ed25519.PublicKey { return []ed25519.PublicKey{testSigner(t).Public} }

// codesAt returns p's codes for secret at counters (HOTP) or Unix times
// (TOTP), made by the otp package: these are tests of the store, not of
// the codes (otp/interop_test.go checks those against pyotp and oathtool).
func codesAt(t testing.TB, p otp.Params, secret []byte, at ...int64) []string {
	t.Helper()
	codes := make([]string, len(at))
	for i, a := range at {
		c, err := p.Generate(secret, uint64(a), time.Unix(a, 0))
		if err != nil {
			t.Fatalf("code at %d: %v", a, err)
		}
		codes[i] = c
	}
	return codes
}

// hotpCodes returns the test seed's HOTP codes of counters 0..n-1.
func hotpCodes(t testing.TB, n int) []string {
	t.Helper()
	at := make([]int64, n)
	for i := range at {
		at[i] = int64(i)
	}
	return codesAt(t, otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}, seed, at...)
}

// wrongCode returns a well-formed code different from every code in codes.
func wrongCode(codes ...string) string {
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", 999999-i)
		ok := true
		for _, x := range codes {
			ok = ok && x != c
		}
		if ok {
			return c
		}
	}
}

func bundleIssueWith(s *keys.Signer, req bundle.Request) ([]byte, cost.Report, error) {
	return bundle.Issue(context.Background(), req, s, nil)
}

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }
