// Package sitewire is the format of the two artifacts a site installs — a
// provisioning package and a revocation list — written once for the server
// that signs them (internal/siteissue: [BuildPackage],
// [BuildRevocationList]) and the site that reads them (the public package
// site: [ReadPackage], [ReadRevocationList]). Signing and verifying the
// envelope is internal/artifact's job; the body types, their limits and
// their checks are here.
//
// A package is bound to one site (the artifact subject) and carries the
// scope's policy, one to [MaxEpochs] epochs, the scope keys of those epochs
// sealed under a passphrase (internal/keys.Seal, purpose
// [SealedKeysPurpose]; the sealed header names the site, scope and epoch
// numbers, so the keys cannot be moved to another package), and the scope's
// revocation list, embedded as JSON. It is valid from its first epoch's start
// to its last epoch's end, each widened by the policy's overlap.
//
// The policy travels in its signed form ([Policy]: durations in whole
// seconds). Its rules (site.Policy.Validate) are the site package's: the
// issuer passes what site.MarshalPolicy wrote, and the reader hands the
// decoded form to a check of the caller's before it uses anything else.
package sitewire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/clockguard"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
)

// Artifact types and body versions.
const (
	TypePackage        = "site-package"
	TypeRevocationList = "revocation-list"
	PackageVersion     = 1
	RevocationVersion  = 1
)

// Limits of the decoders. A package holds no per-technician data, so only
// its revocation list can make it grow.
const (
	MaxEpochs             = 4
	MaxEpochLength        = 400 * 24 * time.Hour
	MaxRevoked            = 50000
	MaxRevocationListSize = 16 << 20
	MaxPackageSize        = 32 << 20
	// MaxSeconds bounds every duration of a policy's signed form (four
	// times the longest lockout a policy allows, site.MaxLockout).
	MaxSeconds = int64(4 * 30 * 24 * time.Hour / time.Second)
	// SealedKeysPurpose labels the sealed scope keys inside a package.
	SealedKeysPurpose = "site-scope-keys"
	// RevocationLifetime is a revocation list's not-after: lists do not
	// really expire (a newer serial replaces them), but every artifact has one.
	RevocationLifetime = 10 * 365 * 24 * time.Hour
)

// Errors. The public package site re-exports both.
var (
	// ErrBadPackage: a package or revocation list is malformed, for another
	// site or scope, expired, or cannot be decrypted. It wraps the
	// artifact error where there is one (artifact.ErrBadSig, ...).
	ErrBadPackage = errors.New("site: package or revocation list refused")
	// ErrBadID: a technician, site or scope id breaks its rule (internal/ident).
	ErrBadID = errors.New("site: invalid id")
)

// CheckTechID checks a technician id (ident.CheckTech), wrapping ErrBadID.
func CheckTechID(id string) error { return badID(ident.CheckTech(id)) }

// CheckName checks a site or scope id (ident.CheckName), wrapping ErrBadID.
func CheckName(kind, name string) error { return badID(ident.CheckName(kind, name)) }

func badID(err error) error {
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadID, err)
	}
	return nil
}

// Epoch is an epoch as a package carries it. site.Epoch has the same
// fields; [WireEpochs] and [EpochsAs] convert between the two.
type Epoch epochFields

type epochFields = struct {
	N     uint32    `json:"n"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// WireEpochs converts epochs of a type with Epoch's fields (site.Epoch) to
// Epoch.
func WireEpochs[E ~epochFields](es []E) []Epoch {
	out := make([]Epoch, len(es))
	for i, e := range es {
		out[i] = Epoch(e)
	}
	return out
}

// EpochsAs converts epochs to a type with Epoch's fields (site.Epoch).
func EpochsAs[E ~epochFields](es []Epoch) []E {
	out := make([]E, len(es))
	for i, e := range es {
		out[i] = E(e)
	}
	return out
}

// CheckEpochs checks a package's epochs: 1 to MaxEpochs, each at most
// MaxEpochLength long, ascending and not overlapping.
func CheckEpochs(es []Epoch) error {
	if len(es) == 0 || len(es) > MaxEpochs {
		return fmt.Errorf("site: a package covers 1 to %d epochs, not %d", MaxEpochs, len(es))
	}
	for i, e := range es {
		if !e.Start.Before(e.End) || e.End.Sub(e.Start) > MaxEpochLength {
			return fmt.Errorf("site: epoch %d must last between 0 and %v", e.N, MaxEpochLength)
		}
		if i > 0 && (es[i-1].N >= e.N || es[i-1].End.After(e.Start)) {
			return errors.New("site: epochs must be in ascending order and must not overlap")
		}
	}
	return nil
}

// Policy is a site policy's signed form: site.Policy with its durations in
// whole seconds. site converts and validates it.
type Policy struct {
	Digits              int   `json:"digits"`
	PeriodS             int64 `json:"period_s"`
	Window              int   `json:"window"`
	OverlapS            int64 `json:"overlap_s"`
	ClockToleranceS     int64 `json:"clock_tolerance_s"`
	LockoutFailures     int   `json:"lockout_failures"`
	DelayS              int64 `json:"delay_s"`
	LockoutS            int64 `json:"lockout_s"`
	SiteFailuresPerHour int   `json:"site_failures_per_hour"`
}

// CheckDurations checks that every duration is within 0..MaxSeconds, so
// that converting it to a time.Duration cannot overflow.
func (w Policy) CheckDurations() error {
	for _, v := range []int64{w.PeriodS, w.OverlapS, w.ClockToleranceS, w.DelayS, w.LockoutS} {
		if v < 0 || v > MaxSeconds {
			return fmt.Errorf("site: policy: a duration of %d s is out of range", v)
		}
	}
	return nil
}

func seconds(s int64) time.Duration { return time.Duration(s) * time.Second }

// Revoked is one entry of a revocation list: every credential of Tech for
// an epoch up to and including Through is refused. (A credential for a later
// epoch is a deliberate reinstatement by the administrator.)
type Revoked struct {
	Tech    string    `json:"tech"`
	Through uint32    `json:"through_epoch"`
	At      time.Time `json:"at"`
}

// RevocationList is a verified revocation list of a scope. Serial orders
// lists: a site installs a list only if its serial is higher than the one
// it has.
type RevocationList struct {
	Header  artifact.Header
	Scope   string
	Serial  uint64
	Revoked []Revoked // sorted by Tech, no duplicates
}

// RevocationBody is the signed body of a revocation list.
type RevocationBody struct {
	Scope   string    `json:"scope"`
	Revoked []Revoked `json:"revoked"`
}

// Lookup returns tech's entry, if any.
func (l *RevocationList) Lookup(tech string) (Revoked, bool) {
	i := sort.Search(len(l.Revoked), func(i int) bool { return l.Revoked[i].Tech >= tech })
	if i < len(l.Revoked) && l.Revoked[i].Tech == tech {
		return l.Revoked[i], true
	}
	return Revoked{}, false
}

// BuildRevocationList signs the revocation list number serial of scope.
// Entries are sorted; duplicates are an error.
func BuildRevocationList(s *keys.Signer, scope string, serial uint64, issued time.Time, revoked []Revoked) ([]byte, error) {
	if err := CheckName("scope", scope); err != nil {
		return nil, err
	}
	if serial == 0 {
		return nil, errors.New("site: revocation list serials start at 1")
	}
	rs := append([]Revoked(nil), revoked...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Tech < rs[j].Tech })
	for i := range rs {
		rs[i].At = rs[i].At.UTC().Truncate(time.Second)
	}
	if err := CheckRevoked(rs); err != nil {
		return nil, err
	}
	if rs == nil {
		rs = []Revoked{}
	}
	h := artifact.Header{Type: TypeRevocationList, Version: RevocationVersion, Subject: scope, Serial: serial,
		IssuedAt: issued, NotBefore: issued, NotAfter: issued.Add(RevocationLifetime)}
	b, err := artifact.Sign(s, h, RevocationBody{Scope: scope, Revoked: rs})
	if err == nil && len(b) > MaxRevocationListSize {
		return nil, fmt.Errorf("site: revocation list is %d bytes, over the %d byte limit", len(b), MaxRevocationListSize)
	}
	return b, err
}

// CheckRevoked checks a list's entries: at most MaxRevoked, valid
// technician ids, sorted without repeats.
func CheckRevoked(rs []Revoked) error {
	if len(rs) > MaxRevoked {
		return fmt.Errorf("site: %d revoked technicians, the limit is %d", len(rs), MaxRevoked)
	}
	for i, r := range rs {
		if err := CheckTechID(r.Tech); err != nil {
			return err
		}
		if i > 0 && rs[i-1].Tech >= r.Tech {
			return fmt.Errorf("site: revocation list entries are not sorted or repeat %q", ident.Clip(r.Tech))
		}
	}
	return nil
}

// ReadRevocationList verifies a revocation list signed by a key of ring and
// bound to scope (any scope when scope is ""), and decodes it. Lists carry
// no meaningful expiry and are not checked against a clock: what matters is
// their serial, which the caller compares with the installed one.
func ReadRevocationList(data []byte, ring artifact.Keyring, scope string) (*RevocationList, error) {
	h, body, err := artifact.Verify(data, ring, artifact.Expect{Type: TypeRevocationList, Subject: scope, MaxSize: MaxRevocationListSize})
	if err != nil {
		return nil, fmt.Errorf("%w: revocation list: %w", ErrBadPackage, err)
	}
	if h.Version != RevocationVersion {
		return nil, fmt.Errorf("%w: revocation list version %d is not supported by this Outpost", ErrBadPackage, h.Version)
	}
	var b RevocationBody
	if err := artifact.DecodeBody(body, &b); err != nil {
		return nil, fmt.Errorf("%w: revocation list: %w", ErrBadPackage, err)
	}
	if b.Scope != h.Subject || h.Serial == 0 || b.Revoked == nil {
		return nil, fmt.Errorf("%w: revocation list: scope, serial or entries missing or inconsistent", ErrBadPackage)
	}
	if err := CheckRevoked(b.Revoked); err != nil {
		return nil, fmt.Errorf("%w: revocation list: %w", ErrBadPackage, err)
	}
	return &RevocationList{Header: h, Scope: b.Scope, Serial: h.Serial, Revoked: b.Revoked}, nil
}

// Package is a verified provisioning package. Its scope keys are still
// sealed: [Package.OpenKeys] decrypts them with the site's passphrase.
type Package struct {
	Header     artifact.Header
	Site       string
	Scope      string
	Policy     Policy
	Epochs     []Epoch // ascending, not overlapping
	Revocation *RevocationList
	sealed     []byte
}

type packageBody struct {
	Site   string  `json:"site"`
	Scope  string  `json:"scope"`
	Policy Policy  `json:"policy"`
	Epochs []Epoch `json:"epochs"`
	Keys   []byte  `json:"keys"` // a keys.Seal file holding the scope keys, in epoch order
	// Revocation is the scope's revocation list artifact, embedded as JSON
	// (not base64) so that a long list is not inflated twice.
	Revocation json.RawMessage `json:"revocation"`
}

// PackageSpec is what BuildPackage signs.
type PackageSpec struct {
	Site, Scope string
	// Policy is the scope's policy as site.MarshalPolicy wrote it (and
	// validated it).
	Policy []byte
	Epochs []Epoch
	// ScopeKeys are the keys of Epochs, in the same order. They are sealed
	// under the passphrase; nothing else in the package is secret.
	ScopeKeys  [][]byte
	Revocation []byte // a signed revocation list of Scope
	Serial     uint64
	IssuedAt   time.Time
}

// BuildPackage seals spec's scope keys under passphrase (argon2id cost kdf,
// AES-256-GCM; the sealed header names the site, scope and epochs, so the
// keys cannot be moved to another package) and signs the package, bound to
// spec.Site, valid from the first epoch's start to the last epoch's end
// (each widened by the policy's overlap). It is [SealScopeKeys] followed by
// [BuildSealedPackage].
func BuildPackage(s *keys.Signer, spec PackageSpec, passphrase []byte, kdf keys.KDFParams) ([]byte, error) {
	sealed, err := SealScopeKeys(spec, passphrase, kdf)
	if err != nil {
		return nil, err
	}
	return BuildSealedPackage(s, spec, sealed)
}

// SealedKeys are a package's scope keys sealed by [SealScopeKeys], waiting
// to be signed into a package by [BuildSealedPackage].
type SealedKeys struct {
	site, scope, epochs string
	data                []byte
}

// SealScopeKeys is the slow half of BuildPackage: it seals spec's scope
// keys under passphrase (the argon2id work). It reads only spec's Site,
// Scope, Epochs, ScopeKeys and IssuedAt (the sealed file's creation time),
// so that an issuer that must not hold a lock during that work can seal
// before it knows the rest, and sign afterwards with a spec for the same
// site, scope and epoch numbers.
func SealScopeKeys(spec PackageSpec, passphrase []byte, kdf keys.KDFParams) (*SealedKeys, error) {
	if err := CheckName("site", spec.Site); err != nil {
		return nil, err
	}
	if err := CheckName("scope", spec.Scope); err != nil {
		return nil, err
	}
	if err := CheckEpochs(spec.Epochs); err != nil {
		return nil, err
	}
	if len(spec.ScopeKeys) != len(spec.Epochs) {
		return nil, errors.New("site: one scope key per epoch is needed")
	}
	var payload []byte
	for _, k := range spec.ScopeKeys {
		if len(k) != keys.Size {
			return nil, errors.New("site: scope keys must be 32 bytes")
		}
		payload = append(payload, k...)
	}
	meta := sealedMeta(spec.Scope, spec.Epochs)
	sealed, err := keys.Seal(passphrase, kdf, keys.Sealed{Purpose: SealedKeysPurpose, Subject: spec.Site,
		Meta: meta, Created: spec.IssuedAt}, payload)
	clear(payload)
	if err != nil {
		return nil, err
	}
	return &SealedKeys{site: spec.Site, scope: spec.Scope, epochs: meta["epochs"], data: sealed}, nil
}

// BuildSealedPackage signs spec with scope keys sealed by SealScopeKeys for
// the same site, scope and epoch numbers (spec.ScopeKeys is not used).
func BuildSealedPackage(s *keys.Signer, spec PackageSpec, sealed *SealedKeys) ([]byte, error) {
	pol, err := checkSpec(spec)
	if err != nil {
		return nil, err
	}
	if sealed == nil || sealed.site != spec.Site || sealed.scope != spec.Scope || sealed.epochs != sealedMeta(spec.Scope, spec.Epochs)["epochs"] {
		return nil, errors.New("site: the sealed scope keys were made for another site, scope or epochs")
	}
	ew := make([]Epoch, len(spec.Epochs))
	for i, e := range spec.Epochs {
		ew[i] = Epoch{e.N, e.Start.UTC(), e.End.UTC()}
	}
	body := packageBody{Site: spec.Site, Scope: spec.Scope, Policy: pol, Epochs: ew, Keys: sealed.data, Revocation: json.RawMessage(spec.Revocation)}
	first, last, overlap := spec.Epochs[0], spec.Epochs[len(spec.Epochs)-1], seconds(pol.OverlapS)
	h := artifact.Header{Type: TypePackage, Version: PackageVersion, Subject: spec.Site, Serial: spec.Serial,
		IssuedAt: spec.IssuedAt, NotBefore: first.Start.Add(-overlap), NotAfter: last.End.Add(overlap)}
	return artifact.Sign(s, h, body)
}

// checkSpec checks what both halves of BuildPackage rely on, and decodes
// the spec's policy.
func checkSpec(spec PackageSpec) (Policy, error) {
	var pol Policy
	if err := CheckName("site", spec.Site); err != nil {
		return pol, err
	}
	if err := CheckName("scope", spec.Scope); err != nil {
		return pol, err
	}
	if err := artifact.DecodeBody(spec.Policy, &pol); err != nil {
		return pol, fmt.Errorf("site: policy: %w", err)
	}
	if err := pol.CheckDurations(); err != nil {
		return pol, err
	}
	if err := CheckEpochs(spec.Epochs); err != nil {
		return pol, err
	}
	if len(spec.Revocation) == 0 {
		return pol, errors.New("site: a package carries the scope's revocation list")
	}
	return pol, nil
}

func sealedMeta(scope string, es []Epoch) map[string]string {
	ns := make([]string, len(es))
	for i, e := range es {
		ns[i] = strconv.FormatUint(uint64(e.N), 10)
	}
	return map[string]string{"scope": scope, "epochs": strings.Join(ns, ",")}
}

// ReadPackage verifies a provisioning package signed by a key of ring and
// bound to siteID, decodes it, hands its policy to checkPolicy (the site's
// rules), and verifies the revocation list inside it. When now is not zero,
// a package that is not valid yet or whose epochs are all over (allowing
// the policy's clock tolerance) is refused with an error that also wraps
// artifact.ErrNotYetValid or artifact.ErrExpired. Every error wraps
// ErrBadPackage.
func ReadPackage(data []byte, ring artifact.Keyring, siteID string, now time.Time, checkPolicy func(Policy) error) (*Package, error) {
	fail := func(err error, format string, a ...any) (*Package, error) {
		msg := fmt.Sprintf(format, a...)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadPackage, msg, err)
		}
		return nil, fmt.Errorf("%w: %s", ErrBadPackage, msg)
	}
	if siteID == "" {
		return fail(nil, "the site id to check the package against is missing")
	}
	h, raw, err := artifact.Verify(data, ring, artifact.Expect{Type: TypePackage, Subject: siteID, MaxSize: MaxPackageSize})
	if err != nil {
		return fail(err, "provisioning package")
	}
	if h.Version != PackageVersion {
		return fail(nil, "package version %d is not supported by this Outpost", h.Version)
	}
	var b packageBody
	if err := artifact.DecodeBody(raw, &b); err != nil {
		return fail(err, "provisioning package")
	}
	if b.Site != h.Subject {
		return fail(artifact.ErrWrongBound, "body names site %q, header %q", ident.Clip(b.Site), ident.Clip(h.Subject))
	}
	if err := CheckName("scope", b.Scope); err != nil {
		return fail(err, "provisioning package")
	}
	if err := b.Policy.CheckDurations(); err != nil {
		return fail(err, "provisioning package")
	}
	if err := checkPolicy(b.Policy); err != nil {
		return fail(err, "provisioning package")
	}
	if err := CheckEpochs(b.Epochs); err != nil {
		return fail(err, "provisioning package")
	}
	if len(b.Keys) == 0 || len(b.Keys) > keys.MaxSealedFileSize {
		return fail(nil, "sealed scope keys missing or too large")
	}
	rl, err := ReadRevocationList([]byte(b.Revocation), ring, b.Scope)
	if err != nil {
		return nil, err
	}
	if !now.IsZero() {
		// A package's window, like an epoch's (site's Epoch.Open), excludes
		// its end: it is over at NotAfter itself.
		switch clockguard.Window(now, h.NotBefore, h.NotAfter.Add(-time.Nanosecond), seconds(b.Policy.ClockToleranceS)) {
		case clockguard.Before:
			return fail(artifact.ErrNotYetValid, "valid from %s, the site's time is %s (check the site clock)",
				h.NotBefore.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		case clockguard.After:
			return fail(artifact.ErrExpired, "its epochs ended at %s, the site's time is %s: provision the site again",
				h.NotAfter.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	return &Package{Header: h, Site: b.Site, Scope: b.Scope, Policy: b.Policy, Epochs: b.Epochs, Revocation: rl, sealed: b.Keys}, nil
}

// OpenKeys decrypts the package's scope keys, one per epoch, with the
// passphrase the package was made for. It wraps keys.ErrWrongPassphrase
// when the passphrase is wrong (or the sealed keys were altered).
func (p *Package) OpenKeys(passphrase []byte) ([][]byte, error) {
	s, pt, err := keys.Open(passphrase, p.sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: scope keys: %w", ErrBadPackage, err)
	}
	want := sealedMeta(p.Scope, p.Epochs)
	if s.Unsealed || s.Purpose != SealedKeysPurpose || s.Subject != p.Site || len(s.Meta) != len(want) ||
		s.Meta["scope"] != want["scope"] || s.Meta["epochs"] != want["epochs"] || len(pt) != keys.Size*len(p.Epochs) {
		clear(pt)
		return nil, fmt.Errorf("%w: the sealed scope keys do not belong to this package", ErrBadPackage)
	}
	out := make([][]byte, len(p.Epochs))
	for i := range out {
		out[i] = bytes.Clone(pt[i*keys.Size : (i+1)*keys.Size])
	}
	clear(pt)
	return out, nil
}
