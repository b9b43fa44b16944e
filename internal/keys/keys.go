// Package keys holds Outpost's root of trust and everything derived from it.
//
// A [Master] key is 256 bits from crypto/rand. It never leaves the server's
// data directory except sealed under a passphrase ([Seal], [Open]). Every other
// key is derived from it with HKDF-SHA256 ([Master.Derive]) under a [Purpose]
// label and an epoch, so that
//
//   - keys for different jobs can never collide (token seeds, scope keys,
//     data-encryption keys and the signing key use different labels), and
//   - a key rotates by moving to the next epoch, without re-keying anything else.
//
// The artifact signing key is Ed25519, derived the same way ([Master.Signer]);
// its public half is what field devices pin ([MarshalPublicPEM]).
package keys

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// Size is the length of the master key and of derived keys, in bytes.
const Size = 32

// Purpose is the domain-separation label of a derived key.
type Purpose string

// The purposes Outpost derives keys for. A new use gets a new label; a label
// is never reused for something else.
const (
	// PurposeTokenSeed: the OTP seed of a token, context = realm, user, token id.
	PurposeTokenSeed Purpose = "token-seed"
	// PurposeScope: a site or region's scope key, context = scope id.
	PurposeScope Purpose = "scope-key"
	// PurposeTechnician: a technician's TOTP seed under a scope key, context = technician id.
	PurposeTechnician Purpose = "technician-seed"
	// PurposeDataKey: AES-256-GCM key for secrets at rest, context = table/column.
	PurposeDataKey Purpose = "data-key"
	// PurposeSigning: seed of the Ed25519 artifact signing key.
	PurposeSigning Purpose = "signing-ed25519"
	// PurposeSubject: a subject's exported key (seed 000's key file), context = subject.
	PurposeSubject Purpose = "subject-key"
	// PurposeAPITokenMAC: HMAC key that API tokens are hashed with before storage.
	PurposeAPITokenMAC Purpose = "api-token-mac"
	// PurposeOfflineEntryWrap: under an offline bundle entry's argon2id
	// output (not the master key), the key that unwraps the entry's release key.
	PurposeOfflineEntryWrap Purpose = "offline-entry-wrap"
	// PurposeOfflineStaticSecret: under a released key, the AES-256-GCM key
	// of the static secret an offline bundle carries.
	PurposeOfflineStaticSecret Purpose = "offline-static-secret"
	// PurposeAuditUserMAC: HMAC key of the user names sampled in the audit
	// log's tally of verifications for unknown users.
	PurposeAuditUserMAC Purpose = "audit-user-mac"
	// PurposeDeliveryCodeMAC: HMAC key of delivery codes (internal/delivery),
	// context = realm; the server keeps only this MAC of a code.
	PurposeDeliveryCodeMAC Purpose = "delivery-code-mac"
	// PurposeDeliveryTokenSign: seed of a realm's Ed25519 key that signs
	// delivery tokens (internal/deliverytoken), context = realm.
	PurposeDeliveryTokenSign Purpose = "delivery-token-sign"
	// PurposeDeliverySeal: seed of a realm's HPKE (X25519) key pair that
	// courier devices seal entered delivery codes to (internal/codecheck),
	// context = realm.
	PurposeDeliverySeal Purpose = "delivery-seal"
)

// Master is the root key. The zero value is not usable; use [GenerateMaster] or [Open].
type Master struct {
	k [Size]byte
}

// GenerateMaster returns a new master key from crypto/rand.
func GenerateMaster() (*Master, error) {
	m := new(Master)
	if _, err := rand.Read(m.k[:]); err != nil {
		return nil, fmt.Errorf("keys: reading random bytes: %w", err)
	}
	return m, nil
}

// MasterFromBytes wraps 32 raw bytes (from an opened key file) as a master key.
func MasterFromBytes(b []byte) (*Master, error) {
	if len(b) != Size {
		return nil, fmt.Errorf("keys: master key is %d bytes, want %d", len(b), Size)
	}
	m := new(Master)
	copy(m.k[:], b)
	return m, nil
}

// Bytes returns a copy of the raw key, for sealing. Handle it as a secret.
func (m *Master) Bytes() []byte { return append([]byte(nil), m.k[:]...) }

// Derive returns n bytes derived from the master key for purpose at epoch,
// bound to context. See [Derive].
func (m *Master) Derive(n int, purpose Purpose, epoch uint32, context ...string) []byte {
	return Derive(m.k[:], n, purpose, epoch, context...)
}

// Derive is HKDF-SHA256 (RFC 5869) with a fixed salt and an info string that
// encodes purpose, epoch and every context element length-prefixed, so that no
// two distinct (purpose, epoch, context) tuples share an info string:
//
//	info = "outpost/v1" || u16(len(purpose)) || purpose || u32(epoch) || for each c: u16(len(c)) || c
//
// It panics if n is not between 16 and 255*32, or a context element is over
// 64 KiB: both are programming errors, never input errors.
func Derive(secret []byte, n int, purpose Purpose, epoch uint32, context ...string) []byte {
	return NewDeriver(secret).Derive(n, purpose, epoch, context...)
}

// hkdfSalt is the fixed HKDF salt of every Outpost derivation.
var hkdfSalt = []byte("outpost-hkdf-salt-v1")

// Deriver derives many keys from one secret: it runs HKDF-Extract once and
// only HKDF-Expand per key, so a site checking many technicians under one
// scope key pays one HMAC per derivation instead of three. Its output is
// exactly [Derive]'s. A Deriver is safe for concurrent use.
type Deriver struct {
	prk  []byte
	macs sync.Pool // HMAC-SHA256 keyed with prk, for single-block expands
}

// NewDeriver runs HKDF-Extract on secret.
func NewDeriver(secret []byte) *Deriver {
	prk, err := hkdf.Extract(sha256.New, secret, hkdfSalt)
	if err != nil {
		panic("keys: hkdf extract: " + err.Error())
	}
	d := &Deriver{prk: prk}
	d.macs.New = func() any { return hmac.New(sha256.New, d.prk) }
	return d
}

// Derive returns what [Derive] returns for the Deriver's secret.
func (d *Deriver) Derive(n int, purpose Purpose, epoch uint32, context ...string) []byte {
	if n < 16 || n > 255*sha256.Size {
		panic("keys: derived key length out of range")
	}
	var buf [128]byte
	info := append(buf[:0], "outpost/v1"...)
	info = appendField(info, string(purpose))
	info = binary.BigEndian.AppendUint32(info, epoch)
	for _, c := range context {
		info = appendField(info, c)
	}
	if n > sha256.Size {
		out, err := hkdf.Expand(sha256.New, d.prk, string(info), n)
		if err != nil {
			panic("keys: hkdf expand: " + err.Error())
		}
		return out
	}
	// One block: T(1) = HMAC(PRK, info || 0x01) (RFC 5869 section 2.3).
	m := d.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(info)
	m.Write([]byte{1})
	var sum [sha256.Size]byte
	out := append([]byte(nil), m.Sum(sum[:0])[:n]...)
	d.macs.Put(m)
	return out
}

func appendField(b []byte, s string) []byte {
	if len(s) > 0xffff {
		panic("keys: derivation context element too long")
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// Signer is an Ed25519 artifact signing key with its key id.
type Signer struct {
	Private ed25519.PrivateKey
	Public  ed25519.PublicKey
	KeyID   string
	Epoch   uint32
}

// Signer derives the artifact signing key of epoch.
func (m *Master) Signer(epoch uint32) *Signer {
	seed := m.Derive(ed25519.SeedSize, PurposeSigning, epoch)
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	return &Signer{Private: priv, Public: pub, KeyID: KeyID(pub), Epoch: epoch}
}

// Sign signs msg with the private key.
func (s *Signer) Sign(msg []byte) []byte { return ed25519.Sign(s.Private, msg) }

// KeyID names an Ed25519 public key: "ed25519:" and the first 8 bytes of its
// SHA-256 in hex. It identifies a key; it authenticates nothing.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}

// MarshalPublicPEM encodes pub as a PKIX "PUBLIC KEY" PEM block (readable by
// openssl pkey -pubin), preceded by a comment line naming its key id (PEM
// readers skip text before the block).
func MarshalPublicPEM(pub ed25519.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic("keys: marshal ed25519 public key: " + err.Error())
	}
	return append([]byte("Outpost artifact signing key "+KeyID(pub)+"\n"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
}

// ErrNotPublicKey is returned for input that is not one Ed25519 public key in PEM.
var ErrNotPublicKey = errors.New("keys: not an Ed25519 public key PEM file")

// ParsePublicPEM reads a public key written by [MarshalPublicPEM] (or by
// openssl pkey -pubout for an Ed25519 key). Trailing data is rejected.
func ParsePublicPEM(data []byte) (ed25519.PublicKey, error) {
	if len(data) > 16<<10 {
		return nil, fmt.Errorf("%w: larger than 16 KiB", ErrNotPublicKey)
	}
	b, rest := pem.Decode(data)
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: no PUBLIC KEY block (export one with 'outpost keys export-public')", ErrNotPublicKey)
	}
	if len(b.Headers) != 0 {
		return nil, fmt.Errorf("%w: the PEM block has headers (an encrypted or non-standard block?)", ErrNotPublicKey)
	}
	if len(trimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the key", ErrNotPublicKey)
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotPublicKey, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is %T, not Ed25519", ErrNotPublicKey, k)
	}
	return pub, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
