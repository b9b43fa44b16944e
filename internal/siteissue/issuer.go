// Package siteissue is the server side of site verifiers, and the one
// service behind every way to administer them (the /v1/sites API, `outpost
// admin site`, and its air-gapped --data mode): scopes and their epoch
// schedules, provisioning packages, technician credentials, revocation
// lists and emergency rolls. The site side (public) is package site, which
// also holds the wire formats and the derivation.
//
// Its state lives in the store (store.SiteStore, both engines); every
// change commits in one transaction with its audit entry (site.policy,
// site.provision, site.credential, site.revoke, site.roll), which holds
// ids, epochs, serials and fingerprints, never a key or passphrase.
//
//	is := siteissue.New(st.(store.SiteStore), master)
//	by := siteissue.Actor{Realm: "default", Name: "api:cli_1"}
//	pkg, err := is.Provision(ctx, by, "north", "cab-17", passphrase)
//	cred, err := is.Credential(ctx, by, siteissue.CredentialRequest{Scope: "north", Tech: "tech-042"})
//	list, err := is.Revoke(ctx, by, "north", []string{"tech-042"}, nil, "lost phone")
//	roll, err := is.Roll(ctx, by, "north")
//
// Earlier versions kept this state in DIR/sites.db; [Issuer.MigrateLegacy]
// imports such a file once.
//
// Keys: the scope key of epoch e is ScopeKey (HKDF of the master key,
// purpose "scope-key", epoch e, context scope id); a technician's seed is
// site.TechnicianSeed of it. Nothing per technician is stored except
// revocations.
package siteissue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keyexport"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/sitewire"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/otp"
	"github.com/outpost-auth/outpost/site"
)

// Errors callers branch on. Invalid ids wrap site.ErrBadID, short
// passphrases keys.ErrWeakPassphrase, a passphrase equal to the master
// key's keyexport.ErrMasterPassphrase.
var (
	ErrUnknownScope = errors.New("siteissue: unknown scope")
	// ErrScopeTaken: another realm holds the scope id (ids are unique
	// across realms, because a scope's keys depend on its id alone).
	ErrScopeTaken = errors.New("siteissue: scope id is taken by another realm")
	// ErrRevoked: a credential was asked for a revoked technician.
	ErrRevoked = errors.New("siteissue: technician is revoked")
	// ErrNotRevoked: an undo named a technician who is not revoked.
	ErrNotRevoked = errors.New("siteissue: technician is not revoked")
	// ErrPolicyFixed: digits or period of an existing scope cannot change.
	ErrPolicyFixed = errors.New("siteissue: digits and period of a scope are fixed")
	// ErrInvalid: a request is out of bounds (a policy value, an epoch, a
	// reason, a roll at the very moment of the last one).
	ErrInvalid = errors.New("siteissue: invalid request")
)

// Limits.
const (
	// MaxReasonLen bounds a revocation's reason, in bytes (free text:
	// ident.CheckText).
	MaxReasonLen = ident.MaxLen
	// auditTechs is how many technicians one site.revoke entry names; a
	// larger revocation is recorded in several entries.
	auditTechs = 64
)

// ScopeKey derives the scope key of scope for epoch from the master key:
// keys.Derive(master, 32, keys.PurposeScope, epoch, scope).
func ScopeKey(m *keys.Master, scope string, epoch uint32) []byte {
	return m.Derive(site.ScopeKeySize, keys.PurposeScope, epoch, scope)
}

// Actor is who calls: the realm whose scopes they work on and the name
// audit entries give them ("api:<client id>", "local:<user>").
type Actor struct {
	Realm, Name string
}

// Issuer issues site artifacts. Its fields may be set before first use.
type Issuer struct {
	store  store.SiteStore
	master *keys.Master
	signer *keys.Signer
	// Now is the issuer's clock; clock.System when nil.
	Now func() time.Time
	// KDF is the argon2id cost of packages and key files; the zero value
	// is keys.DefaultKDF.
	KDF keys.KDFParams
	// MasterPassphrase, when set, is refused as a package or key file
	// passphrase (keyexport.CheckPassphrase): the CLI's local mode knows it,
	// a server does not.
	MasterPassphrase []byte
}

// New returns an issuer working on st. Artifacts are signed with the master
// key's epoch-0 signing key, the one 'outpost keys export-public' writes for
// sites to pin.
func New(st store.SiteStore, m *keys.Master) *Issuer {
	return &Issuer{store: st, master: m, signer: m.Signer(0)}
}

// now is truncated to microseconds, the resolution the store keeps.
func (is *Issuer) now() time.Time {
	return clock.Or(is.Now)().UTC().Truncate(time.Microsecond)
}

func (is *Issuer) kdf() keys.KDFParams {
	if is.KDF == (keys.KDFParams{}) {
		return keys.DefaultKDF
	}
	return is.KDF
}

// SigningKeyID is the key id sites must pin.
func (is *Issuer) SigningKeyID() string { return is.signer.KeyID }

func (is *Issuer) ring() artifact.Keys { return artifact.Keys{is.signer.Public} }

// scopeState is a stored scope with its policy and schedule decoded.
type scopeState struct {
	sc     store.SiteScope
	policy site.Policy
	sched  Schedule
}

func decode(sc store.SiteScope) (*scopeState, error) {
	p, err := site.UnmarshalPolicy(sc.Policy)
	if err != nil {
		return nil, fmt.Errorf("siteissue: scope %s: stored policy: %w", sc.ID, err)
	}
	st := &scopeState{sc: sc, policy: p, sched: newSchedule()}
	for _, g := range sc.Segments {
		st.sched.segs = append(st.sched.segs, segment{g.Start, g.FirstEpoch})
	}
	return st, nil
}

func unknownScope(scope string) error {
	return fmt.Errorf("%w %q: provision a site or issue a credential in it first", ErrUnknownScope, scope)
}

// errReplan asks Provision to seal again: the epochs changed (a roll)
// between sealing and locking.
var errReplan = errors.New("siteissue: the scope's epochs changed while sealing")

// inScope runs fn in one store transaction with scope locked (created with
// the default policy first when create is set and it does not exist), at a
// time taken inside the transaction. fn may run more than once.
func (is *Issuer) inScope(ctx context.Context, by Actor, scope string, create bool, fn func(tx store.SiteTx, st *scopeState, now time.Time) error) error {
	if err := site.CheckName("scope", scope); err != nil {
		return err
	}
	var c *store.SiteScope
	if create {
		pol, err := site.MarshalPolicy(site.DefaultPolicy())
		if err != nil {
			return err
		}
		c = &store.SiteScope{CreatedAt: is.now(), Policy: pol}
	}
	ran := false
	err := is.store.SiteScopeTx(ctx, by.Realm, scope, c, func(tx store.SiteTx) error {
		ran = true
		st, err := decode(tx.Scope())
		if err != nil {
			return err
		}
		return fn(tx, st, is.now())
	})
	switch {
	case ran || err == nil:
		return err
	case errors.Is(err, store.ErrNotFound):
		return unknownScope(scope)
	case errors.Is(err, store.ErrExists):
		return fmt.Errorf("%w: %q; choose another scope id", ErrScopeTaken, scope)
	}
	return err
}

// record appends one audit entry of the issuer in tx.
func record(tx store.SiteTx, now time.Time, by Actor, kind, subject string, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("siteissue: encoding %s: %w", kind, err)
	}
	_, err = tx.AppendAudit(eventlog.Entry{Time: now, Kind: kind, Actor: by.Name, Subject: subject, Data: raw})
	return err
}

// Scope is a scope's state, without any secret.
type Scope struct {
	ID      string      `json:"scope"`
	Created time.Time   `json:"created"`
	Policy  site.Policy `json:"-"`
	// PolicyJSON is Policy in its wire form (site.MarshalPolicy).
	PolicyJSON       json.RawMessage    `json:"policy"`
	Current          site.Epoch         `json:"current_epoch"`
	Next             site.Epoch         `json:"next_epoch"`
	MaxIssued        uint32             `json:"max_issued_epoch"`
	Rolls            []time.Time        `json:"emergency_rolls,omitempty"`
	PackageSerial    uint64             `json:"package_serial"`
	RevocationSerial uint64             `json:"revocation_serial"`
	Revoked          []sitewire.Revoked `json:"revoked"`
	Sites            []string           `json:"sites"`
}

// UnmarshalJSON reads what json.Marshal of a Scope wrote, Policy included.
func (s *Scope) UnmarshalJSON(b []byte) error {
	type plain Scope
	if err := json.Unmarshal(b, (*plain)(s)); err != nil {
		return err
	}
	p, err := site.UnmarshalPolicy(s.PolicyJSON)
	s.Policy = p
	return err
}

func describe(st *scopeState, revs []store.SiteRevocation, sites []string, now time.Time) (Scope, error) {
	cur, err := st.sched.At(now)
	if err != nil {
		return Scope{}, err
	}
	next, err := st.sched.Epoch(cur.N + 1)
	if err != nil {
		return Scope{}, err
	}
	pol, err := site.MarshalPolicy(st.policy)
	if err != nil {
		return Scope{}, err
	}
	sc := Scope{ID: st.sc.ID, Created: st.sc.CreatedAt, Policy: st.policy, PolicyJSON: pol, Current: cur, Next: next, MaxIssued: st.sc.MaxIssued,
		Rolls: st.sched.Rolls(), PackageSerial: st.sc.PackageSerial, RevocationSerial: st.sc.RevocationSerial,
		Revoked: []sitewire.Revoked{}, Sites: append([]string{}, sites...)}
	for _, r := range revs {
		sc.Revoked = append(sc.Revoked, sitewire.Revoked{Tech: r.Tech, Through: r.Through, At: r.RevokedAt})
	}
	return sc, nil
}

// Scope returns scope's state; ErrUnknownScope if it does not exist in by's realm.
func (is *Issuer) Scope(ctx context.Context, by Actor, scope string) (Scope, error) {
	if err := site.CheckName("scope", scope); err != nil {
		return Scope{}, err
	}
	sc, err := is.store.GetSiteScope(ctx, by.Realm, scope)
	if errors.Is(err, store.ErrNotFound) {
		return Scope{}, unknownScope(scope)
	}
	if err != nil {
		return Scope{}, err
	}
	st, err := decode(sc)
	if err != nil {
		return Scope{}, err
	}
	revs, err := is.store.ListSiteRevocations(ctx, by.Realm, scope)
	if err != nil {
		return Scope{}, err
	}
	sites, err := is.store.ListSiteNames(ctx, by.Realm, scope)
	if err != nil {
		return Scope{}, err
	}
	return describe(st, revs, sites, is.now())
}

// PolicyChange changes some values of a scope's policy; nil fields keep
// theirs. Its JSON names are those of the policy's wire form (durations in
// whole seconds).
type PolicyChange struct {
	Digits              *int   `json:"digits,omitempty"`
	PeriodS             *int64 `json:"period_s,omitempty"`
	Window              *int   `json:"window,omitempty"`
	OverlapS            *int64 `json:"overlap_s,omitempty"`
	ClockToleranceS     *int64 `json:"clock_tolerance_s,omitempty"`
	LockoutFailures     *int   `json:"lockout_failures,omitempty"`
	DelayS              *int64 `json:"delay_s,omitempty"`
	LockoutS            *int64 `json:"lockout_s,omitempty"`
	SiteFailuresPerHour *int   `json:"site_failures_per_hour,omitempty"`
}

// FullChange is the change that sets every value of p.
func FullChange(p site.Policy) PolicyChange {
	s := func(d time.Duration) *int64 { v := int64(d / time.Second); return &v }
	return PolicyChange{Digits: &p.Digits, PeriodS: s(p.Period), Window: &p.Window, OverlapS: s(p.Overlap),
		ClockToleranceS: s(p.ClockTolerance), LockoutFailures: &p.LockoutFailures, DelayS: s(p.Delay), LockoutS: s(p.Lockout),
		SiteFailuresPerHour: &p.SiteFailuresPerHour}
}

// maxChangeSeconds keeps a duration's conversion from overflowing; Validate
// has the real limits.
const maxChangeSeconds = int64(1 << 40)

// Apply returns p with c's values.
func (c PolicyChange) Apply(p site.Policy) (site.Policy, error) {
	setInt := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	var bad error
	setDur := func(dst *time.Duration, v *int64) {
		if v == nil {
			return
		}
		if *v < 0 || *v > maxChangeSeconds {
			bad = fmt.Errorf("%w: policy: %d seconds is out of range", ErrInvalid, *v)
			return
		}
		*dst = time.Duration(*v) * time.Second
	}
	setInt(&p.Digits, c.Digits)
	setDur(&p.Period, c.PeriodS)
	setInt(&p.Window, c.Window)
	setDur(&p.Overlap, c.OverlapS)
	setDur(&p.ClockTolerance, c.ClockToleranceS)
	setInt(&p.LockoutFailures, c.LockoutFailures)
	setDur(&p.Delay, c.DelayS)
	setDur(&p.Lockout, c.LockoutS)
	setInt(&p.SiteFailuresPerHour, c.SiteFailuresPerHour)
	if bad != nil {
		return p, bad
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return p, nil
}

// SetPolicy is UpdatePolicy with every value of p.
func (is *Issuer) SetPolicy(ctx context.Context, by Actor, scope string, p site.Policy) (Scope, error) {
	return is.UpdatePolicy(ctx, by, scope, FullChange(p))
}

// UpdatePolicy creates scope with the default policy changed by c, or
// changes the policy of an existing scope for the packages provisioned from
// now on. Digits and period cannot change once the scope has a package, a
// credential or a revocation list (ErrPolicyFixed): every credential
// depends on them. A change is recorded as site.policy.
func (is *Issuer) UpdatePolicy(ctx context.Context, by Actor, scope string, c PolicyChange) (Scope, error) {
	var sc Scope
	err := is.inScope(ctx, by, scope, true, func(tx store.SiteTx, st *scopeState, now time.Time) error {
		p, err := c.Apply(st.policy)
		if err != nil {
			return err
		}
		old := st.policy
		if old.Digits != p.Digits || old.Period != p.Period {
			if st.sc.PackageSerial > 0 || st.sc.MaxIssued > 0 || st.sc.RevocationSerial > 0 {
				return fmt.Errorf("%w: scope %s uses %d digits every %v; create a new scope for other values",
					ErrPolicyFixed, scope, old.Digits, old.Period)
			}
		}
		if p != old || tx.Created() {
			raw, err := site.MarshalPolicy(p)
			if err != nil {
				return err
			}
			st.sc.Policy, st.policy = raw, p
			if err := tx.SaveScope(st.sc); err != nil {
				return err
			}
			if err := record(tx, now, by, audit.SitePolicy, scope, map[string]any{"policy": json.RawMessage(raw), "created": tx.Created()}); err != nil {
				return err
			}
		}
		revs, err := tx.Revocations()
		if err != nil {
			return err
		}
		sites, err := tx.Sites()
		if err != nil {
			return err
		}
		sc, err = describe(st, revs, sites, now)
		return err
	})
	return sc, err
}

// Provisioned is a package made by Provision.
type Provisioned struct {
	// Package is the file to install at the site (base64 in JSON).
	Package          []byte       `json:"package,omitempty"`
	Site             string       `json:"site"`
	Scope            string       `json:"scope"`
	Serial           uint64       `json:"serial"`
	Epochs           []site.Epoch `json:"epochs"`
	RevocationSerial uint64       `json:"revocation_serial"`
	KeyID            string       `json:"signing_key_id"`
}

// Provision makes the provisioning package of siteID in scope (created with
// the default policy if new): the scope keys of the current and next epoch
// sealed under passphrase, the policy and the current revocation list,
// signed and bound to siteID; recorded as site.provision.
//
// The keys are sealed (argon2id, the slow part) before the scope is locked;
// if an emergency roll changes the epochs meanwhile, they are sealed again.
func (is *Issuer) Provision(ctx context.Context, by Actor, scope, siteID string, passphrase []byte) (Provisioned, error) {
	if err := site.CheckName("site", siteID); err != nil {
		return Provisioned{}, err
	}
	if err := site.CheckName("scope", scope); err != nil {
		return Provisioned{}, err
	}
	if err := keyexport.CheckPassphrase(passphrase, is.MasterPassphrase); err != nil {
		return Provisioned{}, err
	}
	for range 3 {
		epochs, err := is.plannedEpochs(ctx, by, scope)
		if err != nil {
			return Provisioned{}, err
		}
		spec := sitewire.PackageSpec{Site: siteID, Scope: scope, Epochs: sitewire.WireEpochs(epochs), IssuedAt: is.now()}
		for _, e := range epochs {
			spec.ScopeKeys = append(spec.ScopeKeys, ScopeKey(is.master, scope, e.N))
		}
		sealed, err := sitewire.SealScopeKeys(spec, passphrase, is.kdf())
		for _, k := range spec.ScopeKeys {
			clear(k)
		}
		if err != nil {
			return Provisioned{}, err
		}
		out, err := is.provision(ctx, by, scope, siteID, epochs, sealed)
		if !errors.Is(err, errReplan) {
			return out, err
		}
	}
	return Provisioned{}, fmt.Errorf("siteissue: scope %s was rolled during each of three attempts to provision %s; try again", scope, siteID)
}

// plannedEpochs returns the epochs a package of scope would carry now
// (current and next), read without a lock.
func (is *Issuer) plannedEpochs(ctx context.Context, by Actor, scope string) ([]site.Epoch, error) {
	sched := newSchedule()
	sc, err := is.store.GetSiteScope(ctx, by.Realm, scope)
	switch {
	case err == nil:
		st, err := decode(sc)
		if err != nil {
			return nil, err
		}
		sched = st.sched
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	return packageEpochs(sched, is.now())
}

func packageEpochs(sched Schedule, now time.Time) ([]site.Epoch, error) {
	cur, err := sched.At(now)
	if err != nil {
		return nil, err
	}
	next, err := sched.Epoch(cur.N + 1)
	if err != nil {
		return nil, err
	}
	return []site.Epoch{cur, next}, nil
}

func (is *Issuer) provision(ctx context.Context, by Actor, scope, siteID string, planned []site.Epoch, sealed *sitewire.SealedKeys) (Provisioned, error) {
	var out Provisioned
	err := is.inScope(ctx, by, scope, true, func(tx store.SiteTx, st *scopeState, now time.Time) error {
		epochs, err := packageEpochs(st.sched, now)
		if err != nil {
			return err
		}
		for i := range epochs {
			if epochs[i].N != planned[i].N {
				return errReplan
			}
		}
		list, err := is.currentList(tx, st, now)
		if err != nil {
			return err
		}
		serial := st.sc.PackageSerial + 1
		pkg, err := sitewire.BuildSealedPackage(is.signer, sitewire.PackageSpec{Site: siteID, Scope: scope, Policy: st.sc.Policy,
			Epochs: sitewire.WireEpochs(epochs), Revocation: list, Serial: serial, IssuedAt: now}, sealed)
		if err != nil {
			return err
		}
		next := epochs[len(epochs)-1]
		st.sc.PackageSerial, st.sc.MaxIssued = serial, max(st.sc.MaxIssued, next.N)
		if err := tx.SaveScope(st.sc); err != nil {
			return err
		}
		ns := []uint32{epochs[0].N, next.N}
		if err := tx.AddPackage(store.SitePackage{Serial: serial, Site: siteID, IssuedAt: now, Epochs: ns}); err != nil {
			return err
		}
		out = Provisioned{Package: pkg, Site: siteID, Scope: scope, Serial: serial, Epochs: epochs, RevocationSerial: st.sc.RevocationSerial, KeyID: is.signer.KeyID}
		return record(tx, now, by, audit.SiteProvision, scope, map[string]any{"site": siteID, "serial": serial, "epochs": ns,
			"revocation_serial": out.RevocationSerial, "signing_key_id": out.KeyID, "bytes": len(pkg)})
	})
	return out, err
}

// currentList returns the scope's latest signed revocation list, signing
// an empty serial-1 list the first time.
func (is *Issuer) currentList(tx store.SiteTx, st *scopeState, now time.Time) ([]byte, error) {
	if st.sc.RevocationSerial > 0 && len(st.sc.RevocationList) > 0 {
		return st.sc.RevocationList, nil
	}
	return is.signList(tx, st, now, 1)
}

// signList signs revocation list number serial from the stored revocations
// whose epochs can still be open at some site, stores it and returns it.
func (is *Issuer) signList(tx store.SiteTx, st *scopeState, now time.Time, serial uint64) ([]byte, error) {
	revs, err := tx.Revocations()
	if err != nil {
		return nil, err
	}
	var entries []sitewire.Revoked
	for _, r := range revs {
		if stillOpen(st.sched, r.Through, now) {
			entries = append(entries, sitewire.Revoked{Tech: r.Tech, Through: r.Through, At: r.RevokedAt})
		}
	}
	list, err := sitewire.BuildRevocationList(is.signer, st.sc.ID, serial, now, entries)
	if err != nil {
		return nil, err
	}
	st.sc.RevocationSerial, st.sc.RevocationList = serial, list
	if err := tx.SaveScope(st.sc); err != nil {
		return nil, err
	}
	return list, nil
}

// stillOpen reports whether some site may still accept codes of an epoch up
// to through at now: until the latest end that epoch was ever planned to
// have, plus the largest overlap a policy may give. After that the entry
// is dropped from new lists (the issuer keeps it, and still refuses to
// issue those epochs' credentials).
func stillOpen(s Schedule, through uint32, now time.Time) bool {
	return now.Before(s.plannedEnd(through).Add(site.MaxOverlap))
}

// EpochSel selects the epoch of a credential: Current, Next, or a number >= 0.
type EpochSel int64

// Epoch selectors.
const (
	Current EpochSel = -1
	Next    EpochSel = -2
)

// ParseEpochSel reads "current", "next" or an epoch number.
func ParseEpochSel(s string) (EpochSel, error) {
	switch s {
	case "", "current":
		return Current, nil
	case "next":
		return Next, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: epoch %q is not current, next or a number", ErrInvalid, ident.Clip(s))
	}
	return EpochSel(n), nil
}

// CredentialRequest asks for a technician's credential.
type CredentialRequest struct {
	Scope, Tech string
	// Epoch is Current (the zero value is epoch 0: say which), Next or a number.
	Epoch EpochSel
	// Reinstate allows a credential for a revoked technician, for an epoch
	// after the revoked ones.
	Reinstate bool
	// Passphrase, when set, seals the credential into a key file
	// (Credential.KeyFile) for a USB drive.
	Passphrase []byte
}

// Credential is a technician's TOTP credential for one epoch of a scope.
type Credential struct {
	Scope string
	Tech  string
	Epoch site.Epoch
	// Key is the otpauth key (Key.URI() for an authenticator app). Its
	// Secret is the technician's seed: handle it as a secret.
	Key         otp.Key
	Fingerprint string
	// KeyFile is the credential sealed under the request's passphrase (nil
	// without one); 'outpost keys inspect' opens it.
	KeyFile []byte
}

// CredentialInfo is a credential as the API answers it: the otpauth URI,
// or the key file when one was asked for (then no URI).
type CredentialInfo struct {
	Scope       string    `json:"scope"`
	Tech        string    `json:"tech"`
	Epoch       uint32    `json:"epoch"`
	ValidFrom   time.Time `json:"valid_from"`
	ValidUntil  time.Time `json:"valid_until"`
	Fingerprint string    `json:"fingerprint"`
	OTPAuthURI  string    `json:"otpauth_uri,omitempty"`
	KeyFile     []byte    `json:"key_file,omitempty"`
}

// Info is c without its secret in the clear unless no key file was made.
func (c Credential) Info() CredentialInfo {
	in := CredentialInfo{Scope: c.Scope, Tech: c.Tech, Epoch: c.Epoch.N, ValidFrom: c.Epoch.Start, ValidUntil: c.Epoch.End,
		Fingerprint: c.Fingerprint, KeyFile: c.KeyFile}
	if c.KeyFile == nil {
		in.OTPAuthURI = c.Key.URI()
	}
	return in
}

// Credential derives technician req.Tech's credential in req.Scope
// (created with the default policy if new) for the selected epoch, which
// must not be over, and records it as site.credential (epoch, fingerprint,
// whether a key file was made). A revoked technician gets one only for an
// epoch after the revoked ones, and only with Reinstate set. With a
// passphrase, the credential is also sealed into a key file, after the
// record is committed.
func (is *Issuer) Credential(ctx context.Context, by Actor, req CredentialRequest) (Credential, error) {
	scope, tech, sel := req.Scope, req.Tech, req.Epoch
	if err := site.CheckTechID(tech); err != nil {
		return Credential{}, err
	}
	if sel < Next || sel > 1<<32-1 {
		return Credential{}, fmt.Errorf("%w: epoch selector %d", ErrInvalid, sel)
	}
	if req.Passphrase != nil {
		if err := keyexport.CheckPassphrase(req.Passphrase, is.MasterPassphrase); err != nil {
			return Credential{}, err
		}
	}
	var out Credential
	err := is.inScope(ctx, by, scope, true, func(tx store.SiteTx, st *scopeState, now time.Time) error {
		cur, err := st.sched.At(now)
		if err != nil {
			return err
		}
		var e site.Epoch
		switch sel {
		case Current:
			e = cur
		case Next:
			e, err = st.sched.Epoch(cur.N + 1)
		default:
			e, err = st.sched.Epoch(uint32(sel))
			if err != nil {
				err = fmt.Errorf("%w: %w", ErrInvalid, err)
			}
			if err == nil && !now.Before(e.End) {
				err = fmt.Errorf("%w: epoch %d ended at %s; the current epoch is %d", ErrInvalid, e.N, e.End.Format(time.RFC3339), cur.N)
			}
		}
		if err != nil {
			return err
		}
		rv, revoked, err := tx.Revocation(tech)
		switch {
		case err != nil:
			return err
		case revoked && e.N <= rv.Through:
			return fmt.Errorf("%w: %s's credentials are revoked up to epoch %d in scope %s, and sites with the list refuse them; to reinstate, issue one for epoch %d or later with --reinstate",
				ErrRevoked, tech, rv.Through, scope, rv.Through+1)
		case revoked && !req.Reinstate:
			return fmt.Errorf("%w: %s was revoked (up to epoch %d); issuing a credential for epoch %d reinstates them: confirm with --reinstate",
				ErrRevoked, tech, rv.Through, e.N)
		}
		if e.N > st.sc.MaxIssued {
			st.sc.MaxIssued = e.N
			if err := tx.SaveScope(st.sc); err != nil {
				return err
			}
		}
		sk := ScopeKey(is.master, scope, e.N)
		seed := site.TechnicianSeed(sk, tech)
		clear(sk)
		out = Credential{Scope: scope, Tech: tech, Epoch: e, Fingerprint: keyexport.Fingerprint(seed),
			Key: otp.Key{Params: st.policy.OTP(), Secret: seed, Issuer: CredentialIssuer(scope, e.N), Account: tech}}
		return record(tx, now, by, audit.SiteCredential, tech, map[string]any{"scope": scope, "epoch": e.N, "fingerprint": out.Fingerprint,
			"key_file": req.Passphrase != nil, "reinstated": revoked})
	})
	if err != nil || req.Passphrase == nil {
		return out, err
	}
	out.KeyFile, err = keyexport.SealTOTP(req.Passphrase, is.kdf(), keys.Sealed{Purpose: string(keys.PurposeTechnician), Subject: tech,
		Epoch: out.Epoch.N, Meta: map[string]string{"scope": scope}, Created: is.now()}, out.Key.Params, out.Key.Issuer, out.Key.Secret)
	return out, err
}

// CredentialIssuer is the issuer label of a credential in authenticator
// apps: it names the scope and the epoch, so that a technician holding the
// current and the next epoch's credentials can tell them apart.
func CredentialIssuer(scope string, epoch uint32) string {
	return fmt.Sprintf("Outpost %s epoch %d", scope, epoch)
}

// RevocationResult is what Revoke made.
type RevocationResult struct {
	// List is the signed revocation list to deliver to the scope's sites.
	List    []byte   `json:"list,omitempty"`
	Scope   string   `json:"scope"`
	Serial  uint64   `json:"serial"`
	Entries int      `json:"entries"`
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	// Through is the epoch up to which the added technicians are revoked.
	Through uint32 `json:"through_epoch"`
}

// Revoke revokes technicians add and lifts the revocations of undo in
// scope, and signs the next revocation list (serial + 1); recorded as
// site.revoke (with the reason, which stays on the server). A revocation
// covers every epoch for which a credential of the scope may exist (up to
// the highest epoch ever handed out). With neither add nor undo it returns
// the current list unchanged. Entries whose epochs are over at every site
// are left out of new lists.
func (is *Issuer) Revoke(ctx context.Context, by Actor, scope string, add, undo []string, reason string) (RevocationResult, error) {
	for _, t := range append(append([]string(nil), add...), undo...) {
		if err := site.CheckTechID(t); err != nil {
			return RevocationResult{}, err
		}
	}
	if ident.CheckText("the reason", reason) != nil {
		return RevocationResult{}, fmt.Errorf("%w: the reason must be one line of at most %d characters", ErrInvalid, MaxReasonLen)
	}
	var out RevocationResult
	err := is.inScope(ctx, by, scope, false, func(tx store.SiteTx, st *scopeState, now time.Time) error {
		cur, err := st.sched.At(now)
		if err != nil {
			return err
		}
		through := max(st.sc.MaxIssued, cur.N)
		out = RevocationResult{Scope: scope, Through: through, Added: []string{}, Removed: []string{}}
		for _, t := range add {
			r, found, err := tx.Revocation(t)
			if err != nil {
				return err
			}
			if !found { // an existing revocation keeps its time and reason, and covers up to the later epoch
				r = store.SiteRevocation{Tech: t, RevokedAt: now, Reason: reason}
			}
			r.Through = max(r.Through, through)
			if err := tx.PutRevocation(r); err != nil {
				return err
			}
			out.Added = append(out.Added, t)
		}
		for _, t := range undo {
			ok, err := tx.DeleteRevocation(t)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%w: %s is not revoked in scope %s; nothing to undo", ErrNotRevoked, t, scope)
			}
			out.Removed = append(out.Removed, t)
		}
		changed := len(add)+len(undo) > 0
		if changed {
			out.List, err = is.signList(tx, st, now, st.sc.RevocationSerial+1)
		} else {
			out.List, err = is.currentList(tx, st, now)
		}
		if err != nil {
			return err
		}
		out.Serial = st.sc.RevocationSerial
		l, err := sitewire.ReadRevocationList(out.List, is.ring(), scope)
		if err != nil {
			return err
		}
		out.Entries = len(l.Revoked)
		if !changed {
			return nil
		}
		// One entry per auditTechs technicians, so that none outgrows the log's bound.
		for i := 0; i == 0 || i < len(out.Added) || i < len(out.Removed); i += auditTechs {
			if err := record(tx, now, by, audit.SiteRevoke, scope, map[string]any{"added": window(out.Added, i), "removed": window(out.Removed, i),
				"through_epoch": through, "serial": out.Serial, "entries": out.Entries, "reason": reason}); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// window returns s[i:i+auditTechs], clipped, never nil.
func window(s []string, i int) []string {
	if i >= len(s) {
		return []string{}
	}
	return s[i:min(len(s), i+auditTechs)]
}

// RollResult is what an emergency roll did.
type RollResult struct {
	Scope    string     `json:"scope"`
	Previous site.Epoch `json:"previous_epoch"`
	Current  site.Epoch `json:"current_epoch"`
	Next     site.Epoch `json:"next_epoch"`
	// Sites are the sites ever provisioned in the scope: all need a new package.
	Sites []string `json:"sites"`
}

// Roll ends scope's current epoch now and starts a new one, numbered above
// every epoch ever handed out, so that the keys of a compromised site and
// every credential issued so far stop working at each site that installs a
// package provisioned after the roll; recorded as site.roll. Sites that do
// not get one keep accepting their old epochs until those end.
func (is *Issuer) Roll(ctx context.Context, by Actor, scope string) (RollResult, error) {
	var out RollResult
	err := is.inScope(ctx, by, scope, false, func(tx store.SiteTx, st *scopeState, now time.Time) error {
		prev, err := st.sched.At(now)
		if err != nil {
			return err
		}
		ns, err := st.sched.roll(now, st.sc.MaxIssued)
		if err != nil {
			return err
		}
		g := ns.segs[len(ns.segs)-1]
		if err := tx.AddSegment(store.SiteSegment{Start: g.Start, FirstEpoch: g.First}); err != nil {
			return err
		}
		st.sched = ns
		epochs, err := packageEpochs(ns, now)
		if err != nil {
			return err
		}
		sites, err := tx.Sites()
		if err != nil {
			return err
		}
		prev.End = now
		out = RollResult{Scope: scope, Previous: prev, Current: epochs[0], Next: epochs[1], Sites: append([]string{}, sites...)}
		return record(tx, now, by, audit.SiteRoll, scope, map[string]any{"previous_epoch": prev.N, "current_epoch": out.Current.N,
			"next_epoch": out.Next.N, "sites": len(sites)})
	})
	return out, err
}
