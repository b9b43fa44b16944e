// Package base45 is the Base45 encoding of RFC 9285: bytes as characters
// of the QR code alphanumeric set (0-9 A-Z space $ % * + - . / :), so a
// QR code of the text stays in alphanumeric mode (5.5 bits a character).
//
// Decode accepts only canonical input: every encoded string decodes to
// exactly one byte string and encodes back to itself.
package base45

import (
	"errors"
	"strings"
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

// ErrInvalid is returned by Decode for a character outside the alphabet, a
// length that is 1 modulo 3, or a group whose value is out of range.
var ErrInvalid = errors.New("base45: invalid input")

// EncodedLen is the length of the encoding of n bytes.
func EncodedLen(n int) int { return n/2*3 + n%2*2 }

// Encode returns the Base45 encoding of b.
func Encode(b []byte) string {
	var sb strings.Builder
	sb.Grow(EncodedLen(len(b)))
	for i := 0; i+1 < len(b); i += 2 {
		n := int(b[i])<<8 | int(b[i+1])
		sb.WriteByte(alphabet[n%45])
		sb.WriteByte(alphabet[n/45%45])
		sb.WriteByte(alphabet[n/(45*45)])
	}
	if len(b)%2 == 1 {
		n := int(b[len(b)-1])
		sb.WriteByte(alphabet[n%45])
		sb.WriteByte(alphabet[n/45])
	}
	return sb.String()
}

// Decode returns the bytes s encodes, or ErrInvalid.
func Decode(s string) ([]byte, error) {
	if len(s)%3 == 1 {
		return nil, ErrInvalid
	}
	out := make([]byte, 0, len(s)/3*2+len(s)%3/2)
	for i := 0; i < len(s); i += 3 {
		end := min(i+3, len(s))
		n, w := 0, 1
		for j := i; j < end; j++ {
			d := strings.IndexByte(alphabet, s[j])
			if d < 0 {
				return nil, ErrInvalid
			}
			n += d * w
			w *= 45
		}
		if end-i == 3 {
			if n > 0xffff {
				return nil, ErrInvalid
			}
			out = append(out, byte(n>>8), byte(n))
		} else {
			if n > 0xff {
				return nil, ErrInvalid
			}
			out = append(out, byte(n))
		}
	}
	return out, nil
}
