package otp

import (
	"encoding/base32"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/outpost-auth/outpost/internal/ident"
)

// MaxURILen bounds an otpauth URI; real ones are under 300 bytes.
const MaxURILen = 4096

// ErrInvalidURI is wrapped by every error of [ParseURI] and [Key.Validate].
var ErrInvalidURI = errors.New("otp: invalid otpauth URI")

// Key is a token as carried by an otpauth:// Key URI: parameters, secret and labels.
type Key struct {
	Params
	Secret []byte
	// Issuer names the service; it is the label prefix and the issuer parameter.
	Issuer string
	// Account names the user or device.
	Account string
	// Counter is the initial HOTP counter (required for hotp URIs).
	Counter uint64
}

// b32 is the RFC 4648 alphabet without padding, as authenticator apps expect.
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// maxSecretB32 is the longest base32 text of a MaxSecretLen secret.
const maxSecretB32 = (MaxSecretLen*8 + 4) / 5

// EncodeSecret returns the unpadded base32 form of a secret used in otpauth URIs.
func EncodeSecret(secret []byte) string { return b32.EncodeToString(secret) }

// DecodeSecret accepts base32 with or without padding, any case, spaces
// ignored (as people type secrets shown in groups of four). It rejects
// anything longer than [MaxSecretLen] bytes before decoding.
func DecodeSecret(s string) ([]byte, error) {
	if len(s) > 2*maxSecretB32 {
		return nil, fmt.Errorf("secret is longer than %d bytes", MaxSecretLen)
	}
	s = strings.ToUpper(strings.ReplaceAll(s, " ", ""))
	s = strings.TrimRight(s, "=")
	if s == "" {
		return nil, errors.New("secret is empty")
	}
	if len(s) > maxSecretB32 {
		return nil, fmt.Errorf("secret is longer than %d bytes", MaxSecretLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'A' || c > 'Z') && (c < '2' || c > '7') {
			return nil, errors.New("secret is not base32: use only the letters A-Z and digits 2-7")
		}
	}
	// Unpadded base32 ends with 0, 2, 4, 5 or 7 characters of a last group of
	// 8; encoding/base32 silently drops a last group of 1, 3 or 6.
	if r := len(s) % 8; r == 1 || r == 3 || r == 6 {
		return nil, fmt.Errorf("secret of %d base32 characters is cut short (not a whole number of bytes); copy it again", len(s))
	}
	b, err := b32.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("secret of %d base32 characters is cut short (not a whole number of bytes); copy it again", len(s))
	}
	return b, nil
}

// Validate reports whether k can be written as an otpauth URI that
// [ParseURI] reads back to an equal Key: valid [Params] with T0 = 0 (URIs
// cannot carry T0), no Period on HOTP and no Counter on TOTP, a secret of
// [MinSecretLen] to [MaxSecretLen] bytes, a non-empty account name, and
// names that are valid UTF-8 without control characters or surrounding
// spaces. Following the Key URI format, the issuer may not contain a colon,
// and the account may contain one only when there is an issuer.
// Errors wrap [ErrInvalidURI].
func (k *Key) Validate() error {
	fail := invalidURI
	if err := k.Params.Validate(); err != nil {
		return fail("%v", err)
	}
	if k.T0 != 0 {
		return fail("T0 is %d, but an otpauth URI cannot carry T0 (authenticator apps count from 0)", k.T0)
	}
	if k.Type == TypeHOTP && k.Period != 0 {
		return fail("period is set on an hotp key; HOTP has no period")
	}
	if k.Type == TypeTOTP && k.Counter != 0 {
		return fail("counter is set on a totp key; TOTP has no counter")
	}
	if len(k.Secret) < MinSecretLen {
		return fail("secret is %d bytes, RFC 4226 requires at least %d; issue a new random secret of 20 bytes", len(k.Secret), MinSecretLen)
	}
	if len(k.Secret) > MaxSecretLen {
		return fail("secret is %d bytes, more than %d", len(k.Secret), MaxSecretLen)
	}
	if err := checkName("issuer", k.Issuer); err != nil {
		return fail("%v", err)
	}
	if strings.Contains(k.Issuer, ":") {
		return fail("issuer %q contains a colon, which the label uses as its separator; remove it", ident.Clip(k.Issuer))
	}
	if k.Account == "" {
		return fail("the account name is missing; the label should be issuer:account")
	}
	if err := checkName("account name", k.Account); err != nil {
		return fail("%v", err)
	}
	if k.Issuer == "" && strings.Contains(k.Account, ":") {
		return fail("account name %q contains a colon but there is no issuer: it would be read as issuer:account; set an issuer", ident.Clip(k.Account))
	}
	if n := len(k.URI()); n > MaxURILen {
		return fail("the URI would be %d bytes, more than %d; shorten the names", n, MaxURILen)
	}
	return nil
}

// checkName rejects names that would not survive a round trip or that could
// forge lines in a log or a terminal.
func checkName(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	if strings.TrimSpace(s) != s {
		return fmt.Errorf("%s %q has spaces around it", what, ident.Clip(s))
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%s %q contains a control character (%U)", what, ident.Clip(s), r)
		}
	}
	return nil
}

// URI returns the otpauth:// Key URI of k, with the secret in unpadded base32.
// Parameters equal to the authenticator defaults (SHA1, 6 digits, 30 s) are still
// written out, because some apps ignore missing ones inconsistently. If
// k.Validate() fails, the URI may not parse back to k.
func (k *Key) URI() string {
	label := escapeName(k.Account)
	if k.Issuer != "" {
		label = escapeName(k.Issuer) + ":" + label
	}
	v := url.Values{}
	v.Set("secret", EncodeSecret(k.Secret))
	if k.Issuer != "" {
		v.Set("issuer", k.Issuer)
	}
	v.Set("algorithm", k.Algorithm.String())
	v.Set("digits", strconv.Itoa(k.Digits))
	if k.Type == TypeTOTP {
		v.Set("period", strconv.FormatUint(k.Period, 10))
	} else {
		v.Set("counter", strconv.FormatUint(k.Counter, 10))
	}
	// url.Values encodes spaces as '+', which authenticators show literally;
	// a literal '+' is already %2B.
	q := strings.ReplaceAll(v.Encode(), "+", "%20")
	return "otpauth://" + k.Type.String() + "/" + label + "?" + q
}

// escapeName escapes a label part. PathEscape leaves '+' alone, which some
// apps decode as a space, so it is written %2B.
func escapeName(s string) string {
	return strings.ReplaceAll(url.PathEscape(s), "+", "%2B")
}

// ParseURI parses an otpauth:// Key URI strictly: the scheme, the type
// (totp or hotp), a label "issuer:account" or "account" (the colon may be
// written %3A), a base32 secret of at least 128 bits, and algorithm, digits,
// period and counter within this package's limits. Defaults are those of
// authenticator apps: SHA1, 6 digits, 30 s. An issuer parameter must equal
// the label's issuer prefix. Unknown parameters are ignored (apps add their
// own, such as image=), but a parameter given twice, period on hotp, counter
// on totp, or a fragment is an error. Every error wraps [ErrInvalidURI], says
// what to fix and never contains the secret. A key ParseURI returns passes
// [Key.Validate], and its [Key.URI] parses back to an equal key.
func ParseURI(s string) (*Key, error) {
	fail := func(format string, a ...any) (*Key, error) { return nil, invalidURI(format, a...) }
	if len(s) > MaxURILen {
		return fail("%d bytes is longer than %d", len(s), MaxURILen)
	}
	u, err := url.Parse(s)
	if err != nil {
		// url's error quotes the input, secret included: do not wrap it.
		return fail("not a valid URI (check for spaces, control characters or a bad %%-escape)")
	}
	if u.Scheme != "otpauth" {
		return fail("scheme is %q, want otpauth://totp/... or otpauth://hotp/...", ident.Clip(u.Scheme))
	}
	if u.Opaque != "" {
		return fail("want otpauth://totp/... or otpauth://hotp/... (two slashes after otpauth:)")
	}
	if u.User != nil || u.Port() != "" {
		return fail("the type must be plain totp or hotp, with no user@ or :port")
	}
	typ, err := ParseType(u.Host)
	if err != nil {
		return fail("type %q is not totp or hotp", ident.Clip(u.Host))
	}
	if u.Fragment != "" || strings.HasSuffix(s, "#") {
		return fail("unexpected #fragment after the parameters")
	}
	k := &Key{Params: Params{Type: typ, Algorithm: SHA1, Digits: 6}}
	if typ == TypeTOTP {
		k.Period = 30
	}
	label := strings.TrimPrefix(u.Path, "/") // %3A is already decoded to ':'
	if label == "" {
		return fail("the label (issuer:account) is missing after otpauth://%v/", typ)
	}
	if issuer, account, ok := strings.Cut(label, ":"); ok {
		k.Issuer, k.Account = strings.TrimSpace(issuer), strings.TrimSpace(account)
		if k.Issuer == "" {
			return fail("the label has an empty issuer before ':'; write issuer:account or just account")
		}
	} else {
		k.Account = strings.TrimSpace(label)
	}
	if k.Account == "" {
		return fail("the account name in the label is empty; write issuer:account")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fail("the parameters after '?' are malformed (a bad %%-escape or a ';')")
	}
	if err := k.readParams(q); err != nil {
		return nil, err
	}
	if err := k.Validate(); err != nil {
		return nil, err
	}
	return k, nil
}

func invalidURI(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidURI}, a...)...)
}

// readParams sets k's secret, issuer, algorithm, digits, period and counter
// from a URI's parameters (k.Type and the label's issuer already set).
func (k *Key) readParams(q url.Values) error {
	for name, vals := range q {
		if len(vals) > 1 {
			return invalidURI("parameter %q is given %d times; give it once", ident.Clip(name), len(vals))
		}
	}
	sec, ok := q["secret"]
	if !ok || sec[0] == "" {
		return invalidURI("the secret parameter is missing; add secret=BASE32SECRET")
	}
	var err error
	if k.Secret, err = DecodeSecret(sec[0]); err != nil {
		return invalidURI("%v", err)
	}
	if iss, ok := q["issuer"]; ok && iss[0] != "" {
		iss := strings.TrimSpace(iss[0])
		if k.Issuer != "" && k.Issuer != iss {
			return invalidURI("issuer parameter %q disagrees with the label's issuer %q; make them equal", ident.Clip(iss), ident.Clip(k.Issuer))
		}
		k.Issuer = iss
	}
	if a, ok := q["algorithm"]; ok {
		if k.Algorithm, err = ParseAlgorithm(a[0]); err != nil {
			return invalidURI("algorithm %q is not SHA1, SHA256 or SHA512", ident.Clip(a[0]))
		}
	}
	if d, ok := q["digits"]; ok {
		n, err := strconv.ParseUint(d[0], 10, 8)
		if err != nil || n < MinDigits || n > MaxDigits {
			return invalidURI("digits %q is not a number from %d to %d", ident.Clip(d[0]), MinDigits, MaxDigits)
		}
		k.Digits = int(n)
	}
	if p, ok := q["period"]; ok {
		if k.Type != TypeTOTP {
			return invalidURI("period is only for totp URIs; remove it or use otpauth://totp/")
		}
		n, err := strconv.ParseUint(p[0], 10, 64)
		if err != nil || n == 0 || n > MaxPeriod {
			return invalidURI("period %q is not a number of seconds from 1 to %d (apps expect 30)", ident.Clip(p[0]), MaxPeriod)
		}
		k.Period = n
	}
	if c, ok := q["counter"]; ok {
		if k.Type != TypeHOTP {
			return invalidURI("counter is only for hotp URIs; remove it or use otpauth://hotp/")
		}
		n, err := strconv.ParseUint(c[0], 10, 64)
		if err != nil {
			return invalidURI("counter %q is not a number from 0 to 18446744073709551615", ident.Clip(c[0]))
		}
		k.Counter = n
	} else if k.Type == TypeHOTP {
		return invalidURI("hotp URIs need a counter parameter; add counter=0 for a new token")
	}
	return nil
}
