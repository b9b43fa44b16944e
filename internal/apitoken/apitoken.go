// Package apitoken makes and checks API bearer tokens. A token is
// "opk_" + 43 characters of base64url (256 bits from crypto/rand); it is shown
// once. The server stores only HMAC-SHA256(k, token) with k derived from the
// master key, so a copied database neither reveals tokens nor lets anyone
// test guesses offline without the master key.
//
// [Clients] keeps the API clients those tokens belong to: Create makes one
// with its scopes and returns its token, Disable turns it off; both are
// written to the audit log. The server checks a bearer token with [Check],
// then looks up its [Hasher.Hash].
package apitoken

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/outpost-auth/outpost/internal/keys"
)

// Prefix marks Outpost API tokens (so secret scanners can find leaked ones).
const Prefix = "opk_"

// ErrMalformed is returned for a string that cannot be an API token.
var ErrMalformed = errors.New("apitoken: malformed token")

// Hasher hashes tokens for storage and lookup.
type Hasher struct{ key []byte }

// NewHasher derives the HMAC key from the master key.
func NewHasher(m *keys.Master) *Hasher {
	return &Hasher{key: m.Derive(32, keys.PurposeAPITokenMAC, 0)}
}

// New returns a fresh token and its hash.
func (h *Hasher) New() (token string, hash []byte, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	token = Prefix + base64.RawURLEncoding.EncodeToString(b)
	return token, h.Hash(token), nil
}

// Check validates a token's form before any lookup.
func Check(token string) error {
	if !strings.HasPrefix(token, Prefix) || len(token) != len(Prefix)+43 {
		return ErrMalformed
	}
	if _, err := base64.RawURLEncoding.DecodeString(token[len(Prefix):]); err != nil {
		return ErrMalformed
	}
	return nil
}

// Hash returns HMAC-SHA256 of token.
func (h *Hasher) Hash(token string) []byte {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(token))
	return m.Sum(nil)
}

// Equal compares two hashes in constant time.
func Equal(a, b []byte) bool { return hmac.Equal(a, b) }
