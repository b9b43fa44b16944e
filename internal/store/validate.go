package store

import (
	"fmt"
	"slices"
	"strings"

	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/otp"
)

// The checks below keep records the rest of Outpost can rely on. They are
// the last line, not the first: the server validates requests with its own,
// friendlier messages. Every failure wraps ErrInvalid.

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// checkID checks an identifier with the one rule for ids (ident.Check).
func checkID(what, id string) error { return wrapInvalid(ident.Check(what, id)) }

// checkText checks free text (names) with ident.CheckText.
func checkText(what, s string) error { return wrapInvalid(ident.CheckText(what, s)) }

func wrapInvalid(err error) error {
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

func checkBlob(what string, b []byte) error {
	if len(b) > MaxBlobLen {
		return invalid("%s is %d bytes, more than %d", what, len(b), MaxBlobLen)
	}
	return nil
}

func checkLimit(limit int) error {
	if limit < 1 || limit > MaxListLimit {
		return invalid("page limit %d out of range (use 1 to %d)", limit, MaxListLimit)
	}
	return nil
}

// first returns the first error of a list of checks.
func first(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func checkNonNegative(what string, n int64) error {
	if n < 0 {
		return invalid("%s %d is negative", what, n)
	}
	return nil
}

func checkRealm(r *Realm) error {
	return first(checkID("realm ID", r.ID), checkText("realm name", r.Name))
}

func checkUser(u *User) error {
	return first(checkID("realm ID", u.Realm), checkID("user ID", u.ID), checkText("display name", u.DisplayName),
		checkNonNegative("failure count", int64(u.Failures)), checkBlob("PIN hash", u.PINHash))
}

var tokenStatuses = []string{TokenPending, TokenActive, TokenDisabled}

func checkStatus(s string) error {
	if !slices.Contains(tokenStatuses, s) {
		return invalid("token status %q (use %s)", ident.Clip(s), strings.Join(tokenStatuses, ", "))
	}
	return nil
}

// checkToken checks a token's parameters with the otp package's own rules
// (otp.Params.Validate) and requires their canonical spelling, so that what
// is stored is exactly what otp.ParseType and otp.ParseAlgorithm print.
func checkToken(t *Token) error {
	if err := first(checkID("realm ID", t.Realm), checkID("user ID", t.UserID), checkID("token ID", t.ID)); err != nil {
		return err
	}
	typ, err := otp.ParseType(t.Type)
	if err != nil || typ.String() != t.Type {
		return invalid("token type %q (use totp or hotp)", ident.Clip(t.Type))
	}
	alg, err := otp.ParseAlgorithm(t.Algorithm)
	if err != nil || alg.String() != t.Algorithm {
		return invalid("token algorithm %q (use SHA1, SHA256 or SHA512)", ident.Clip(t.Algorithm))
	}
	if t.Period < 0 || (typ == otp.TypeHOTP && t.Period != 0) {
		return invalid("token period %d (HOTP tokens have period 0)", t.Period)
	}
	p := otp.Params{Type: typ, Algorithm: alg, Digits: t.Digits, Period: uint64(t.Period)}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	switch {
	case t.SeedMode == SeedDerived && len(t.SeedCiphertext) != 0:
		return invalid("a derived-seed token stores no seed ciphertext")
	case t.SeedMode == SeedRandom && len(t.SeedCiphertext) == 0:
		return invalid("a random-seed token needs its seed ciphertext")
	case t.SeedMode != SeedDerived && t.SeedMode != SeedRandom:
		return invalid("seed mode %q (use %s or %s)", ident.Clip(t.SeedMode), SeedDerived, SeedRandom)
	}
	return first(checkNonNegative("last used step or counter", t.LastUsed), checkStatus(t.Status), checkBlob("seed ciphertext", t.SeedCiphertext))
}

var apiScopes = []string{ScopeAdmin, ScopeIssuer, ScopeVerifier}

// checkAPIClient checks c. Realm may be empty: the server decides what a
// client outside every realm means.
func checkAPIClient(c *APIClient) error {
	var realmErr error
	if c.Realm != "" {
		realmErr = checkID("realm ID", c.Realm)
	}
	if err := first(realmErr, checkID("API client ID", c.ID), checkText("API client name", c.Name)); err != nil {
		return err
	}
	if len(c.Scopes) == 0 {
		return invalid("an API client needs at least one scope (%s)", strings.Join(apiScopes, ", "))
	}
	for i, s := range c.Scopes {
		if !slices.Contains(apiScopes, s) || slices.Contains(c.Scopes[:i], s) {
			return invalid("API scope %q unknown or repeated (use %s)", ident.Clip(s), strings.Join(apiScopes, ", "))
		}
	}
	if len(c.TokenHash) == 0 {
		return invalid("an API client needs its token hash")
	}
	return checkBlob("token hash", c.TokenHash)
}
