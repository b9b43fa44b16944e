// Package otp implements HOTP (RFC 4226) and TOTP (RFC 6238) one-time passwords
// and the otpauth:// Key URI format read by Google Authenticator, FreeOTP and Aegis.
//
// The package does no I/O and keeps no state. For the common case, describe a
// token with [Params] and call [Params.Generate] or [Params.Verify]:
//
//	p := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
//	step, err := p.Verify(secret, code, time.Now(), otp.Window{Back: 1, Forward: 1})
//	if err == nil && step > lastUsedStep { /* accept, then record step */ }
//
// For HOTP, use [Params.VerifyCounter] with the next expected counter
// ([NextCounter]) and a look-ahead. Both return which step or counter
// matched. They do not know which codes were used before: callers enforce
// one-time use by accepting a match only at or after [NextCounter] (above
// the last one they recorded), and recording it atomically (see the store
// and offline packages). An error
// wrapping [ErrMalformedCode] or [ErrNoMatch] is a failed attempt and should
// count towards the caller's lockout.
//
// Every candidate in a window is computed and compared in constant time, and
// a verification allocates nothing. [HOTP] and [TOTPStep] are the raw
// building blocks for callers that hold the counter themselves.
//
// [ParseURI] reads an otpauth:// URI strictly into a [Key]; [Key.URI] writes
// one for an authenticator app (render it with internal/qr). docs/otp.md is
// the user-facing description.
package otp

import (
	"crypto/fips140"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/outpost-auth/outpost/internal/ident"
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
	return 0, fmt.Errorf("%w: %q (use SHA1, SHA256 or SHA512)", ErrUnknownAlgorithm, ident.Clip(s))
}

// check reports whether a is an algorithm this package (and this process) can use.
func (a Algorithm) check() error {
	switch a {
	case SHA1:
		// crypto/sha1 panics under GODEBUG=fips140=only; say so instead.
		if fips140.Enforced() {
			return fmt.Errorf("%w: SHA1 is not allowed in FIPS 140-only mode (use SHA256 or SHA512)", ErrUnknownAlgorithm)
		}
		return nil
	case SHA256, SHA512:
		return nil
	}
	return fmt.Errorf("%w: %v (use SHA1, SHA256 or SHA512)", ErrUnknownAlgorithm, a)
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
	return 0, fmt.Errorf("%w: %q (use totp or hotp)", ErrUnknownType, ident.Clip(s))
}

// Limits of the parameters this package accepts.
const (
	MinDigits = 6
	MaxDigits = 10
	// MaxPeriod bounds a TOTP step to one day; longer steps are not one-time passwords.
	MaxPeriod = 86400
	// MinSecretLen is RFC 4226's minimum shared secret length (128 bits).
	// [ParseURI] and [Key.Validate] enforce it; [HOTP] and [Params] do not,
	// so that callers can check their own stored secrets.
	MinSecretLen = 16
	// MaxSecretLen bounds a secret to 1 KiB.
	MaxSecretLen = 1024
	// MaxWindow bounds how many steps or counters a single verification may try.
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
	// Digits is the code length, 6 to 10.
	Digits int
	// Period is the TOTP step in seconds (RFC 6238 X), 1 to [MaxPeriod];
	// authenticator apps assume 30. Unused for HOTP.
	Period uint64
	// T0 is the Unix time TOTP steps count from (RFC 6238 T0), usually 0.
	// otpauth URIs cannot carry it.
	T0 int64
}

// DefaultTOTP is what every authenticator app reads without extra URI parameters.
var DefaultTOTP = Params{Type: TypeTOTP, Algorithm: SHA1, Digits: 6, Period: 30}

// Validate reports whether p is a token this package can generate and verify.
// Every error wraps [ErrInvalidParams] or [ErrUnknownAlgorithm].
func (p Params) Validate() error {
	if p.Type != TypeHOTP && p.Type != TypeTOTP {
		return fmt.Errorf("%w: type %v (use TypeTOTP or TypeHOTP)", ErrInvalidParams, p.Type)
	}
	if err := p.Algorithm.check(); err != nil {
		return err
	}
	if p.Digits < MinDigits || p.Digits > MaxDigits {
		return fmt.Errorf("%w: %d digits (use %d to %d)", ErrInvalidParams, p.Digits, MinDigits, MaxDigits)
	}
	if p.Type == TypeTOTP && (p.Period == 0 || p.Period > MaxPeriod) {
		return fmt.Errorf("%w: period %d s (use 1 to %d; authenticator apps expect 30)", ErrInvalidParams, p.Period, MaxPeriod)
	}
	return nil
}

// Window is how far from the expected step or counter a code may be.
// For TOTP, Back and Forward count steps either side of the current one
// (RFC 6238 recommends at most one step back for network delay; a small
// Forward absorbs a verifier clock that runs slow). For HOTP, use
// [Params.VerifyCounter]'s look-ahead instead. Negative values count as 0,
// and at most [MaxWindow] codes are tried in all.
type Window struct {
	Back, Forward int
}

// Range returns the steps [step-Back, step+Forward] the window spans around
// step, clamped at 0 and at the largest step. With Back 0 and Forward set to
// a look-ahead, it is an HOTP window after the next expected counter.
func (w Window) Range(step uint64) (lo, hi uint64) {
	back, fwd := uint64(max(w.Back, 0)), uint64(max(w.Forward, 0))
	return step - min(back, step), step + min(fwd, math.MaxUint64-step)
}

// NextCounter returns the first counter or step a code may still be accepted
// for: 0 for a token never used, else lastUsed+1. It is the one-time-use
// rule every verifier applies (online, on a field device, and when a
// bundle's entries are chosen): a match below it is a replay.
func NextCounter(used bool, lastUsed uint64) uint64 {
	if !used {
		return 0
	}
	return lastUsed + 1
}

// HOTP returns the RFC 4226 code for counter, with digits digits (6 to 10).
// Secrets longer than the hash block are hashed first, as HMAC specifies.
func HOTP(alg Algorithm, secret []byte, counter uint64, digits int) (string, error) {
	p := Params{Type: TypeHOTP, Algorithm: alg, Digits: digits}
	if err := p.Validate(); err != nil {
		return "", err
	}
	return p.code(secret, counter), nil
}

func (p Params) code(secret []byte, counter uint64) string {
	var m mac
	m.init(p.Algorithm, secret)
	var buf [MaxDigits]byte
	formatCode(buf[:p.Digits], m.truncated(counter))
	m.wipe()
	return string(buf[:p.Digits])
}

// TOTPStep returns the RFC 6238 time step T = floor((unix(t) - t0) / period).
// Times before t0 give step 0, as does a period of 0.
func TOTPStep(t time.Time, period uint64, t0 int64) uint64 {
	u := t.Unix()
	if u <= t0 || period == 0 {
		return 0
	}
	// u > t0, so the difference fits in a uint64 even where it overflows an int64.
	return uint64(u-t0) / period
}

// StepTime returns the start of TOTP step s: the inverse of [TOTPStep].
// The result wraps for steps beyond the year 292277026596.
func StepTime(step, period uint64, t0 int64) time.Time {
	return time.Unix(t0+int64(step*period), 0).UTC()
}

// Step returns the TOTP step of time t for these params (0 before T0).
func (p Params) Step(t time.Time) uint64 { return TOTPStep(t, p.Period, p.T0) }

// Generate returns the code at counter (HOTP) or at time t (TOTP).
// For HOTP t is ignored; for TOTP counter is ignored. A TOTP time before T0
// gives the code of step 0.
func (p Params) Generate(secret []byte, counter uint64, t time.Time) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	if p.Type == TypeTOTP {
		counter = p.Step(t)
	}
	return p.code(secret, counter), nil
}

// CodeAt returns the code for an explicit counter or TOTP step.
func (p Params) CodeAt(secret []byte, counter uint64) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	return p.code(secret, counter), nil
}

// Verify checks code against a TOTP token at time now, trying the steps
// [step-w.Back, step+w.Forward] (clamped at step 0). It returns the step
// that matched; if several match, the lowest. Every candidate is computed
// and compared in constant time, so the time taken does not depend on which
// step matched, and nothing is allocated.
//
// Verify does not enforce one-time use: callers accept the match only if it
// is greater than the last step they recorded, then record it.
// Before T0 the current step is 0, as in [TOTPStep].
//
// Errors: [ErrMalformedCode] (wrong length, non-digit), [ErrNoMatch],
// [ErrInvalidParams] (HOTP params, bad params or a window over [MaxWindow]).
func (p Params) Verify(secret []byte, code string, now time.Time, w Window) (uint64, error) {
	if p.Type != TypeTOTP {
		return 0, fmt.Errorf("%w: Verify is for TOTP; use VerifyCounter for HOTP", ErrInvalidParams)
	}
	if err := p.Validate(); err != nil {
		return 0, err
	}
	back, fwd := uint64(max(w.Back, 0)), uint64(max(w.Forward, 0))
	if back >= MaxWindow || fwd >= MaxWindow || back+fwd >= MaxWindow {
		return 0, fmt.Errorf("%w: window of %d back and %d forward is more than %d codes", ErrInvalidParams, back, fwd, MaxWindow)
	}
	lo, hi := w.Range(p.Step(now))
	return p.verifyRange(secret, code, lo, hi)
}

// VerifyCounter checks code against an HOTP token whose next expected counter
// is next, trying next..next+lookahead (RFC 4226's look-ahead window s). It
// returns the counter that matched (the lowest, if several); the caller's next
// expected counter becomes that value + 1, recorded atomically with the
// acceptance. Negative lookahead counts as 0.
func (p Params) VerifyCounter(secret []byte, code string, next uint64, lookahead int) (uint64, error) {
	lookahead = max(lookahead, 0)
	if lookahead >= MaxWindow {
		return 0, fmt.Errorf("%w: look-ahead of %d is larger than %d codes", ErrInvalidParams, lookahead, MaxWindow)
	}
	if next > math.MaxUint64-uint64(lookahead) {
		return 0, fmt.Errorf("%w: counter exhausted (issue a new secret)", ErrInvalidParams)
	}
	return p.VerifyRange(secret, code, next, next+uint64(lookahead))
}

// VerifyRange checks code against every counter or step in [lo, hi] and
// returns the one that matched; if several match (a collision in the code
// space), the lowest. All candidates are computed and compared in constant
// time.
func (p Params) VerifyRange(secret []byte, code string, lo, hi uint64) (uint64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	if hi < lo || hi-lo >= MaxWindow {
		return 0, fmt.Errorf("%w: range [%d, %d] is empty or larger than %d codes", ErrInvalidParams, lo, hi, MaxWindow)
	}
	return p.verifyRange(secret, code, lo, hi)
}

// verifyRange is VerifyRange for valid params and a valid range.
func (p Params) verifyRange(secret []byte, code string, lo, hi uint64) (uint64, error) {
	if err := CheckCode(code, p.Digits); err != nil {
		return 0, err
	}
	var want, got [MaxDigits]byte
	copy(want[:], code)
	var m mac
	m.init(p.Algorithm, secret)
	var found, match uint64 // found is 0 or 1; no branch depends on either
	for ctr := lo; ; ctr++ {
		formatCode(got[:p.Digits], m.truncated(ctr))
		eq := uint64(subtle.ConstantTimeCompare(got[:p.Digits], want[:p.Digits]))
		first := eq &^ found
		mask := -first // all ones if this is the first match
		match = match&^mask | ctr&mask
		found |= first
		if ctr == hi {
			break
		}
	}
	m.wipe()
	clear(got[:])
	if found == 0 {
		return 0, ErrNoMatch
	}
	return match, nil
}

// formatCode writes the last len(dst) decimal digits of v to dst, zero-padded.
func formatCode(dst []byte, v uint32) {
	v = modDigits(v, len(dst))
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

// CheckCode reports whether code is exactly digits ASCII digits 0-9. Other
// Unicode digits (full-width, Arabic-Indic) and surrounding spaces are
// rejected: normalise user input before calling if you want to accept them.
// Errors wrap [ErrMalformedCode] and never include the code.
func CheckCode(code string, digits int) error {
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return fmt.Errorf("%w: only the digits 0-9 are allowed; enter the %d-digit code as shown", ErrMalformedCode, digits)
		}
	}
	if len(code) != digits {
		return fmt.Errorf("%w: %d digits, want %d", ErrMalformedCode, len(code), digits)
	}
	return nil
}

// modDigits returns v mod 10^digits. The divisors are constants, so the
// compiler replaces the division by multiplications, whose time does not
// depend on v (a hardware divide's may).
func modDigits(v uint32, digits int) uint32 {
	switch digits {
	case 6:
		return v % 1000000
	case 7:
		return v % 10000000
	case 8:
		return v % 100000000
	case 9:
		return v % 1000000000
	}
	return v // 10 digits: v < 2^31 < 10^10
}

// mac computes HMAC (RFC 2104) of 8-byte counters under one key without
// allocating: the padded key blocks live in the struct, and each HMAC is two
// one-shot hashes (sha*.Sum) over them. This costs two more block
// compressions per counter than crypto/hmac's saved state, but hmac.New and
// its first Reset allocate about ten times per key, which costs more for the
// one to a few dozen counters a verification tries (benchmarked: ±1 window,
// 0 allocations and about a third less time than hmac.New + Reset). The
// key-equivalent pads are wiped by wipe.
type mac struct {
	alg Algorithm
	bs  int                                  // hash block size
	in  [sha512.BlockSize + 8]byte           // key^ipad || counter
	out [sha512.BlockSize + sha512.Size]byte // key^opad || inner hash
}

func (m *mac) init(alg Algorithm, secret []byte) {
	m.alg = alg
	m.bs = sha1.BlockSize // also SHA-256's
	if alg == SHA512 {
		m.bs = sha512.BlockSize
	}
	key := secret
	var hashed [sha512.Size]byte
	if len(key) > m.bs {
		key = hashed[:m.sum(&hashed, key)]
	}
	for i := range m.bs {
		var b byte
		if i < len(key) {
			b = key[i]
		}
		m.in[i] = b ^ 0x36
		m.out[i] = b ^ 0x5c
	}
	clear(hashed[:])
}

// sum writes the hash of data to dst and returns its length.
func (m *mac) sum(dst *[sha512.Size]byte, data []byte) int {
	switch m.alg {
	case SHA1:
		s := sha1.Sum(data)
		return copy(dst[:], s[:])
	case SHA256:
		s := sha256.Sum256(data)
		return copy(dst[:], s[:])
	default:
		s := sha512.Sum512(data)
		return copy(dst[:], s[:])
	}
}

// truncated returns RFC 4226's dynamic truncation of HMAC(key, counter): a
// 31-bit number.
func (m *mac) truncated(counter uint64) uint32 {
	var h [sha512.Size]byte
	binary.BigEndian.PutUint64(m.in[m.bs:], counter)
	n := m.sum(&h, m.in[:m.bs+8])
	copy(m.out[m.bs:], h[:n])
	n = m.sum(&h, m.out[:m.bs+n])
	off := h[n-1] & 0x0f
	return binary.BigEndian.Uint32(h[off:off+4]) & 0x7fffffff
}

func (m *mac) wipe() {
	clear(m.in[:])
	clear(m.out[:])
}

// equalFold compares public names (algorithms, types) only, never secrets.
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
