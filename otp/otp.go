// Package otp implements HOTP (RFC 4226) and TOTP (RFC 6238) one-time passwords
// and the otpauth:// Key URI format read by Google Authenticator, FreeOTP and Aegis.
//
// The package does no I/O and keeps no state. For the common case, describe a
// token with [Params] and call [Params.Generate] or [Params.Verify]:
//
//	p := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
//	step, err := p.Verify(secret, code, time.Now(), otp.Window{Back: 1, Forward: 1})
//
// Verify returns which step (TOTP) or counter (HOTP) matched. It does not know
// which codes were used before: callers enforce one-time use by accepting a
// match only when it is greater than the last one they recorded, and recording
// it atomically (see the store and offline packages). Every comparison is
// constant-time.
//
// [HOTP] and [TOTPStep] are the raw building blocks, for callers that hold the
// counter themselves.
package otp

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"time"
)

// Algorithm is the HMAC hash of a token.
type Algorithm uint8

// The algorithms of RFC 6238. SHA1 is the default of every authenticator app.
const (
	SHA1 Algorithm = iota + 1
	SHA256
	SHA512
)

// String returns the name used in otpauth URIs: "SHA1", "SHA256" or "SHA512".
func (a Algorithm) String() string {
	switch a {
	case SHA1:
		return "SHA1"
	case SHA256:
		return "SHA256"
	case SHA512:
		return "SHA512"
	}
	return fmt.Sprintf("Algorithm(%d)", uint8(a))
}

// ParseAlgorithm accepts "SHA1", "SHA256" or "SHA512" (case-insensitive).
func ParseAlgorithm(s string) (Algorithm, error) {
	switch {
	case equalFold(s, "SHA1"):
		return SHA1, nil
	case equalFold(s, "SHA256"):
		return SHA256, nil
	case equalFold(s, "SHA512"):
		return SHA512, nil
	}
	return 0, fmt.Errorf("%w: %q (use SHA1, SHA256 or SHA512)", ErrUnknownAlgorithm, truncate(s))
}

func (a Algorithm) hash() (func() hash.Hash, error) {
	switch a {
	case SHA1:
		return sha1.New, nil
	case SHA256:
		return sha256.New, nil
	case SHA512:
		return sha512.New, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrUnknownAlgorithm, a)
}

// Type is the kind of token: counter-based or time-based.
type Type uint8

// Token types.
const (
	TypeHOTP Type = iota + 1
	TypeTOTP
)

// String returns "hotp" or "totp", as in otpauth URIs.
func (t Type) String() string {
	switch t {
	case TypeHOTP:
		return "hotp"
	case TypeTOTP:
		return "totp"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// ParseType accepts "hotp" or "totp" (case-insensitive).
func ParseType(s string) (Type, error) {
	switch {
	case equalFold(s, "hotp"):
		return TypeHOTP, nil
	case equalFold(s, "totp"):
		return TypeTOTP, nil
	}
	return 0, fmt.Errorf("%w: %q (use totp or hotp)", ErrUnknownType, truncate(s))
}

// Limits of the parameters this package accepts.
const (
	MinDigits = 6
	MaxDigits = 10
	// MaxPeriod bounds a TOTP step to one day; longer steps are not one-time passwords.
	MaxPeriod = 86400
	// MinSecretLen is RFC 4226's minimum shared secret length (128 bits).
	MinSecretLen = 16
	// MaxSecretLen bounds a secret to 1 KiB.
	MaxSecretLen = 1024
	// MaxWindow bounds how many steps or counters a single Verify may try.
	MaxWindow = 1000
)

// Errors callers may branch on.
var (
	ErrUnknownAlgorithm = errors.New("otp: unknown algorithm")
	ErrUnknownType      = errors.New("otp: unknown token type")
	ErrInvalidParams    = errors.New("otp: invalid token parameters")
	// ErrMalformedCode means the code has the wrong length or a non-digit:
	// it could never match, so callers may reject it before any HMAC work.
	ErrMalformedCode = errors.New("otp: malformed code")
	// ErrNoMatch means a well-formed code matched no step or counter in the window.
	ErrNoMatch = errors.New("otp: code does not match")
)

// Params describe a token: everything but its secret.
type Params struct {
	Type      Type
	Algorithm Algorithm
	Digits    int
	// Period is the TOTP step in seconds (RFC 6238 X); 30 when zero is validated away by Normalize.
	Period uint64
	// T0 is the Unix time TOTP steps count from (RFC 6238 T0), usually 0.
	T0 int64
}

// DefaultTOTP is what every authenticator app reads without extra URI parameters.
var DefaultTOTP = Params{Type: TypeTOTP, Algorithm: SHA1, Digits: 6, Period: 30}

// Validate reports whether p is a token this package can generate and verify.
func (p Params) Validate() error {
	if p.Type != TypeHOTP && p.Type != TypeTOTP {
		return fmt.Errorf("%w: type %v", ErrInvalidParams, p.Type)
	}
	if _, err := p.Algorithm.hash(); err != nil {
		return err
	}
	if p.Digits < MinDigits || p.Digits > MaxDigits {
		return fmt.Errorf("%w: %d digits (use %d to %d)", ErrInvalidParams, p.Digits, MinDigits, MaxDigits)
	}
	if p.Type == TypeTOTP && (p.Period == 0 || p.Period > MaxPeriod) {
		return fmt.Errorf("%w: period %d s (use 1 to %d)", ErrInvalidParams, p.Period, MaxPeriod)
	}
	return nil
}

// Window is how far from the expected step or counter a code may be.
// For TOTP, Back and Forward count steps either side of the current one
// (RFC 6238 recommends at most one step back). For HOTP, Forward is the
// look-ahead after the given counter and Back is ignored.
type Window struct {
	Back, Forward int
}

var pow10 = [...]uint64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000, 10000000000}

// HOTP returns the RFC 4226 code for counter, with digits digits (6 to 10).
func HOTP(alg Algorithm, secret []byte, counter uint64, digits int) (string, error) {
	p := Params{Type: TypeHOTP, Algorithm: alg, Digits: digits}
	if err := p.Validate(); err != nil {
		return "", err
	}
	h, _ := alg.hash()
	var buf [MaxDigits]byte
	c := newCoder(h, secret)
	return string(c.code(counter, digits, buf[:digits])), nil
}

// TOTPStep returns the RFC 6238 time step T = floor((unix(t) - t0) / period).
// Times before t0 give step 0.
func TOTPStep(t time.Time, period uint64, t0 int64) uint64 {
	u := t.Unix()
	if u <= t0 || period == 0 {
		return 0
	}
	return uint64(u-t0) / period
}

// StepTime returns the start of TOTP step s: the inverse of [TOTPStep].
func StepTime(step, period uint64, t0 int64) time.Time {
	return time.Unix(t0+int64(step*period), 0).UTC()
}

// Step returns the counter value used at time t: the TOTP step for TOTP params.
func (p Params) Step(t time.Time) uint64 { return TOTPStep(t, p.Period, p.T0) }

// Generate returns the code at counter (HOTP) or at time t (TOTP).
// For HOTP t is ignored; for TOTP counter is ignored.
func (p Params) Generate(secret []byte, counter uint64, t time.Time) (string, error) {
	if p.Type == TypeTOTP {
		counter = p.Step(t)
	}
	return HOTP(p.Algorithm, secret, counter, p.Digits)
}

// CodeAt returns the code for an explicit counter or TOTP step.
func (p Params) CodeAt(secret []byte, counter uint64) (string, error) {
	return HOTP(p.Algorithm, secret, counter, p.Digits)
}

// Verify checks code against a TOTP token at time now, trying the steps
// [step-w.Back, step+w.Forward]. It returns the step that matched. Every
// candidate is computed and compared in constant time, so the time taken does
// not depend on which step matched.
//
// Verify does not enforce one-time use: callers accept the match only if it
// is greater than the last step they recorded.
func (p Params) Verify(secret []byte, code string, now time.Time, w Window) (uint64, error) {
	if p.Type != TypeTOTP {
		return 0, fmt.Errorf("%w: Verify is for TOTP; use VerifyCounter for HOTP", ErrInvalidParams)
	}
	step := p.Step(now)
	lo := step - uint64(max(w.Back, 0))
	if uint64(max(w.Back, 0)) > step {
		lo = 0
	}
	hi := step + uint64(max(w.Forward, 0))
	return p.verifyRange(secret, code, lo, hi)
}

// VerifyCounter checks code against an HOTP token whose next expected counter
// is next, trying next..next+lookahead. It returns the counter that matched;
// the caller's next expected counter becomes that value + 1.
func (p Params) VerifyCounter(secret []byte, code string, next uint64, lookahead int) (uint64, error) {
	if lookahead < 0 {
		lookahead = 0
	}
	if next > math.MaxUint64-uint64(lookahead) {
		return 0, fmt.Errorf("%w: counter exhausted", ErrInvalidParams)
	}
	return p.verifyRange(secret, code, next, next+uint64(lookahead))
}

// VerifyRange checks code against every counter or step in [lo, hi] and
// returns the one that matched. All candidates are computed and compared in
// constant time. If several match (a collision in the code space), the lowest wins.
func (p Params) VerifyRange(secret []byte, code string, lo, hi uint64) (uint64, error) {
	return p.verifyRange(secret, code, lo, hi)
}

func (p Params) verifyRange(secret []byte, code string, lo, hi uint64) (uint64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	if err := CheckCode(code, p.Digits); err != nil {
		return 0, err
	}
	if hi < lo || hi-lo >= MaxWindow {
		return 0, fmt.Errorf("%w: window of %d codes is larger than %d", ErrInvalidParams, hi-lo+1, MaxWindow)
	}
	h, _ := p.Algorithm.hash()
	c := newCoder(h, secret)
	var buf [MaxDigits]byte
	var found int
	var match uint64
	for ctr := lo; ; ctr++ {
		got := c.code(ctr, p.Digits, buf[:p.Digits])
		eq := subtle.ConstantTimeCompare(got, []byte(code))
		first := eq & (1 - found)
		match = uint64(subtle.ConstantTimeSelect(first, 1, 0))*ctr + uint64(subtle.ConstantTimeSelect(first, 0, 1))*match
		found |= eq
		if ctr == hi {
			break
		}
	}
	if found == 0 {
		return 0, ErrNoMatch
	}
	return match, nil
}

// CheckCode reports whether code is exactly digits ASCII digits.
func CheckCode(code string, digits int) error {
	if len(code) != digits {
		return fmt.Errorf("%w: got %d characters, want %d digits", ErrMalformedCode, len(code), digits)
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return fmt.Errorf("%w: only digits 0-9 are allowed", ErrMalformedCode)
		}
	}
	return nil
}

// coder computes HOTP values with one HMAC instance, reset between counters,
// so that verifying a window allocates once.
type coder struct {
	mac hash.Hash
	msg [8]byte
	sum [sha512.Size]byte
}

func newCoder(h func() hash.Hash, secret []byte) *coder {
	return &coder{mac: hmac.New(h, secret)}
}

// code writes the digits-long code for counter into dst (len(dst) == digits) and returns it.
func (c *coder) code(counter uint64, digits int, dst []byte) []byte {
	c.mac.Reset()
	binary.BigEndian.PutUint64(c.msg[:], counter)
	c.mac.Write(c.msg[:])
	sum := c.mac.Sum(c.sum[:0])
	off := sum[len(sum)-1] & 0x0f
	bin := uint64(binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff)
	v := bin % pow10[digits]
	for i := digits - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
	return dst
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// truncate keeps user-supplied text in error messages short.
func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
