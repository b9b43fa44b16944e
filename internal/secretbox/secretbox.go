// Package secretbox encrypts secrets at rest (token seeds, static secrets)
// with AES-256-GCM under a data-encryption key derived from the master key.
// The additional data binds a ciphertext to the row it belongs to, so a
// ciphertext copied onto another row does not decrypt.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/outpost-auth/outpost/internal/keys"
)

// Box seals and opens secrets for one purpose.
type Box struct{ aead cipher.AEAD }

// ErrOpen means a ciphertext did not decrypt: wrong key, wrong row, or altered.
var ErrOpen = errors.New("secretbox: ciphertext does not decrypt (altered, moved, or another master key)")

// New returns a Box keyed by HKDF(master, data-key, epoch, name).
func New(m *keys.Master, epoch uint32, name string) *Box {
	block, err := aes.NewCipher(m.Derive(32, keys.PurposeDataKey, epoch, name))
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &Box{aead: aead}
}

// Seal returns nonce || ciphertext of plaintext bound to ad.
func (b *Box) Seal(plaintext, ad []byte) ([]byte, error) {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	return b.aead.Seal(nonce, nonce, plaintext, ad), nil
}

// Open decrypts what Seal returned for the same ad.
func (b *Box) Open(sealed, ad []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n+b.aead.Overhead() {
		return nil, ErrOpen
	}
	pt, err := b.aead.Open(nil, sealed[:n], sealed[n:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
