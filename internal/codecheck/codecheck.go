// Package codecheck is what a courier's device holds to check a delivery
// code offline, and how it hands an entered code to the server. Issue 11
// (docs/deliveries.md) has three modes; this package builds two of them and
// the sealing the second needs (the third, a signed token, is
// internal/deliverytoken):
//
//   - Hash mode ([NewHash], [Hash.Match]): the device holds a per-delivery
//     salted argon2id hash of the code. The courier holding the device is
//     the attacker: they can copy the hash and try every code on a GPU, so
//     NewHash refuses parameters under which that is cheaper than
//     cost.DeliveryFloor ([ErrBelowFloor]: use longer codes or another mode).
//     [DefaultHashParams] clears the floor for 8-digit codes, barely.
//
//   - Fingerprint mode ([NewFingerprint], [Fingerprint.Match]): the device
//     holds only [DefaultBits] = 10 bits of a slow hash of the code. A wrong
//     code passes with p = 2^-10 ≈ 0.1 %, so typos and wrong codes are
//     turned away at once; but cracking the fingerprint leaves
//     10^8 / 2^10 ≈ 97,656 candidate codes, and the real check is at the
//     server: the entered code travels to it sealed ([Seal]), the server
//     opens it ([Open]) at sync and compares it with the code it issued. A
//     wrong code that passed the fingerprint is a fraud incident.
//
// Every check is tied to a [Binding] (realm, delivery, code version,
// device): it is in the argon2id salt input and in the HPKE info, so a
// hash, fingerprint or sealed code copied to another delivery, version or
// device matches nothing.
//
// Codes are always in the canonical form deliverycode.Parse returns (check
// digit included); the check digit adds no secrecy, so the code space is
// 10^(len(code)-1).
//
//	h, err := codecheck.NewHash(code, b, codecheck.DefaultHashParams)    // server, into the manifest
//	ok, err := h.Match(entered, b)                                        // device, at the door
//
//	f, err := codecheck.NewFingerprint(code, b, codecheck.DefaultFingerprintParams)
//	ok, err := f.Match(entered, b)                                        // device: 99.9 % of wrong codes stop here
//	sealed, err := codecheck.Seal(pinnedSealKey, b, entered)             // device, kept for sync
//	entered, err := codecheck.Open(serverSealKey, b, sealed)             // server, at sync
package codecheck

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"golang.org/x/crypto/argon2"

	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/ident"
)

var (
	// ErrBelowFloor: the parameters make a code too cheap to crack on a
	// stolen device (it wraps cost.ErrBelowFloor and says what to do).
	ErrBelowFloor = cost.ErrBelowFloor
	// ErrMalformed: the check data or sealed blob is not well-formed, or a
	// sealed blob does not open under this key and binding.
	ErrMalformed = errors.New("codecheck: malformed check data")
)

// Binding ties every check to one version of one delivery on one device;
// all of it is bound into salts / KDF inputs / HPKE info, so data copied to
// another delivery, version or device matches nothing. Realm and Delivery
// must pass ident.Check, Device too, and Version is 1 or more.
type Binding struct {
	Realm    string
	Delivery string
	Version  int
	Device   string
}

// Params are argon2id parameters (golang.org/x/crypto/argon2.IDKey).
type Params struct {
	Time      uint32 `json:"t"`
	MemoryKiB uint32 `json:"m"`
	Threads   uint8  `json:"p"`
}

// KDF returns p in the cost model's type.
func (p Params) KDF() cost.KDF {
	return cost.KDF{Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads}
}

// DefaultHashParams is the hash mode's argon2id cost: m=256 MiB, t=8, p=1.
// By the cost model (internal/cost), one RTX 4090 tries ~159 codes/s, so
// trying all 10^8 8-digit codes takes it ~7.3 days (cost.DeliveryFloor is
// 7 days); the fastest GPU the model knows (H100) takes ~2.2 days. It costs
// the server ~2.2 s of one core per delivery version, and a phone about as
// much (more on a slow one) per entered code, with 256 MiB of memory.
// Raising t or m, or lengthening codes (9 digits: ~73 days), buys margin.
var DefaultHashParams = Params{Time: 8, MemoryKiB: 256 << 10, Threads: 1}

// DefaultFingerprintParams is the fingerprint mode's argon2id cost, the
// cost model's default profile (m=64 MiB, t=3, p=1, ~210 ms a check on one
// core). The fingerprint's strength is not its cost but its size: whatever
// the cost, cracking it leaves ~97,656 candidates, one of which is right.
var DefaultFingerprintParams = Params{Time: cost.Default.Time, MemoryKiB: cost.Default.MemoryKiB, Threads: cost.Default.Threads}

// Sizes.
const (
	SaltSize = 16
	SumSize  = 32
	// DefaultBits is the fingerprint size: a wrong code passes with 2^-10.
	DefaultBits = 10
	// MinBits and MaxBits bound a fingerprint's size.
	MinBits = 4
	MaxBits = 20
	// maxCode bounds a canonical code (deliverycode.MaxDigits + check digit).
	maxCode = deliverycode.MaxDigits + 1
)

// Hash mode: a per-delivery salted argon2id hash of the code.
type Hash struct {
	Params Params `json:"params"`
	Salt   []byte `json:"salt"`
	Sum    []byte `json:"sum"`
}

// NewHash hashes code for b under p with a fresh random salt. It returns
// an error wrapping ErrBelowFloor when trying every code of code's length
// under p costs the reference GPU less than cost.DeliveryFloor.
func NewHash(code string, b Binding, p Params) (Hash, error) {
	return NewHashFloor(code, b, p, cost.DeliveryFloor)
}

// NewHashFloor is NewHash against floor instead of cost.DeliveryFloor: for
// tests (cheap parameters) and an explicit, audited administrator decision.
func NewHashFloor(code string, b Binding, p Params, floor cost.Floor) (Hash, error) {
	if err := checkInputs(code, b, p); err != nil {
		return Hash{}, err
	}
	if err := cost.DeliveryCode(len(code)-1, p.KDF()).CheckCode(floor); err != nil {
		return Hash{}, fmt.Errorf("codecheck: hash mode: %w", err)
	}
	salt := make([]byte, SaltSize)
	rand.Read(salt)
	return Hash{Params: p, Salt: salt, Sum: derive(labelHash, code, b, p, salt)}, nil
}

// Validate checks that h is well-formed (ErrMalformed): usable parameters
// within cost's limits, a SaltSize salt and a SumSize sum.
func (h Hash) Validate() error {
	if err := checkStored("hash", h.Params, h.Salt); err != nil {
		return err
	}
	if len(h.Sum) != SumSize {
		return fmt.Errorf("%w: hash: sum must be %d bytes", ErrMalformed, SumSize)
	}
	return nil
}

// checkStored checks what both kinds of check data hold: parameters within
// cost's limits and a SaltSize salt.
func checkStored(kind string, p Params, salt []byte) error {
	if err := p.KDF().Validate(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformed, kind, err)
	}
	if len(salt) != SaltSize {
		return fmt.Errorf("%w: %s: salt must be %d bytes", ErrMalformed, kind, SaltSize)
	}
	return nil
}

// Match reports whether code is the code h was made from for b, comparing
// in constant time. It errs (ErrMalformed) on a malformed h, and on a code
// that is not canonical or a binding that is not valid.
func (h Hash) Match(code string, b Binding) (bool, error) {
	if err := ready(h.Validate(), code, b); err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(derive(labelHash, code, b, h.Params, h.Salt), h.Sum) == 1, nil
}

// Fingerprint mode: ~10 bits of a slow hash; rejects 99.9 % of wrong
// codes; the real check is at the server.
type Fingerprint struct {
	Params Params `json:"params"`
	Salt   []byte `json:"salt"`
	Bits   uint8  `json:"bits"`
	Value  uint32 `json:"value"`
}

// NewFingerprint keeps DefaultBits bits of an argon2id hash of code for b
// under p, with a fresh random salt. There is no cost floor: the device
// never holds enough to tell the code from ~97,656 others.
func NewFingerprint(code string, b Binding, p Params) (Fingerprint, error) {
	if err := checkInputs(code, b, p); err != nil {
		return Fingerprint{}, err
	}
	salt := make([]byte, SaltSize)
	rand.Read(salt)
	f := Fingerprint{Params: p, Salt: salt, Bits: DefaultBits}
	f.Value = f.of(code, b)
	return f, nil
}

// Validate checks that f is well-formed (ErrMalformed): usable parameters,
// a SaltSize salt, MinBits to MaxBits bits and a value that fits in them.
func (f Fingerprint) Validate() error {
	if err := checkStored("fingerprint", f.Params, f.Salt); err != nil {
		return err
	}
	if f.Bits < MinBits || f.Bits > MaxBits || f.Value>>f.Bits != 0 {
		return fmt.Errorf("%w: fingerprint: %d to %d bits, value within them", ErrMalformed, MinBits, MaxBits)
	}
	return nil
}

// Match reports whether code has f's fingerprint for b (constant time). A
// true answer means "probably the code" (a wrong code passes with
// p = 2^-Bits): the server's check of the sealed code decides. It errs as
// Hash.Match does.
func (f Fingerprint) Match(code string, b Binding) (bool, error) {
	if err := ready(f.Validate(), code, b); err != nil {
		return false, err
	}
	return subtle.ConstantTimeEq(int32(f.of(code, b)), int32(f.Value)) == 1, nil
}

// of is the top f.Bits bits of the argon2id output.
func (f Fingerprint) of(code string, b Binding) uint32 {
	sum := derive(labelFingerprint, code, b, f.Params, f.Salt)
	return binary.BigEndian.Uint32(sum) >> (32 - f.Bits)
}

// Domain-separation labels of the KDF and HPKE inputs.
const (
	labelHash        = "outpost/codecheck/v1/hash"
	labelFingerprint = "outpost/codecheck/v1/fingerprint"
	labelSeal        = "outpost/codecheck/v1/seal"
)

// derive is argon2id(code, label || binding || salt) under p.
func derive(label, code string, b Binding, p Params, salt []byte) []byte {
	in := append(b.encode(label), salt...)
	return argon2.IDKey([]byte(code), in, p.Time, p.MemoryKiB, p.Threads, SumSize)
}

// encode is label || u16-length-prefixed realm, delivery || u64 version ||
// u16-length-prefixed device: no two bindings share an encoding.
func (b Binding) encode(label string) []byte {
	out := make([]byte, 0, len(label)+len(b.Realm)+len(b.Delivery)+len(b.Device)+14)
	out = append(out, label...)
	for _, s := range []string{b.Realm, b.Delivery} {
		out = binary.BigEndian.AppendUint16(out, uint16(len(s)))
		out = append(out, s...)
	}
	out = binary.BigEndian.AppendUint64(out, uint64(b.Version))
	out = binary.BigEndian.AppendUint16(out, uint16(len(b.Device)))
	return append(out, b.Device...)
}

// Check checks b: ids per ident.Check, a version of 1 or more.
func (b Binding) Check() error {
	for _, f := range []struct{ what, v string }{{"realm", b.Realm}, {"delivery", b.Delivery}, {"device", b.Device}} {
		if err := ident.Check(f.what, f.v); err != nil {
			return fmt.Errorf("codecheck: binding: %w", err)
		}
	}
	if b.Version < 1 || uint64(b.Version) > math.MaxUint32 {
		return fmt.Errorf("codecheck: binding: version %d (want 1 to %d)", b.Version, uint32(math.MaxUint32))
	}
	return nil
}

// checkCode checks that code is canonical (deliverycode.Parse returns it
// unchanged). The error says why, never the code.
func checkCode(code string) error {
	if len(code) > maxCode {
		return fmt.Errorf("codecheck: %w", deliverycode.ErrMalformed)
	}
	c, err := deliverycode.Parse(code)
	if err != nil {
		return fmt.Errorf("codecheck: %w", err)
	}
	if c != code {
		return fmt.Errorf("codecheck: code is not in canonical form (pass it through deliverycode.Parse)")
	}
	return nil
}

// checkInputs checks what NewHash and NewFingerprint are given.
func checkInputs(code string, b Binding, p Params) error {
	var bad error
	if err := p.KDF().Validate(); err != nil {
		bad = fmt.Errorf("codecheck: %w", err)
	}
	return ready(bad, code, b)
}

// ready returns invalid, or else the first error of code and b.
func ready(invalid error, code string, b Binding) error {
	if invalid != nil {
		return invalid
	}
	if err := checkCode(code); err != nil {
		return err
	}
	return b.Check()
}

// The HPKE suite of sealed codes (RFC 9180): DHKEM(X25519, HKDF-SHA256),
// HKDF-SHA256, ChaCha20-Poly1305 (fast without AES instructions, as on
// many phones).
var (
	sealKEM  = hpke.DHKEM(ecdh.X25519())
	sealKDF  = hpke.HKDFSHA256()
	sealAEAD = hpke.ChaCha20Poly1305()
)

// Sealed sizes: the encapsulated X25519 key, the code, the AEAD tag.
const (
	encSize       = 32
	tagSize       = 16
	MinSealedSize = encSize + deliverycode.MinDigits + 1 + tagSize
	MaxSealedSize = encSize + maxCode + tagSize
	// SealKeySize is the size of both halves of a seal key pair.
	SealKeySize = 32
)

// SealKeyPair derives the HPKE key pair sealed codes are sent to from a
// secret seed of at least 32 bytes (RFC 9180 DeriveKeyPair): the server
// derives it from its master key (internal/delivery), devices pin pub.
func SealKeyPair(seed []byte) (priv, pub []byte, err error) {
	if len(seed) < 32 {
		return nil, nil, errors.New("codecheck: seal key seed shorter than 32 bytes")
	}
	k, err := sealKEM.DeriveKeyPair(seed)
	if err != nil {
		return nil, nil, fmt.Errorf("codecheck: deriving the seal key: %w", err)
	}
	priv, err = k.Bytes()
	if err != nil {
		return nil, nil, fmt.Errorf("codecheck: deriving the seal key: %w", err)
	}
	return priv, k.PublicKey().Bytes(), nil
}

// Seal encrypts an entered code to the server's HPKE public key (crypto/hpke,
// stdlib), with b bound in the info; only the server opens it, at sync. The
// result is MinSealedSize to MaxSealedSize bytes.
func Seal(serverPub []byte, b Binding, code string) ([]byte, error) {
	if err := ready(nil, code, b); err != nil {
		return nil, err
	}
	pk, err := sealKEM.NewPublicKey(serverPub)
	if err != nil {
		return nil, fmt.Errorf("codecheck: server seal key is not an X25519 public key: %w", err)
	}
	out, err := hpke.Seal(pk, sealKDF, sealAEAD, b.encode(labelSeal), []byte(code))
	if err != nil {
		return nil, fmt.Errorf("codecheck: sealing: %w", err)
	}
	return out, nil
}

// Open decrypts a code sealed by Seal for b with the server's private key.
// Anything that is not such a code — garbage, a wrong size, a blob sealed
// for another binding or key, a tampered one — is ErrMalformed.
func Open(serverPriv []byte, b Binding, sealed []byte) (code string, err error) {
	if err := b.Check(); err != nil {
		return "", err
	}
	k, err := sealKEM.NewPrivateKey(serverPriv)
	if err != nil {
		return "", fmt.Errorf("codecheck: server seal key is not an X25519 private key: %w", err)
	}
	if len(sealed) < MinSealedSize || len(sealed) > MaxSealedSize {
		return "", fmt.Errorf("%w: sealed code is %d bytes (want %d to %d)", ErrMalformed, len(sealed), MinSealedSize, MaxSealedSize)
	}
	pt, err := hpke.Open(k, sealKDF, sealAEAD, b.encode(labelSeal), sealed)
	if err != nil {
		return "", fmt.Errorf("%w: sealed code does not open for delivery %q version %d on device %q (sealed for another, or tampered)",
			ErrMalformed, ident.Clip(b.Delivery), b.Version, ident.Clip(b.Device))
	}
	if err := checkCode(string(pt)); err != nil {
		return "", fmt.Errorf("%w: sealed content is not a canonical code", ErrMalformed)
	}
	return string(pt), nil
}
