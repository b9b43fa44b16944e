// Package deliverycode makes and checks the one-time codes a delivery's
// recipient is given and reads out to the courier at the door.
//
// A code is Digits random decimal digits (crypto/rand, uniform) followed by
// one check digit computed with the Damm algorithm. The check digit catches
// every single-digit mistake and every swap of two adjacent digits, so a
// typo is told from a wrong code before any attempt is counted:
//
//	c, err := deliverycode.New(deliverycode.DefaultDigits) // "58203917" + check digit
//	...
//	code, err := deliverycode.Parse(entered)
//	switch {
//	case errors.Is(err, deliverycode.ErrTypo):      // ask again, costs no attempt
//	case errors.Is(err, deliverycode.ErrMalformed): // not a code at all
//	}
//	ok := deliverycode.Equal(code, want) // constant time
//
// The check digit adds no secrecy: the code space is 10^Digits. Callers that
// store codes keep only what verification needs (an HMAC under a derived
// key, a slow hash), never the code itself.
package deliverycode

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Lengths of the random part of a code, in digits (the check digit is extra).
const (
	MinDigits     = 6
	MaxDigits     = 16
	DefaultDigits = 8
)

var (
	// ErrTypo means the text has a code's form but its check digit is
	// wrong: a mistyped code, not a guess, which must cost no attempt.
	ErrTypo = errors.New("deliverycode: check digit does not match (a mistyped code): enter it again")
	// ErrMalformed means the text is not a code (wrong length or not digits).
	ErrMalformed = errors.New("deliverycode: not a delivery code")
)

// damm is the weakly totally anti-symmetric quasigroup of order 10 that
// H. Michael Damm published (2004) and that every Damm implementation uses.
var damm = [10][10]byte{
	{0, 3, 1, 7, 5, 9, 8, 6, 4, 2},
	{7, 0, 9, 2, 1, 5, 4, 8, 6, 3},
	{4, 2, 0, 6, 8, 7, 1, 3, 5, 9},
	{1, 7, 5, 0, 9, 8, 3, 4, 2, 6},
	{6, 1, 2, 3, 0, 4, 5, 9, 7, 8},
	{3, 6, 7, 4, 2, 0, 9, 5, 8, 1},
	{5, 8, 6, 9, 7, 2, 0, 1, 3, 4},
	{8, 9, 4, 5, 3, 6, 2, 0, 1, 7},
	{9, 4, 3, 8, 6, 1, 7, 2, 0, 5},
	{2, 5, 8, 1, 4, 3, 6, 7, 9, 0},
}

// interim runs the Damm quasigroup over the digits of s (all '0'..'9').
func interim(s string) byte {
	var r byte
	for i := 0; i < len(s); i++ {
		r = damm[r][s[i]-'0']
	}
	return r
}

// CheckDigit returns the Damm check digit of digits (decimal digits only;
// it panics on anything else, a programming error).
func CheckDigit(digits string) byte {
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			panic("deliverycode: CheckDigit of a non-digit")
		}
	}
	return '0' + interim(digits)
}

// New returns a fresh code of digits random digits and its check digit.
func New(digits int) (string, error) { return NewFrom(rand.Reader, digits) }

// NewFrom is New reading randomness from r (tests pass a fixed reader).
func NewFrom(r io.Reader, digits int) (string, error) {
	if digits < MinDigits || digits > MaxDigits {
		return "", fmt.Errorf("deliverycode: %d digits: want %d to %d", digits, MinDigits, MaxDigits)
	}
	out := make([]byte, 0, digits+1)
	buf := make([]byte, 2*digits)
	for len(out) < digits {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("deliverycode: reading randomness: %w", err)
		}
		for _, b := range buf {
			// 250 = 25 × 10: rejecting 250..255 keeps every digit equally likely.
			if b < 250 && len(out) < digits {
				out = append(out, '0'+b%10)
			}
		}
	}
	out = append(out, '0'+interim(string(out)))
	return string(out), nil
}

// Parse reads an entered code: spaces and hyphens (as codes are printed in
// groups) are dropped, then the code must be MinDigits+1 to MaxDigits+1
// decimal digits (ErrMalformed) whose last is the Damm check digit of the
// others (ErrTypo). It returns the code in its canonical form.
func Parse(s string) (string, error) {
	if len(s) > 4*(MaxDigits+1) {
		return "", ErrMalformed
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ' || c == '-':
		case c >= '0' && c <= '9':
			b.WriteByte(c)
		default:
			return "", ErrMalformed
		}
	}
	code := b.String()
	if len(code) < MinDigits+1 || len(code) > MaxDigits+1 {
		return "", ErrMalformed
	}
	// A string with its Damm check digit appended runs to 0.
	if interim(code) != 0 {
		return "", ErrTypo
	}
	return code, nil
}

// Equal reports whether two codes are the same, in time that depends on
// their lengths only.
func Equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
