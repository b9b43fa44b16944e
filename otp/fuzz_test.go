package otp

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// FuzzParseURI: ParseURI never panics, every error wraps ErrInvalidURI, and
// whatever it accepts is a valid key whose URI() parses back to an equal key
// and is canonical. Seeds: testdata/fuzz/FuzzParseURI (the good_ and fail_
// cases of testdata/uri and more).
//
//	go test -run XXX -fuzz FuzzParseURI -fuzztime 30s ./otp/
func FuzzParseURI(f *testing.F) {
	f.Add("otpauth://totp/Example:alice@google.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Example")
	f.Add("otpauth://hotp/a?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=1&digits=8&algorithm=SHA512")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseURI(s)
		if err != nil {
			if k != nil {
				t.Fatal("a key returned with an error")
			}
			if !errors.Is(err, ErrInvalidURI) {
				t.Fatalf("error %v does not wrap ErrInvalidURI", err)
			}
			return
		}
		if err := k.Validate(); err != nil {
			t.Fatalf("accepted key fails Validate: %v", err)
		}
		u := k.URI()
		k2, err := ParseURI(u)
		if err != nil {
			t.Fatalf("URI() of an accepted key does not parse: %q: %v", u, err)
		}
		if k.Params != k2.Params || !bytes.Equal(k.Secret, k2.Secret) || k.Issuer != k2.Issuer ||
			k.Account != k2.Account || k.Counter != k2.Counter {
			t.Fatalf("round trip through %q changed the key:\n%+v\n%+v", u, k, k2)
		}
		if u2 := k2.URI(); u2 != u {
			t.Fatalf("URI() not canonical: %q then %q", u, u2)
		}
	})
}

// FuzzVerify: any code, secret, time and parameters never panic; a match is
// always inside the window and really has that code; the code Generate gives
// at a time always verifies at that time, at the lowest step holding it; and
// the allocation-free HMAC agrees with crypto/hmac.
//
//	go test -run XXX -fuzz FuzzVerify -fuzztime 30s ./otp/
func FuzzVerify(f *testing.F) {
	f.Add([]byte("12345678901234567890"), "94287082", int64(59), int64(0), uint16(1), uint16(8), uint32(30), uint16(1), uint16(1))
	f.Fuzz(func(t *testing.T, secret []byte, code string, unix, t0 int64, alg, digits uint16, period uint32, back, fwd uint16) {
		if len(secret) > MaxSecretLen {
			secret = secret[:MaxSecretLen]
		}
		p := Params{
			Type:      TypeTOTP,
			Algorithm: Algorithm(alg%3 + 1),
			Digits:    MinDigits + int(digits)%(MaxDigits-MinDigits+1),
			Period:    1 + uint64(period)%MaxPeriod,
			T0:        t0,
		}
		// time.Unix is exact for about ±2^62 seconds.
		now := time.Unix(unix>>1, 0)
		w := Window{Back: int(back % 64), Forward: int(fwd % 64)}
		step := p.Step(now)

		// A random code: no panic; a match is in the window and is real.
		if got, err := p.Verify(secret, code, now, w); err == nil {
			if got+uint64(w.Back) < step || got > step+uint64(w.Forward) {
				t.Fatalf("matched step %d outside [%d-%d, %d+%d]", got, step, w.Back, step, w.Forward)
			}
			if c, _ := p.CodeAt(secret, got); c != code {
				t.Fatalf("matched step %d has code %q, not %q", got, c, code)
			}
		} else if !errors.Is(err, ErrNoMatch) && !errors.Is(err, ErrMalformedCode) && !errors.Is(err, ErrInvalidParams) {
			t.Fatalf("unexpected error %v", err)
		}

		// The valid code verifies, at the lowest step in the window holding it.
		valid, err := p.Generate(secret, 0, now)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Verify(secret, valid, now, w)
		if err != nil {
			t.Fatalf("Generate's code %q does not verify at the same time: %v", valid, err)
		}
		if got > step {
			t.Fatalf("matched step %d after the current step %d", got, step)
		}
		lo := step - min(uint64(w.Back), step)
		for s := lo; s < got; s++ {
			if c, err := p.CodeAt(secret, s); err != nil || c == valid {
				t.Fatalf("step %d also has the code (%v), but Verify returned %d", s, err, got)
			}
		}

		// HOTP over the same inputs, and the HMAC against crypto/hmac.
		var m mac
		m.init(p.Algorithm, secret)
		if a, b := m.truncated(step), refTruncated(p.Algorithm, secret, step); a != b {
			t.Fatalf("mac %08x, crypto/hmac %08x", a, b)
		}
		h := Params{Type: TypeHOTP, Algorithm: p.Algorithm, Digits: p.Digits}
		if _, err := h.VerifyCounter(secret, code, step, w.Forward); err != nil &&
			!errors.Is(err, ErrNoMatch) && !errors.Is(err, ErrMalformedCode) && !errors.Is(err, ErrInvalidParams) {
			t.Fatalf("VerifyCounter: unexpected error %v", err)
		}
	})
}
