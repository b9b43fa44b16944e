package bundle

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

// testKDF keeps unit tests fast; the floor is overridden explicitly where it is used.
var testKDF = cost.KDF{Time: 1, MemoryKiB: 64, Threads: 1}

var seed = []byte("12345678901234567890") // RFC 4226 Appendix D

func testSigner(t testing.TB) *keys.Signer {
	t.Helper()
	m, err := keys.MasterFromBytes([]byte("outpost bundle test master key!!"))
	if err != nil {
		t.Fatal(err)
	}
	return m.Signer(0)
}

// codeAt is p's code for the test seed at counter or TOTP step c, made by
// the otp package (otp/interop_test.go checks it against pyotp and oathtool).
func codeAt(t testing.TB, p otp.Params, c uint64) string {
	t.Helper()
	code, err := p.CodeAt(seed, c)
	if err != nil {
		t.Fatalf("code at %d: %v", c, err)
	}
	return code
}

func hotpRequest() Request {
	return Request{
		Realm: "acme", User: "alice", TokenID: "tok-1", Device: "dev-1",
		Params: otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6},
		Secret: seed, First: 10, Count: 8, KDF: testKDF, Override: true,
		Secrets: map[string][]byte{"door": []byte("4711"), "admin-password": []byte("correct horse")},
		Now:     testNow,
	}
}

func decode(t *testing.T, data []byte, s *keys.Signer) *bundlefmt.Bundle {
	t.Helper()
	b, err := bundlefmt.Decode(data, []ed25519.PublicKey{s.Public}, bundlefmt.Expect{Device: "dev-1", Now: testNow})
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return b
}

func TestIssueHOTPOpensWithItsCodes(t *testing.T) {
	s := testSigner(t)
	req := hotpRequest()
	var calls, last atomic.Int64
	data, rep, err := Issue(context.Background(), req, s, func(done, total int) {
		calls.Add(1)
		last.Store(int64(done))
		if total != 8 {
			t.Errorf("progress total %d, want 8", total)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 8 || last.Load() != 8 {
		t.Fatalf("progress called %d times, last done %d; want 8, 8", calls.Load(), last.Load())
	}
	if rep.Entries != 8 || rep.Digits != 6 || rep.PINDigits != 0 || rep.KDF != testKDF {
		t.Fatalf("report %+v", rep)
	}
	if strings.Contains(string(data), "4711") || strings.Contains(string(data), "correct horse") {
		t.Fatal("a static secret appears in clear in the bundle")
	}
	b := decode(t, data, s)
	if b.First != 10 || b.Count() != 8 || b.Last() != 17 || b.User != "alice" || b.Device != "dev-1" || b.PIN {
		t.Fatalf("decoded %+v", b.Body)
	}
	if got := b.SecretNames(); len(got) != 2 || got[0] != "admin-password" || got[1] != "door" {
		t.Fatalf("secret names %v", got)
	}
	var codes []string
	for _, c := range []uint64{9, 10, 13, 17, 18} {
		codes = append(codes, codeAt(t, req.Params, c))
	}
	// Counter 9 and 18 are outside the window: no entry to open.
	if _, ok := b.OpenEntry(9, codes[0], ""); ok {
		t.Fatal("counter 9 opened an entry")
	}
	var rel []byte
	for i, c := range []uint64{10, 13, 17} {
		key, ok := b.OpenEntry(c, codes[i+1], "")
		if !ok {
			t.Fatalf("the code of counter %d does not open its entry", c)
		}
		if rel != nil && string(rel) != string(key) {
			t.Fatal("entries release different keys")
		}
		rel = key
		// The code of one counter does not open another counter's entry.
		if _, ok := b.OpenEntry(c+1, codes[i+1], ""); ok {
			t.Fatalf("code of counter %d opened entry %d", c, c+1)
		}
	}
	got, err := b.OpenSecret(rel, "door")
	if err != nil || string(got) != "4711" {
		t.Fatalf("door secret = %q, %v", got, err)
	}
	if _, err := b.OpenSecret(rel, "nope"); !errors.Is(err, offline.ErrNoSecret) {
		t.Fatalf("unknown secret: %v", err)
	}
	wrong := make([]byte, 32)
	if _, err := b.OpenSecret(wrong, "door"); err == nil {
		t.Fatal("a wrong release key opened a secret")
	}
	// Try: the window search returns the matching counter.
	c, key, err := b.Try(context.Background(), 10, 14, codes[2], "", 2)
	if err != nil || c != 13 || string(key) != string(rel) {
		t.Fatalf("Try = %d, %v; want 13", c, err)
	}
	if _, _, err := b.Try(context.Background(), 10, 12, codes[2], "", 2); !errors.Is(err, bundlefmt.ErrNoMatch) {
		t.Fatalf("Try outside the code's counter: %v", err)
	}
	if _, _, err := b.Try(context.Background(), 10, 12, "12345", "", 2); !errors.Is(err, otp.ErrMalformedCode) {
		t.Fatalf("Try with a 5-digit code: %v", err)
	}
	if _, _, err := b.Try(context.Background(), 10, 18, codes[2], "", 2); err == nil {
		t.Fatal("Try beyond the last entry was accepted")
	}
}

func TestIssueTOTPWithPIN(t *testing.T) {
	s := testSigner(t)
	p := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA256, Digits: 8, Period: 30}
	from := time.Date(2030, 1, 1, 12, 0, 10, 0, time.UTC) // mid-step: that step is included
	until := from.Add(5 * time.Minute)                    // 12:05:10: the step starting 12:05:00 is included
	req := Request{Realm: "acme", User: "bob", TokenID: "t2", Device: "dev-1", Params: p, Secret: seed,
		From: from, Until: until, PIN: "2468", KDF: testKDF, Override: true,
		Now: testNow, NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour)}
	data, rep, err := Issue(context.Background(), req, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 11 || rep.PINDigits != 4 {
		t.Fatalf("report entries %d pin %d, want 11, 4", rep.Entries, rep.PINDigits)
	}
	b := decode(t, data, s)
	if !b.PIN || b.First != p.Step(from) || b.Count() != 11 {
		t.Fatalf("PIN %v first %d count %d", b.PIN, b.First, b.Count())
	}
	at := from.Add(2 * time.Minute).Unix()
	step := p.Step(time.Unix(at, 0))
	code := codeAt(t, p, step)
	if _, ok := b.OpenEntry(step, code, "2468"); !ok {
		t.Fatal("code + PIN does not open its entry")
	}
	for _, pin := range []string{"", "2469", "24680"} {
		if _, ok := b.OpenEntry(step, code, pin); ok {
			t.Fatalf("code with PIN %q opened the entry", pin)
		}
	}
}

func TestFloor(t *testing.T) {
	req := hotpRequest()
	req.Override = false
	req.KDF = cost.KDF{}
	_, err := Plan(req)
	if !errors.Is(err, cost.ErrBelowFloor) {
		t.Fatalf("6 digits without a PIN: %v, want ErrBelowFloor", err)
	}
	_, _, err = Issue(context.Background(), req, testSigner(t), nil)
	if !errors.Is(err, cost.ErrBelowFloor) {
		t.Fatalf("Issue below the floor: %v", err)
	}
	req.PIN = "1234"
	rep, err := Plan(req)
	if err != nil {
		t.Fatalf("6 digits + 4-digit PIN at the default profile should clear the floor: %v", err)
	}
	if rep.KDF != cost.Default || rep.PINDigits != 4 {
		t.Fatalf("report %+v", rep)
	}
	req.PIN = ""
	req.Floor = &cost.Floor{PerEntry: time.Minute}
	if _, err := Plan(req); err != nil {
		t.Fatalf("a custom 1-minute floor: %v", err)
	}
}

func TestInvalidRequests(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Request)
	}{
		{"short secret", func(r *Request) { r.Secret = seed[:15] }},
		{"bad digits", func(r *Request) { r.Params.Digits = 5 }},
		{"no entries", func(r *Request) { r.Count = 0 }},
		{"too many entries", func(r *Request) { r.Count = bundlefmt.MaxEntries + 1 }},
		{"hotp with period", func(r *Request) { r.From, r.Until = testNow, testNow.Add(time.Hour) }},
		{"counter overflow", func(r *Request) { r.First = bundlefmt.MaxCounter - 2 }},
		{"no device", func(r *Request) { r.Device = "" }},
		{"no user", func(r *Request) { r.User = "" }},
		{"control char", func(r *Request) { r.User = "al\nice" }},
		{"long id", func(r *Request) { r.TokenID = strings.Repeat("x", 257) }},
		{"bad secret name", func(r *Request) { r.Secrets = map[string][]byte{"a b": nil} }},
		{"big secret", func(r *Request) { r.Secrets = map[string][]byte{"a": make([]byte, bundlefmt.MaxSecretLen+1)} }},
		{"bad kdf", func(r *Request) { r.KDF = cost.KDF{Time: 1, MemoryKiB: 4, Threads: 1} }},
		{"long PIN", func(r *Request) { r.PIN = strings.Repeat("1", 65) }},
		{"validity inverted", func(r *Request) { r.NotBefore, r.NotAfter = testNow, testNow.Add(-time.Hour) }},
		{"totp without period", func(r *Request) { r.Params = otp.DefaultTOTP; r.First, r.Count = 0, 0 }},
		{"totp with count", func(r *Request) {
			r.Params = otp.DefaultTOTP
			r.From, r.Until = testNow, testNow.Add(time.Hour)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := hotpRequest()
			tc.mod(&req)
			_, err := Plan(req)
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("got %v, want ErrInvalidRequest", err)
			}
			if strings.Contains(err.Error(), string(seed)) {
				t.Fatal("the seed appears in an error")
			}
		})
	}
}

func TestIssueCancel(t *testing.T) {
	req := hotpRequest()
	req.Count = 400
	req.KDF = cost.KDF{Time: 1, MemoryKiB: 1024, Threads: 1}
	ctx, cancel := context.WithCancel(context.Background())
	var seen atomic.Int64
	start := time.Now()
	_, _, err := Issue(ctx, req, testSigner(t), func(done, total int) {
		if seen.Add(1) == 5 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if seen.Load() >= 400 {
		t.Fatal("cancellation did not stop the work")
	}
	t.Logf("cancelled after %d entries in %v", seen.Load(), time.Since(start))
}

// TestWorkersAgree checks that the entries do not depend on the worker count
// (same salt and release key in, same bytes out).
func TestWorkersAgree(t *testing.T) {
	req := hotpRequest()
	req.Now = time.Unix(1900000000, 0)
	p1, err := newPlan(req)
	if err != nil {
		t.Fatal(err)
	}
	p4, err := newPlan(req)
	if err != nil {
		t.Fatal(err)
	}
	rel := make([]byte, 32)
	if err := computeEntries(context.Background(), p1.b, seed, "", rel, 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := computeEntries(context.Background(), p4.b, seed, "", rel, 4, nil, nil); err != nil {
		t.Fatal(err)
	}
	if string(p1.b.Entries) != string(p4.b.Entries) {
		t.Fatal("entries differ between 1 and 4 workers")
	}
	// Through a pool (Request.Run): the same entries, every one run by
	// it, each declaring the KDF's memory.
	pp, err := newPlan(req)
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	run := func(_ context.Context, memKiB int64, fn func()) error {
		if memKiB != int64(pp.b.KDF.MemoryKiB) {
			t.Errorf("declared %d KiB, want %d", memKiB, pp.b.KDF.MemoryKiB)
		}
		runs.Add(1)
		fn()
		return nil
	}
	if err := computeEntries(context.Background(), pp.b, seed, "", rel, 3, run, nil); err != nil {
		t.Fatal(err)
	}
	if string(pp.b.Entries) != string(p1.b.Entries) || runs.Load() != int64(pp.b.Count()) {
		t.Fatalf("through a pool: %d runs for %d entries, same entries %v", runs.Load(), pp.b.Count(), string(pp.b.Entries) == string(p1.b.Entries))
	}
}

// testNow is the issuers' clock in these tests: fixed, years ahead.
var testNow = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

// A bundle never holds an entry at or below the token's last used counter
// or step online, and carries that state (Used) for the device.
func TestEntriesStartAfterOnlineUse(t *testing.T) {
	p := otp.DefaultTOTP
	from := time.Date(2031, 3, 4, 5, 0, 0, 0, time.UTC)
	s0 := p.Step(from) // the period's first step
	totp := func(used bool, last uint64) Request {
		return Request{Realm: "acme", User: "bob", TokenID: "t2", Device: "dev-1", Params: p, Secret: seed,
			From: from, Until: from.Add(10 * time.Minute), KDF: testKDF, Override: true, Now: testNow,
			NotBefore: testNow, NotAfter: testNow.Add(time.Hour), Used: used, LastUsed: last}
	}
	hotp := func(used bool, last uint64) Request {
		r := hotpRequest() // counters 10..17
		r.Secrets, r.Used, r.LastUsed = nil, used, last
		return r
	}
	tests := []struct {
		name        string
		req         Request
		first, last uint64
		used        int64
	}{
		{"hotp, never used", hotp(false, 0), 10, 17, -1},
		{"hotp, used below the window", hotp(true, 4), 10, 17, 4},
		{"hotp, used inside the window", hotp(true, 12), 13, 20, 12},
		{"totp, never used", totp(false, 0), s0, s0 + 19, -1},
		{"totp, used before the period", totp(true, s0-5), s0, s0 + 19, int64(s0 - 5)},
		{"totp, step S of the period used", totp(true, s0+3), s0 + 4, s0 + 19, int64(s0 + 3)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, _, err := Issue(context.Background(), tc.req, testSigner(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			b := decode(t, data, testSigner(t))
			if b.First != tc.first || b.Last() != tc.last || b.Used != tc.used {
				t.Fatalf("entries %d..%d used %d, want %d..%d used %d", b.First, b.Last(), b.Used, tc.first, tc.last, tc.used)
			}
		})
	}
	// A period whose every step was used online gets no bundle.
	if _, err := Plan(totp(true, s0+19)); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("a period used up online: %v", err)
	}
	if _, err := Plan(hotp(true, bundlefmt.MaxCounter+1)); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("a last used counter out of range: %v", err)
	}
}
