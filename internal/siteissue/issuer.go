// Package siteissue is the server side of site verifiers: scopes and their
// epoch schedules, provisioning packages, technician credentials,
// revocation lists and emergency rolls. The site side (public) is package
// site, which also holds the wire formats and the derivation.
//
// Its state lives in DIR/sites.db (embedded SQLite) next to the server's
// master key, so the admin commands work on a data directory directly; a
// server endpoint can wrap the same calls later.
//
//	is, err := siteissue.Open(ctx, dataDir, master)
//	pkg, err := is.Provision(ctx, "north", "cab-17", passphrase, keys.DefaultKDF)
//	cred, err := is.Credential(ctx, "north", "tech-042", siteissue.Current, false)
//	list, err := is.Revoke(ctx, "north", []string{"tech-042"}, nil, "lost phone")
//	roll, err := is.Roll(ctx, "north")
//
// Keys: the scope key of epoch e is ScopeKey (HKDF of the master key,
// purpose "scope-key", epoch e, context scope id); a technician's seed is
// site.TechnicianSeed of it. Nothing per technician is stored except
// revocations.
package siteissue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
	"github.com/outpost-auth/outpost/otp"
	"github.com/outpost-auth/outpost/site"
)

// DatabaseFile holds the issuer's site state inside the server data directory.
const DatabaseFile = "sites.db"

// Errors callers branch on.
var (
	ErrUnknownScope = errors.New("siteissue: unknown scope")
	// ErrRevoked: a credential was asked for a revoked technician.
	ErrRevoked = errors.New("siteissue: technician is revoked")
	// ErrPolicyFixed: digits or period of an existing scope cannot change.
	ErrPolicyFixed = errors.New("siteissue: digits and period of a scope are fixed")
)

// ScopeKey derives the scope key of scope for epoch from the master key:
// keys.Derive(master, 32, keys.PurposeScope, epoch, scope).
func ScopeKey(m *keys.Master, scope string, epoch uint32) []byte {
	return m.Derive(site.ScopeKeySize, keys.PurposeScope, epoch, scope)
}

// Issuer issues site artifacts from a server data directory.
type Issuer struct {
	db     *sql.DB
	master *keys.Master
	signer *keys.Signer
	// Now is the issuer's clock; time.Now when nil.
	Now func() time.Time
}

const schema = `
CREATE TABLE IF NOT EXISTS site_scopes (
	scope             TEXT    PRIMARY KEY,
	created_us        INTEGER NOT NULL,
	policy            TEXT    NOT NULL,
	max_issued        INTEGER NOT NULL,
	package_serial    INTEGER NOT NULL,
	revocation_serial INTEGER NOT NULL,
	revocation_list   BLOB
);
CREATE TABLE IF NOT EXISTS site_scope_segments (
	scope       TEXT    NOT NULL,
	start_us    INTEGER NOT NULL,
	first_epoch INTEGER NOT NULL,
	PRIMARY KEY (scope, start_us)
);
CREATE TABLE IF NOT EXISTS site_scope_revoked (
	scope         TEXT    NOT NULL,
	tech          TEXT    NOT NULL,
	through_epoch INTEGER NOT NULL,
	revoked_us    INTEGER NOT NULL,
	reason        TEXT    NOT NULL,
	PRIMARY KEY (scope, tech)
);
CREATE TABLE IF NOT EXISTS site_provisioned (
	scope     TEXT    NOT NULL,
	serial    INTEGER NOT NULL,
	site      TEXT    NOT NULL,
	issued_us INTEGER NOT NULL,
	epochs    TEXT    NOT NULL,
	PRIMARY KEY (scope, serial)
);`

// Open opens (creating if needed) DIR/sites.db. The artifacts are signed
// with the master key's epoch-0 signing key, the one 'outpost keys
// export-public' writes for sites to pin.
func Open(ctx context.Context, dataDir string, m *keys.Master) (*Issuer, error) {
	db, err := sqlitedb.Open(filepath.Join(dataDir, DatabaseFile))
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("siteissue: creating tables: %w", err)
	}
	return &Issuer{db: db, master: m, signer: m.Signer(0)}, nil
}

// Close closes the database.
func (is *Issuer) Close() error { return is.db.Close() }

// now is truncated to microseconds, the resolution the database stores.
func (is *Issuer) now() time.Time {
	return clock.Or(is.Now)().UTC().Truncate(time.Microsecond)
}

// SigningKeyID is the key id sites must pin.
func (is *Issuer) SigningKeyID() string { return is.signer.KeyID }

type scopeRow struct {
	id                   string
	created              time.Time
	policy               site.Policy
	maxIssued            uint32
	pkgSerial, revSerial uint64
	list                 []byte
	sched                Schedule
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func loadScope(ctx context.Context, q querier, scope string) (*scopeRow, error) {
	r := &scopeRow{id: scope}
	var created, maxIssued, pkg, rev int64
	var pol []byte
	err := q.QueryRowContext(ctx, `SELECT created_us, policy, max_issued, package_serial, revocation_serial, revocation_list
		FROM site_scopes WHERE scope = ?`, scope).Scan(&created, &pol, &maxIssued, &pkg, &rev, &r.list)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w %q: provision a site or issue a credential in it first", ErrUnknownScope, scope)
	}
	if err != nil {
		return nil, fmt.Errorf("siteissue: reading scope %s: %w", scope, err)
	}
	if r.policy, err = site.UnmarshalPolicy(pol); err != nil {
		return nil, fmt.Errorf("siteissue: scope %s: stored policy: %w", scope, err)
	}
	r.created, r.maxIssued, r.pkgSerial, r.revSerial = time.UnixMicro(created).UTC(), uint32(maxIssued), uint64(pkg), uint64(rev)
	rows, err := q.QueryContext(ctx, `SELECT start_us, first_epoch FROM site_scope_segments WHERE scope = ? ORDER BY start_us`, scope)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	r.sched = newSchedule()
	for rows.Next() {
		var start, first int64
		if err := rows.Scan(&start, &first); err != nil {
			return nil, err
		}
		r.sched.segs = append(r.sched.segs, segment{time.UnixMicro(start).UTC(), uint32(first)})
	}
	return r, rows.Err()
}

// ensureScope loads scope, creating it with the default policy if it does not exist.
func (is *Issuer) ensureScope(ctx context.Context, tx *sql.Tx, scope string, now time.Time) (*scopeRow, error) {
	if err := site.CheckName("scope", scope); err != nil {
		return nil, err
	}
	r, err := loadScope(ctx, tx, scope)
	if !errors.Is(err, ErrUnknownScope) {
		return r, err
	}
	pol, err := site.MarshalPolicy(site.DefaultPolicy())
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO site_scopes (scope, created_us, policy, max_issued, package_serial, revocation_serial)
		VALUES (?, ?, ?, 0, 0, 0)`, scope, now.UnixMicro(), pol); err != nil {
		return nil, err
	}
	return loadScope(ctx, tx, scope)
}

func (is *Issuer) inTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := is.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("siteissue: %w", err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// Scope is a scope's state, without any secret.
type Scope struct {
	ID               string         `json:"scope"`
	Created          time.Time      `json:"created"`
	Policy           site.Policy    `json:"-"`
	Current          site.Epoch     `json:"current_epoch"`
	Next             site.Epoch     `json:"next_epoch"`
	MaxIssued        uint32         `json:"max_issued_epoch"`
	Rolls            []time.Time    `json:"emergency_rolls,omitempty"`
	PackageSerial    uint64         `json:"package_serial"`
	RevocationSerial uint64         `json:"revocation_serial"`
	Revoked          []site.Revoked `json:"revoked"`
	Sites            []string       `json:"sites"`
}

func (is *Issuer) describe(ctx context.Context, q querier, r *scopeRow, now time.Time) (Scope, error) {
	cur, err := r.sched.At(now)
	if err != nil {
		return Scope{}, err
	}
	next, err := r.sched.Epoch(cur.N + 1)
	if err != nil {
		return Scope{}, err
	}
	sc := Scope{ID: r.id, Created: r.created, Policy: r.policy, Current: cur, Next: next, MaxIssued: r.maxIssued,
		Rolls: r.sched.Rolls(), PackageSerial: r.pkgSerial, RevocationSerial: r.revSerial, Revoked: []site.Revoked{}, Sites: []string{}}
	rows, err := q.QueryContext(ctx, `SELECT tech, through_epoch, revoked_us FROM site_scope_revoked WHERE scope = ? ORDER BY tech`, r.id)
	if err != nil {
		return Scope{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var rv site.Revoked
		var through, at int64
		if err := rows.Scan(&rv.Tech, &through, &at); err != nil {
			return Scope{}, err
		}
		rv.Through, rv.At = uint32(through), time.UnixMicro(at).UTC()
		sc.Revoked = append(sc.Revoked, rv)
	}
	if err := rows.Err(); err != nil {
		return Scope{}, err
	}
	srows, err := q.QueryContext(ctx, `SELECT DISTINCT site FROM site_provisioned WHERE scope = ? ORDER BY site`, r.id)
	if err != nil {
		return Scope{}, err
	}
	defer srows.Close()
	for srows.Next() {
		var s string
		if err := srows.Scan(&s); err != nil {
			return Scope{}, err
		}
		sc.Sites = append(sc.Sites, s)
	}
	return sc, srows.Err()
}

// Scope returns scope's state; ErrUnknownScope if it does not exist.
func (is *Issuer) Scope(ctx context.Context, scope string) (Scope, error) {
	r, err := loadScope(ctx, is.db, scope)
	if err != nil {
		return Scope{}, err
	}
	return is.describe(ctx, is.db, r, is.now())
}

// SetPolicy creates scope with policy p, or changes the policy of an
// existing scope for the packages provisioned from now on. Digits and
// period cannot change (ErrPolicyFixed): every credential depends on them.
func (is *Issuer) SetPolicy(ctx context.Context, scope string, p site.Policy) (Scope, error) {
	raw, err := site.MarshalPolicy(p)
	if err != nil {
		return Scope{}, err
	}
	now := is.now()
	var sc Scope
	err = is.inTx(ctx, func(tx *sql.Tx) error {
		r, err := is.ensureScope(ctx, tx, scope, now)
		if err != nil {
			return err
		}
		if r.policy.Digits != p.Digits || r.policy.Period != p.Period {
			if r.pkgSerial > 0 || r.maxIssued > 0 || r.revSerial > 0 {
				return fmt.Errorf("%w: scope %s uses %d digits every %v; create a new scope for other values",
					ErrPolicyFixed, scope, r.policy.Digits, r.policy.Period)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE site_scopes SET policy = ? WHERE scope = ?`, raw, scope); err != nil {
			return err
		}
		r.policy = p
		sc, err = is.describe(ctx, tx, r, now)
		return err
	})
	return sc, err
}

// Provisioned is a package made by Provision.
type Provisioned struct {
	Package          []byte       `json:"-"`
	Site             string       `json:"site"`
	Scope            string       `json:"scope"`
	Serial           uint64       `json:"serial"`
	Epochs           []site.Epoch `json:"epochs"`
	RevocationSerial uint64       `json:"revocation_serial"`
	KeyID            string       `json:"signing_key_id"`
}

// Provision makes the provisioning package of siteID in scope (created with
// the default policy if new): the scope keys of the current and next epoch
// sealed under passphrase (argon2id cost kdf), the policy and the current
// revocation list, signed and bound to siteID.
func (is *Issuer) Provision(ctx context.Context, scope, siteID string, passphrase []byte, kdf keys.KDFParams) (Provisioned, error) {
	if err := site.CheckName("site", siteID); err != nil {
		return Provisioned{}, err
	}
	now := is.now()
	var out Provisioned
	err := is.inTx(ctx, func(tx *sql.Tx) error {
		r, err := is.ensureScope(ctx, tx, scope, now)
		if err != nil {
			return err
		}
		cur, err := r.sched.At(now)
		if err != nil {
			return err
		}
		next, err := r.sched.Epoch(cur.N + 1)
		if err != nil {
			return err
		}
		list, err := is.currentList(ctx, tx, r, now)
		if err != nil {
			return err
		}
		epochs := []site.Epoch{cur, next}
		scopeKeys := [][]byte{ScopeKey(is.master, scope, cur.N), ScopeKey(is.master, scope, next.N)}
		serial := r.pkgSerial + 1
		pkg, err := site.BuildPackage(is.signer, site.PackageSpec{Site: siteID, Scope: scope, Policy: r.policy, Epochs: epochs,
			ScopeKeys: scopeKeys, Revocation: list, Serial: serial, IssuedAt: now}, passphrase, kdf)
		for _, k := range scopeKeys {
			clear(k)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE site_scopes SET package_serial = ?, max_issued = max(max_issued, ?) WHERE scope = ?`,
			int64(serial), int64(next.N), scope); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO site_provisioned (scope, serial, site, issued_us, epochs) VALUES (?, ?, ?, ?, ?)`,
			scope, int64(serial), siteID, now.UnixMicro(), fmt.Sprintf("%d,%d", cur.N, next.N)); err != nil {
			return err
		}
		out = Provisioned{Package: pkg, Site: siteID, Scope: scope, Serial: serial, Epochs: epochs, RevocationSerial: r.revSerial, KeyID: is.signer.KeyID}
		return nil
	})
	return out, err
}

// currentList returns the scope's latest signed revocation list, signing
// an empty serial-1 list the first time.
func (is *Issuer) currentList(ctx context.Context, tx *sql.Tx, r *scopeRow, now time.Time) ([]byte, error) {
	if r.revSerial > 0 && len(r.list) > 0 {
		return r.list, nil
	}
	return is.signList(ctx, tx, r, now, 1)
}

// signList signs revocation list number serial from the stored revocations
// whose epochs can still be open at some site, stores it and returns it.
func (is *Issuer) signList(ctx context.Context, tx *sql.Tx, r *scopeRow, now time.Time, serial uint64) ([]byte, error) {
	rows, err := tx.QueryContext(ctx, `SELECT tech, through_epoch, revoked_us FROM site_scope_revoked WHERE scope = ? ORDER BY tech`, r.id)
	if err != nil {
		return nil, err
	}
	var entries []site.Revoked
	for rows.Next() {
		var rv site.Revoked
		var through, at int64
		if err := rows.Scan(&rv.Tech, &through, &at); err != nil {
			rows.Close()
			return nil, err
		}
		rv.Through, rv.At = uint32(through), time.UnixMicro(at).UTC()
		if stillOpen(r.sched, rv.Through, now) {
			entries = append(entries, rv)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	list, err := site.BuildRevocationList(is.signer, r.id, serial, now, entries)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE site_scopes SET revocation_serial = ?, revocation_list = ? WHERE scope = ?`,
		int64(serial), list, r.id); err != nil {
		return nil, err
	}
	r.revSerial, r.list = serial, list
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
		return 0, fmt.Errorf("epoch %q is not current, next or a number", s)
	}
	return EpochSel(n), nil
}

// Credential is a technician's TOTP credential for one epoch of a scope.
type Credential struct {
	Scope string
	Tech  string
	Epoch site.Epoch
	// Key is the otpauth key (Key.URI() for an authenticator app). Its
	// Secret is the technician's seed: handle it as a secret.
	Key otp.Key
}

// Credential derives technician tech's credential in scope (created with
// the default policy if new) for the selected epoch, which must not be
// over. A revoked technician gets one only for an epoch after the revoked
// ones, and only with reinstate set.
func (is *Issuer) Credential(ctx context.Context, scope, tech string, sel EpochSel, reinstate bool) (Credential, error) {
	if err := site.CheckTechID(tech); err != nil {
		return Credential{}, err
	}
	now := is.now()
	var out Credential
	err := is.inTx(ctx, func(tx *sql.Tx) error {
		r, err := is.ensureScope(ctx, tx, scope, now)
		if err != nil {
			return err
		}
		cur, err := r.sched.At(now)
		if err != nil {
			return err
		}
		var e site.Epoch
		switch sel {
		case Current:
			e = cur
		case Next:
			e, err = r.sched.Epoch(cur.N + 1)
		default:
			if sel < 0 || sel > 1<<32-1 {
				return fmt.Errorf("siteissue: epoch selector %d is invalid", sel)
			}
			e, err = r.sched.Epoch(uint32(sel))
			if err == nil && !now.Before(e.End) {
				err = fmt.Errorf("siteissue: epoch %d ended at %s; the current epoch is %d", e.N, e.End.Format(time.RFC3339), cur.N)
			}
		}
		if err != nil {
			return err
		}
		var through int64
		err = tx.QueryRowContext(ctx, `SELECT through_epoch FROM site_scope_revoked WHERE scope = ? AND tech = ?`, scope, tech).Scan(&through)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case int64(e.N) <= through:
			return fmt.Errorf("%w: %s's credentials are revoked up to epoch %d in scope %s, and sites with the list refuse them; to reinstate, issue one for epoch %d or later with --reinstate",
				ErrRevoked, tech, through, scope, through+1)
		case !reinstate:
			return fmt.Errorf("%w: %s was revoked (up to epoch %d); issuing a credential for epoch %d reinstates them: confirm with --reinstate",
				ErrRevoked, tech, through, e.N)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE site_scopes SET max_issued = max(max_issued, ?) WHERE scope = ?`, int64(e.N), scope); err != nil {
			return err
		}
		sk := ScopeKey(is.master, scope, e.N)
		seed := site.TechnicianSeed(sk, tech)
		clear(sk)
		out = Credential{Scope: scope, Tech: tech, Epoch: e, Key: otp.Key{Params: r.policy.OTP(), Secret: seed, Issuer: CredentialIssuer(scope, e.N), Account: tech}}
		return nil
	})
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
	List    []byte   `json:"-"`
	Scope   string   `json:"scope"`
	Serial  uint64   `json:"serial"`
	Entries int      `json:"entries"`
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	// Through is the epoch up to which the added technicians are revoked.
	Through uint32 `json:"through_epoch"`
}

// Revoke revokes technicians add and lifts the revocations of undo in
// scope, and signs the next revocation list (serial + 1). A revocation
// covers every epoch for which a credential of the scope may exist (up to
// the highest epoch ever handed out). With neither add nor undo it returns
// the current list unchanged. Entries whose epochs are over at every site
// are left out of new lists.
func (is *Issuer) Revoke(ctx context.Context, scope string, add, undo []string, reason string) (RevocationResult, error) {
	for _, t := range append(append([]string(nil), add...), undo...) {
		if err := site.CheckTechID(t); err != nil {
			return RevocationResult{}, err
		}
	}
	if len(reason) > 256 || strings.ContainsAny(reason, "\x00\n\r") {
		return RevocationResult{}, errors.New("siteissue: the reason must be one line of at most 256 characters")
	}
	now := is.now()
	var out RevocationResult
	err := is.inTx(ctx, func(tx *sql.Tx) error {
		r, err := loadScope(ctx, tx, scope)
		if err != nil {
			return err
		}
		cur, err := r.sched.At(now)
		if err != nil {
			return err
		}
		through := max(r.maxIssued, cur.N)
		out = RevocationResult{Scope: scope, Through: through, Added: []string{}, Removed: []string{}}
		for _, t := range add {
			if _, err := tx.ExecContext(ctx, `INSERT INTO site_scope_revoked (scope, tech, through_epoch, revoked_us, reason) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (scope, tech) DO UPDATE SET through_epoch = max(through_epoch, excluded.through_epoch)`,
				scope, t, int64(through), now.UnixMicro(), reason); err != nil {
				return err
			}
			out.Added = append(out.Added, t)
		}
		for _, t := range undo {
			res, err := tx.ExecContext(ctx, `DELETE FROM site_scope_revoked WHERE scope = ? AND tech = ?`, scope, t)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return fmt.Errorf("siteissue: %s is not revoked in scope %s; nothing to undo", t, scope)
			}
			out.Removed = append(out.Removed, t)
		}
		if len(add)+len(undo) == 0 {
			out.List, err = is.currentList(ctx, tx, r, now)
		} else {
			out.List, err = is.signList(ctx, tx, r, now, r.revSerial+1)
		}
		if err != nil {
			return err
		}
		out.Serial = r.revSerial
		l, err := site.ReadRevocationList(out.List, is.ring(), scope)
		if err != nil {
			return err
		}
		out.Entries = len(l.Revoked)
		return nil
	})
	return out, err
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
// package provisioned after the roll. Sites that do not get one keep
// accepting their old epochs until those end.
func (is *Issuer) Roll(ctx context.Context, scope string) (RollResult, error) {
	now := is.now()
	var out RollResult
	err := is.inTx(ctx, func(tx *sql.Tx) error {
		r, err := loadScope(ctx, tx, scope)
		if err != nil {
			return err
		}
		prev, err := r.sched.At(now)
		if err != nil {
			return err
		}
		ns, err := r.sched.roll(now, r.maxIssued)
		if err != nil {
			return err
		}
		g := ns.segs[len(ns.segs)-1]
		if _, err := tx.ExecContext(ctx, `INSERT INTO site_scope_segments (scope, start_us, first_epoch) VALUES (?, ?, ?)`,
			scope, g.Start.UnixMicro(), int64(g.First)); err != nil {
			return err
		}
		r.sched = ns
		sc, err := is.describe(ctx, tx, r, now)
		if err != nil {
			return err
		}
		prev.End = now
		out = RollResult{Scope: scope, Previous: prev, Current: sc.Current, Next: sc.Next, Sites: sc.Sites}
		return nil
	})
	return out, err
}

func (is *Issuer) ring() artifact.Keys { return artifact.Keys{is.signer.Public} }
