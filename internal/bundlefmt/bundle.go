package bundlefmt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/otp"
	"golang.org/x/crypto/argon2"
)

// Artifact type and body version of a bundle.
//
// Version 2 added the server's state at issue time to the body: Used (the
// token's last used counter or step online) and Acked/AckedHash (the newest
// entry of the device's log the server had acknowledged). Decode still reads
// version 1 — bundles issued before the change keep working until they
// expire — as a bundle with neither (Used -1, Acked 0), so that neither
// check applies to it.
const (
	BundleType    = "offline-bundle"
	BundleVersion = 2
	// bundleVersion1 is the format before Used and Acked.
	bundleVersion1 = 1
)

// Sizes and limits of the bundle format. Decode checks every one of them.
const (
	// EntrySize is one entry: the 32-byte release key sealed with AES-256-GCM (16-byte tag).
	EntrySize = ReleaseKeySize + tagSize
	// ReleaseKeySize is the size of the key a correct code releases.
	ReleaseKeySize = 32
	// SaltSize is the size of the bundle's random salt.
	SaltSize = 32
	// MaxEntries bounds a bundle: 131,072 entries, 45 days of 30 s TOTP steps.
	MaxEntries = 1 << 17
	// MaxBundleSize bounds a bundle file (MaxEntries entries take ~11 MiB).
	MaxBundleSize = 16 << 20
	// MaxSecrets, MaxSecretNameLen and MaxSecretLen bound the static secrets.
	MaxSecrets       = 16
	MaxSecretNameLen = 64
	MaxSecretLen     = 4096
	// SecretOverhead is what sealing adds to a static secret: its nonce
	// and GCM tag (Secret.Box).
	SecretOverhead = nonceSize + tagSize
	// MaxCounter bounds counters and steps so that they fit a signed 64-bit
	// database column.
	MaxCounter = math.MaxInt64

	nonceSize = 12
	tagSize   = 16
)

// KDF is the argon2id cost of a bundle's entries (see internal/cost).
type KDF = cost.KDF

// Domain-separation labels. A label is never reused for another purpose.
const (
	saltLabel   = "outpost-offline-entry-salt-v1"
	entryAD     = "outpost-offline-entry-v1"
	secretAD    = "outpost-offline-secret-v1"
	purposeWrap = keys.Purpose("offline-entry-wrap")
	purposeData = keys.Purpose("offline-static-secret")
)

// ErrMalformed wraps every error of the bundle format: not a bundle,
// truncated, trailing data, a field out of range. Decode's other errors are
// those of the signed-artifact envelope (artifact.ErrBadSig, ErrUnknownKey,
// ErrWrongBound, ErrExpired, ErrNotYetValid, ErrTooLarge), unwrapped.
var ErrMalformed = errors.New("offline: malformed bundle")

// OTPParams is the token description as it appears in a bundle.
type OTPParams struct {
	Type      string `json:"type"`      // "hotp" or "totp"
	Algorithm string `json:"algorithm"` // "SHA1", "SHA256", "SHA512"
	Digits    int    `json:"digits"`
	Period    uint64 `json:"period,omitempty"` // TOTP step in seconds
	T0        int64  `json:"t0,omitempty"`     // TOTP epoch
}

// WireParams converts otp.Params to their bundle form.
func WireParams(p otp.Params) OTPParams {
	w := OTPParams{Type: p.Type.String(), Algorithm: p.Algorithm.String(), Digits: p.Digits}
	if p.Type == otp.TypeTOTP {
		w.Period, w.T0 = p.Period, p.T0
	}
	return w
}

// Params parses and validates the bundle form.
func (w OTPParams) Params() (otp.Params, error) {
	var p otp.Params
	var err error
	if p.Type, err = otp.ParseType(w.Type); err != nil {
		return p, err
	}
	if p.Algorithm, err = otp.ParseAlgorithm(w.Algorithm); err != nil {
		return p, err
	}
	p.Digits, p.Period, p.T0 = w.Digits, w.Period, w.T0
	if p.Type == otp.TypeHOTP && (w.Period != 0 || w.T0 != 0) {
		return p, fmt.Errorf("%w: an HOTP token has no period or t0", otp.ErrInvalidParams)
	}
	return p, p.Validate()
}

// Secret is one static secret sealed under the release key: Box is
// nonce || AES-256-GCM ciphertext.
type Secret struct {
	Name string `json:"name"`
	Box  []byte `json:"box"`
}

// Body is the signed content of a bundle: the body of an artifact of type
// [BundleType]. Entry i is for counter (HOTP) or step (TOTP) First+i.
type Body struct {
	Realm string    `json:"realm"`
	User  string    `json:"user"`
	Token string    `json:"token"`
	OTP   OTPParams `json:"otp"`
	// PIN says whether the user's PIN is mixed into every entry.
	PIN  bool   `json:"pin"`
	KDF  KDF    `json:"kdf"`
	Salt []byte `json:"salt"`
	// First is the counter or step of the first entry.
	First uint64 `json:"first"`
	// Entries holds EntrySize bytes per counter or step, in order.
	Entries []byte   `json:"entries"`
	Secrets []Secret `json:"secrets,omitempty"`
	// Used is the token's last used counter or step on the server when the
	// bundle was issued, -1 for none. The issuer starts the entries after
	// it, and the device raises its own last used one to it at import, so a
	// code accepted online before the bundle was issued is never accepted
	// offline from it, sync or no sync.
	Used int64 `json:"used"`
	// Acked and AckedHash are the newest entry of this device's log the
	// server held when it issued the bundle (0 and none: nothing yet). The
	// device refuses the bundle when its own log does not hold that very
	// entry: the store was restored from an older copy, or forked.
	Acked     uint64 `json:"acked"`
	AckedHash []byte `json:"acked_hash,omitempty"`
}

// Bundle is a decoded bundle: the signed header fields and the body.
type Bundle struct {
	// Device is the device id the bundle is bound to (the artifact subject).
	Device string
	// KeyID names the server key that signed it.
	KeyID string
	// Version is the body version (1 or BundleVersion).
	Version int
	// Serial orders bundles of one token: a higher serial replaces a lower one.
	Serial                        uint64
	IssuedAt, NotBefore, NotAfter time.Time
	Body
	// Params is Body.OTP, parsed.
	Params otp.Params
}

// Count returns the number of entries.
func (b *Bundle) Count() int { return len(b.Entries) / EntrySize }

// Last returns the counter or step of the last entry.
func (b *Bundle) Last() uint64 { return b.First + uint64(b.Count()) - 1 }

// Expect is what Decode requires of a bundle.
type Expect struct {
	// Device is this device's id; a bundle for another device is refused.
	Device string
	// Now is the device clock; the zero value skips the validity check.
	Now time.Time
	// Skew tolerates a clock this far off at both ends of the validity window.
	Skew time.Duration
}

// Decode verifies a bundle file and returns its content. In this order, and
// before any field is used: the size, the envelope, that the signing key is
// one of trusted, the signature, the type and version, the device binding,
// the validity window at want.Now; then every body field against the limits
// of this package. Errors wrap [ErrMalformed] or are one of the artifact errors
// named at ErrMalformed.
func Decode(data []byte, trusted []ed25519.PublicKey, want Expect) (*Bundle, error) {
	if want.Device == "" {
		return nil, errors.New("offline: Decode needs this device's id")
	}
	h, raw, err := artifact.Verify(data, artifact.Keys(trusted), artifact.Expect{
		Type: BundleType, Subject: want.Device, Now: want.Now, Skew: want.Skew, MaxSize: MaxBundleSize,
	})
	if err != nil {
		if errors.Is(err, artifact.ErrWrongType) {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		if !errors.Is(err, artifact.ErrUnknownKey) && !errors.Is(err, artifact.ErrBadSig) && !errors.Is(err, artifact.ErrWrongBound) &&
			!errors.Is(err, artifact.ErrExpired) && !errors.Is(err, artifact.ErrNotYetValid) && !errors.Is(err, artifact.ErrTooLarge) {
			err = fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return nil, err
	}
	if h.Version != BundleVersion && h.Version != bundleVersion1 {
		return nil, fmt.Errorf("%w: bundle format version %d is not supported by this Outpost (it reads versions %d and %d): upgrade the field client",
			ErrMalformed, h.Version, bundleVersion1, BundleVersion)
	}
	b := &Bundle{Device: h.Subject, KeyID: h.KeyID, Version: h.Version, Serial: h.Serial, IssuedAt: h.IssuedAt, NotBefore: h.NotBefore, NotAfter: h.NotAfter}
	if err := artifact.DecodeBody(raw, &b.Body); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if h.Version == bundleVersion1 {
		if b.Used != 0 || b.Acked != 0 || b.AckedHash != nil {
			return nil, fmt.Errorf("%w: a version 1 bundle has no used or acked fields", ErrMalformed)
		}
		b.Used = -1
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return b, nil
}

// Validate checks every body field against the limits of this package and
// sets b.Params. Decode and Sign call it; issuers call it first to fail
// before any KDF work.
func (b *Bundle) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	for _, f := range []struct{ name, v string }{{"realm", b.Realm}, {"user", b.User}, {"token", b.Token}, {"device", b.Device}} {
		if err := checkID(f.name, f.v); err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
	}
	p, err := b.OTP.Params()
	if err != nil {
		return fmt.Errorf("%w: token parameters: %w", ErrMalformed, err)
	}
	b.Params = p
	if err := b.KDF.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(b.Salt) != SaltSize {
		return bad("salt has %d bytes, want %d", len(b.Salt), SaltSize)
	}
	n := len(b.Entries) / EntrySize
	if len(b.Entries)%EntrySize != 0 || n < 1 || n > MaxEntries {
		return bad("entries hold %d bytes: want 1 to %d entries of %d bytes", len(b.Entries), MaxEntries, EntrySize)
	}
	if b.First > MaxCounter-uint64(n) {
		return bad("counters %d + %d entries overflow", b.First, n)
	}
	if p.Type == otp.TypeTOTP {
		end := b.First + uint64(n)
		if end > uint64(math.MaxInt64-max(p.T0, 0))/p.Period {
			return bad("TOTP steps up to %d at %d s are beyond any representable time", end, p.Period)
		}
	}
	if b.Used < -1 {
		return bad("used counter %d (want -1 for none, or a counter)", b.Used)
	}
	if b.Acked > MaxCounter || (b.Acked == 0) != (len(b.AckedHash) == 0) || (b.Acked != 0 && len(b.AckedHash) != eventlog.HashSize) {
		return bad("acknowledged log entry %d with a %d-byte hash", b.Acked, len(b.AckedHash))
	}
	if len(b.Secrets) > MaxSecrets {
		return bad("%d static secrets, at most %d", len(b.Secrets), MaxSecrets)
	}
	for i, s := range b.Secrets {
		if err := checkSecretName(s.Name); err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		if i > 0 && b.Secrets[i-1].Name >= s.Name {
			return bad("static secrets are not sorted by unique name")
		}
		if len(s.Box) < SecretOverhead || len(s.Box) > SecretOverhead+MaxSecretLen {
			return bad("static secret %q has a %d-byte box", s.Name, len(s.Box))
		}
	}
	return nil
}

func checkID(name, v string) error { return ident.Check(name+" id", v) }

func checkSecretName(n string) error {
	if n == "" || len(n) > MaxSecretNameLen {
		return fmt.Errorf("static secret names must be 1 to %d characters", MaxSecretNameLen)
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("static secret name %q: use letters, digits, '-', '_' and '.'", n)
		}
	}
	return nil
}

// The entry rule, shared by issuer and verifier: the one place it is written.
//
//	salt_i  = SHA-256(label || lp(bundle salt) || lp(realm) || lp(user) || lp(token) || lp(device) || lp(type) || u64(counter_i))
//	k_i     = argon2id(code_i || PIN, salt_i, KDF)           32 bytes
//	wrap_i  = HKDF-SHA256(k_i, "offline-entry-wrap")          keys.Derive
//	entry_i = AES-256-GCM(wrap_i, nonce = 0, release key, ad = label || salt_i)
//
// The code has a fixed length (the token's digits), so code || PIN is unambiguous.
// Each wrap key seals exactly one message, so a fixed nonce is safe.

// EntrySalt returns the argon2id salt of the entry for counter: unique per
// bundle (random salt), per identity (realm, user, token, device) and per
// counter, so that one guess tests one entry of one bundle only.
func (b *Bundle) EntrySalt(counter uint64) []byte {
	h := sha256.New()
	h.Write([]byte(saltLabel))
	for _, f := range [][]byte{b.Salt, []byte(b.Realm), []byte(b.User), []byte(b.Token), []byte(b.Device), []byte(b.OTP.Type)} {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(f)))
		h.Write(l[:])
		h.Write(f)
	}
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], counter)
	h.Write(c[:])
	return h.Sum(nil)
}

// entryAEAD runs the KDF for (counter, code, pin) and returns the entry's
// AEAD and additional data. This is the slow step.
func (b *Bundle) entryAEAD(counter uint64, code, pin string) (cipher.AEAD, []byte) {
	salt := b.EntrySalt(counter)
	pw := make([]byte, 0, len(code)+len(pin))
	pw = append(append(pw, code...), pin...)
	k := argon2.IDKey(pw, salt, b.KDF.Time, b.KDF.MemoryKiB, b.KDF.Threads, 32)
	clear(pw)
	wrap := keys.Derive(k, 32, purposeWrap, 0)
	clear(k)
	aead := newGCM(wrap)
	clear(wrap)
	return aead, append([]byte(entryAD), salt...)
}

var zeroNonce = make([]byte, nonceSize)

// SealEntry computes entry i (for counter First+i) from the code and PIN and
// writes it into b.Entries, which must already hold Count() entries. The
// issuer calls it once per entry, concurrently for distinct i.
func (b *Bundle) SealEntry(i int, code, pin string, release []byte) error {
	if i < 0 || i >= b.Count() || len(release) != ReleaseKeySize {
		return errors.New("offline: SealEntry: entry index or release key size out of range")
	}
	aead, ad := b.entryAEAD(b.First+uint64(i), code, pin)
	aead.Seal(b.Entries[i*EntrySize:i*EntrySize], zeroNonce, release, ad)
	return nil
}

// OpenEntry runs the KDF for counter with code and pin and tries to unwrap
// that entry. It returns the release key, or ok == false when the code (or
// PIN) is wrong. The comparison is the AES-GCM tag check: constant time, and
// there is no boolean to patch out — without the right code there is no key.
// counter must be within [First, Last()].
func (b *Bundle) OpenEntry(counter uint64, code, pin string) (release []byte, ok bool) {
	if counter < b.First || counter > b.Last() {
		return nil, false
	}
	i := int(counter - b.First)
	aead, ad := b.entryAEAD(counter, code, pin)
	key, err := aead.Open(nil, zeroNonce, b.Entries[i*EntrySize:(i+1)*EntrySize], ad)
	if err != nil {
		return nil, false
	}
	return key, true
}

// SealSecrets encrypts secrets under the release key into b.Secrets (sorted by name).
func (b *Bundle) SealSecrets(release []byte, secrets map[string][]byte) error {
	if len(secrets) > MaxSecrets {
		return fmt.Errorf("offline: %d static secrets, at most %d", len(secrets), MaxSecrets)
	}
	aead := newGCM(keys.Derive(release, 32, purposeData, 0))
	b.Secrets = b.Secrets[:0]
	for name, v := range secrets {
		if err := checkSecretName(name); err != nil {
			return fmt.Errorf("offline: %w", err)
		}
		if len(v) > MaxSecretLen {
			return fmt.Errorf("offline: static secret %q is %d bytes, at most %d", name, len(v), MaxSecretLen)
		}
		nonce := make([]byte, nonceSize, SecretOverhead+len(v))
		if _, err := rand.Read(nonce); err != nil {
			return fmt.Errorf("offline: %w", err)
		}
		b.Secrets = append(b.Secrets, Secret{Name: name, Box: aead.Seal(nonce, nonce, v, b.secretAD(name))})
	}
	sort.Slice(b.Secrets, func(i, j int) bool { return b.Secrets[i].Name < b.Secrets[j].Name })
	return nil
}

func (b *Bundle) secretAD(name string) []byte {
	ad := append([]byte(secretAD), b.Salt...)
	return append(ad, name...)
}

// ErrNoSecret is returned by OpenSecret for a name the bundle does not carry.
var ErrNoSecret = errors.New("offline: no such static secret in the bundle")

// OpenSecret decrypts the static secret name with a released key.
func (b *Bundle) OpenSecret(release []byte, name string) ([]byte, error) {
	for _, s := range b.Secrets {
		if s.Name != name {
			continue
		}
		aead := newGCM(keys.Derive(release, 32, purposeData, 0))
		v, err := aead.Open(nil, s.Box[:nonceSize], s.Box[nonceSize:], b.secretAD(name))
		if err != nil {
			return nil, fmt.Errorf("%w: static secret %q does not decrypt with the released key", ErrMalformed, name)
		}
		return v, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrNoSecret, name)
}

// SecretNames lists the static secrets the bundle carries.
func (b *Bundle) SecretNames() []string {
	out := make([]string, len(b.Secrets))
	for i, s := range b.Secrets {
		out[i] = s.Name
	}
	return out
}

// Sign validates b and signs it as an artifact: the issuer's last step.
func (b *Bundle) Sign(s *keys.Signer) ([]byte, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	h := artifact.Header{Type: BundleType, Version: BundleVersion, Subject: b.Device, Serial: b.Serial,
		IssuedAt: b.IssuedAt, NotBefore: b.NotBefore, NotAfter: b.NotAfter}
	data, err := artifact.Sign(s, h, b.Body)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("offline: bundle of %d bytes is larger than %d", len(data), MaxBundleSize)
	}
	return data, nil
}

func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("offline: " + err.Error())
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("offline: " + err.Error())
	}
	return aead
}
