package otp

import (
	"encoding/base32"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// MaxURILen bounds an otpauth URI; real ones are under 300 bytes.
const MaxURILen = 4096

// ErrInvalidURI is wrapped by every error of [ParseURI].
var ErrInvalidURI = errors.New("otp: invalid otpauth URI")

// Key is a token as carried by an otpauth:// Key URI: parameters, secret and labels.
type Key struct {
	Params
	Secret  []byte
	Issuer  string
	Account string
	// Counter is the initial HOTP counter (required for hotp URIs).
	Counter uint64
}

// b32 is the RFC 4648 alphabet without padding, as authenticator apps expect.
var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// EncodeSecret returns the unpadded base32 form of a secret used in otpauth URIs.
func EncodeSecret(secret []byte) string { return b32.EncodeToString(secret) }

// DecodeSecret accepts base32 with or without padding, any case, spaces ignored.
func DecodeSecret(s string) ([]byte, error) {
	s = strings.ToUpper(strings.ReplaceAll(s, " ", ""))
	s = strings.TrimRight(s, "=")
	if s == "" {
		return nil, errors.New("secret is empty")
	}
	if len(s) > MaxSecretLen*8/5+1 {
		return nil, fmt.Errorf("secret is longer than %d bytes", MaxSecretLen)
	}
	b, err := b32.DecodeString(s)
	if err != nil {
		return nil, errors.New("secret is not base32 (letters A-Z and digits 2-7)")
	}
	return b, nil
}

// URI returns the otpauth:// Key URI of k, with the secret in unpadded base32.
// Parameters equal to the authenticator defaults (SHA1, 6 digits, 30 s) are still
// written out, because some apps ignore missing ones inconsistently.
func (k *Key) URI() string {
	label := url.PathEscape(k.Account)
	if k.Issuer != "" {
		label = url.PathEscape(k.Issuer) + ":" + label
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
	// url.Values encodes spaces as '+', which authenticators show literally.
	q := strings.ReplaceAll(v.Encode(), "+", "%20")
	return "otpauth://" + k.Type.String() + "/" + label + "?" + q
}

// ParseURI parses an otpauth:// Key URI strictly: the scheme, the type, a
// base32 secret of at least 128 bits, and algorithm, digits, period and
// counter within this package's limits. Unknown parameters are ignored (apps
// add their own, such as image=), but a parameter given twice is an error.
func ParseURI(s string) (*Key, error) {
	fail := func(format string, a ...any) (*Key, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrInvalidURI}, a...)...)
	}
	if len(s) > MaxURILen {
		return fail("longer than %d bytes", MaxURILen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fail("not a URI")
	}
	if u.Scheme != "otpauth" {
		return fail("scheme is %q, want otpauth://", truncate(u.Scheme))
	}
	typ, err := ParseType(u.Host)
	if err != nil {
		return fail("type %q is not totp or hotp", truncate(u.Host))
	}
	k := &Key{Params: Params{Type: typ, Algorithm: SHA1, Digits: 6}}
	if typ == TypeTOTP {
		k.Period = 30
	}
	label := strings.TrimPrefix(u.Path, "/")
	if label == "" {
		return fail("the label (account name) is missing")
	}
	if issuer, account, ok := strings.Cut(label, ":"); ok {
		k.Issuer, k.Account = strings.TrimSpace(issuer), strings.TrimSpace(account)
	} else {
		k.Account = strings.TrimSpace(label)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fail("query is malformed")
	}
	for name, vals := range q {
		if len(vals) > 1 {
			return fail("parameter %q is given %d times", truncate(name), len(vals))
		}
	}
	sec := q.Get("secret")
	if sec == "" {
		return fail("the secret parameter is missing")
	}
	if k.Secret, err = DecodeSecret(sec); err != nil {
		return fail("%v", err)
	}
	if len(k.Secret) < MinSecretLen {
		return fail("secret is %d bytes, RFC 4226 requires at least %d", len(k.Secret), MinSecretLen)
	}
	if iss := q.Get("issuer"); iss != "" {
		if k.Issuer != "" && k.Issuer != iss {
			return fail("issuer parameter %q disagrees with label prefix %q", truncate(iss), truncate(k.Issuer))
		}
		k.Issuer = iss
	}
	if a, ok := q["algorithm"]; ok {
		if k.Algorithm, err = ParseAlgorithm(a[0]); err != nil {
			return fail("algorithm %q is not SHA1, SHA256 or SHA512", truncate(a[0]))
		}
	}
	if d, ok := q["digits"]; ok {
		n, err := strconv.Atoi(d[0])
		if err != nil || n < MinDigits || n > MaxDigits {
			return fail("digits %q is not a number from %d to %d", truncate(d[0]), MinDigits, MaxDigits)
		}
		k.Digits = n
	}
	if p, ok := q["period"]; ok {
		n, err := strconv.ParseUint(p[0], 10, 64)
		if err != nil || n == 0 || n > MaxPeriod {
			return fail("period %q is not a number of seconds from 1 to %d", truncate(p[0]), MaxPeriod)
		}
		if typ != TypeTOTP {
			return fail("period is only for totp URIs")
		}
		k.Period = n
	}
	if c, ok := q["counter"]; ok {
		n, err := strconv.ParseUint(c[0], 10, 64)
		if err != nil {
			return fail("counter %q is not a non-negative 64-bit number", truncate(c[0]))
		}
		if typ != TypeHOTP {
			return fail("counter is only for hotp URIs")
		}
		k.Counter = n
	} else if typ == TypeHOTP {
		return fail("hotp URIs need a counter parameter")
	}
	if err := k.Params.Validate(); err != nil {
		return fail("%v", err)
	}
	return k, nil
}
