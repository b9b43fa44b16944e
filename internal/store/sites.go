package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/sitewire"
)

// The issuing side of site verifiers (docs/sites.md). Like SyncStore, it is
// an interface of its own so that the core contract stays small: every
// store Open returns also implements SiteStore,
//
//	ss, ok := st.(store.SiteStore)
//
// and internal/siteissue, which holds the rules (epoch schedules, serials,
// what a revocation covers), is its one caller. The tables are those of
// migration 0004; they replace the DIR/sites.db of earlier versions, which
// ImportSiteScopes takes over.

// SiteScope is a scope of site verifiers: its policy, counters and latest
// signed revocation list. Nothing in it is secret (scope keys are derived
// from the master key on demand).
type SiteScope struct {
	// ID is unique across realms (a scope's keys depend on its id alone);
	// Realm is the realm whose API clients may use it.
	Realm, ID string
	CreatedAt time.Time
	// Policy is the scope's policy as site.MarshalPolicy encodes it; the
	// store keeps it as it is.
	Policy []byte
	// MaxIssued is the highest epoch ever handed out in a package or a
	// credential.
	MaxIssued                       uint32
	PackageSerial, RevocationSerial uint64
	// RevocationList is the latest signed revocation list (nil before the first).
	RevocationList []byte
	// Segments are the epoch schedule's emergency rolls, in time order
	// (the origin segment is implied).
	Segments []SiteSegment
}

// SiteSegment is an emergency roll: epoch FirstEpoch starts at Start.
type SiteSegment struct {
	Start      time.Time
	FirstEpoch uint32
}

// SiteRevocation revokes every credential of Tech in a scope up to epoch Through.
type SiteRevocation struct {
	Tech      string
	Through   uint32
	RevokedAt time.Time
	// Reason is the administrator's note; it stays on the server.
	Reason string
}

// SitePackage records that package Serial of a scope went to Site.
type SitePackage struct {
	Serial   uint64
	Site     string
	IssuedAt time.Time
	Epochs   []uint32
}

// SiteScopeRecord is a whole scope, as ImportSiteScopes takes it.
type SiteScopeRecord struct {
	Scope       SiteScope
	Revocations []SiteRevocation
	Packages    []SitePackage
}

// Limits of site records.
const (
	// MaxSitePolicyLen bounds a stored policy, in bytes.
	MaxSitePolicyLen = 4096
	// MaxSiteListLen bounds a stored revocation list: the format's own bound.
	MaxSiteListLen = sitewire.MaxRevocationListSize
	// MaxSitePackageEpochs bounds the epochs recorded for one package.
	MaxSitePackageEpochs = 16
)

// SiteStore stores the issuing state of site verifiers.
type SiteStore interface {
	// GetSiteScope returns realm's scope id with its segments. ErrNotFound
	// when there is none, or when it belongs to another realm.
	GetSiteScope(ctx context.Context, realm, id string) (SiteScope, error)
	// ListSiteRevocations returns the scope's revocations ordered by
	// technician, byte by byte (ErrNotFound as GetSiteScope).
	ListSiteRevocations(ctx context.Context, realm, scope string) ([]SiteRevocation, error)
	// ListSiteNames returns the sites ever provisioned in the scope, each
	// once, in byte order (ErrNotFound as GetSiteScope).
	ListSiteNames(ctx context.Context, realm, scope string) ([]string, error)
	// SiteScopeTx runs fn in one transaction with the scope's row locked:
	// everything fn does through tx commits together or not at all, and
	// concurrent transactions of the same scope (in this process or other
	// replicas) run one after the other. When the scope does not exist and
	// create is not nil, *create is inserted first (with realm and id).
	// It returns ErrNotFound when the scope does not exist (or belongs to
	// another realm) and create is nil, ErrExists when create is set and
	// another realm holds the id, and otherwise fn's error, unchanged. fn
	// may be run again when the transaction lost a race (another audit
	// appender), so it must not act outside tx.
	SiteScopeTx(ctx context.Context, realm, id string, create *SiteScope, fn func(tx SiteTx) error) error
	// ImportSiteScopes stores whole scopes for realm in one transaction,
	// with the audit entry e appended in it when at least one scope was new.
	// A scope that is already stored exactly as given (the same realm,
	// creation time, counters and segments: a second run of the same
	// import) is skipped; one that differs is ErrExists and nothing is
	// stored. It returns the ids of the scopes it stored.
	ImportSiteScopes(ctx context.Context, realm string, recs []SiteScopeRecord, e eventlog.Entry) ([]string, error)
}

// SiteTx is what fn of SiteScopeTx may do. Every method works on the
// locked scope.
type SiteTx interface {
	// Scope is the scope's row as locked (with any change SaveScope made).
	Scope() SiteScope
	// Created reports whether this transaction created the scope.
	Created() bool
	// SaveScope stores s's Policy, MaxIssued, PackageSerial,
	// RevocationSerial and RevocationList (the other fields never change).
	SaveScope(s SiteScope) error
	// AddSegment records an emergency roll (ErrExists at the same instant).
	AddSegment(g SiteSegment) error
	// Revocations returns the scope's revocations ordered by technician.
	Revocations() ([]SiteRevocation, error)
	// Revocation returns tech's revocation (found false when none).
	Revocation(tech string) (SiteRevocation, bool, error)
	// PutRevocation inserts or replaces tech's revocation.
	PutRevocation(r SiteRevocation) error
	// DeleteRevocation lifts tech's revocation and reports whether there was one.
	DeleteRevocation(tech string) (bool, error)
	// AddPackage records a package (ErrExists for a serial already used).
	AddPackage(p SitePackage) error
	// Sites returns ListSiteNames' answer inside the transaction.
	Sites() ([]string, error)
	// AppendAudit chains entries after the audit log's last one and returns them stored.
	AppendAudit(entries ...eventlog.Entry) ([]eventlog.Entry, error)
}

var _ SiteStore = (*sqlStore)(nil)

func checkSiteScope(sc *SiteScope) error {
	if err := first(checkID("realm ID", sc.Realm), checkID("scope ID", sc.ID)); err != nil {
		return err
	}
	if len(sc.Policy) == 0 || len(sc.Policy) > MaxSitePolicyLen {
		return invalid("a scope's policy must be 1 to %d bytes", MaxSitePolicyLen)
	}
	if len(sc.RevocationList) > MaxSiteListLen || sc.PackageSerial > 1<<63-1 || sc.RevocationSerial > 1<<63-1 {
		return invalid("scope %q: revocation list of %d bytes or serials out of range", ident.Clip(sc.ID), len(sc.RevocationList))
	}
	return nil
}

func checkSiteRevocation(r SiteRevocation) error {
	if err := first(checkID("technician ID", r.Tech), checkText("revocation reason", r.Reason)); err != nil {
		return err
	}
	return nil
}

func checkSitePackage(p SitePackage) error {
	if err := checkID("site ID", p.Site); err != nil {
		return err
	}
	if p.Serial == 0 || p.Serial > 1<<63-1 || len(p.Epochs) == 0 || len(p.Epochs) > MaxSitePackageEpochs {
		return invalid("package serial %d with %d epochs", p.Serial, len(p.Epochs))
	}
	return nil
}

const siteScopeColumns = `realm, scope, created_us, policy, max_issued, package_serial, revocation_serial, revocation_list`

func scanSiteScope(r row) (SiteScope, error) {
	var sc SiteScope
	var policy string
	var created, maxIssued, pkg, rev int64
	if err := r.Scan(&sc.Realm, &sc.ID, &created, &policy, &maxIssued, &pkg, &rev, &sc.RevocationList); err != nil {
		return SiteScope{}, err
	}
	sc.CreatedAt, sc.Policy, sc.MaxIssued = fromMicros(created), []byte(policy), uint32(maxIssued)
	sc.PackageSerial, sc.RevocationSerial = uint64(pkg), uint64(rev)
	return sc, nil
}

// loadSiteScope reads realm's scope with its segments through q.
func loadSiteScope(ctx context.Context, s *sqlStore, q querier, realm, id string) (SiteScope, error) {
	sc, err := scanSiteScope(q.queryRow(ctx, `SELECT `+siteScopeColumns+` FROM site_scopes WHERE scope = $1`, id))
	if err == nil && sc.Realm != realm {
		return SiteScope{}, fmt.Errorf("%w: scope %q in realm %q", ErrNotFound, id, realm)
	}
	if err != nil {
		return SiteScope{}, s.noRows(err, "scope %q in realm %q", id, realm)
	}
	rs, err := q.query(ctx, `SELECT start_us, first_epoch FROM site_scope_segments WHERE scope = $1 ORDER BY start_us`, id)
	segs, err := collect(s, rs, err, func(r row) (SiteSegment, error) {
		var start, firstEpoch int64
		err := r.Scan(&start, &firstEpoch)
		return SiteSegment{Start: fromMicros(start), FirstEpoch: uint32(firstEpoch)}, err
	})
	sc.Segments = segs
	return sc, err
}

func (s *sqlStore) GetSiteScope(ctx context.Context, realm, id string) (SiteScope, error) {
	return loadSiteScope(ctx, s, s.e.reader(), realm, id)
}

func (s *sqlStore) ListSiteRevocations(ctx context.Context, realm, scope string) ([]SiteRevocation, error) {
	if _, err := s.GetSiteScope(ctx, realm, scope); err != nil {
		return nil, err
	}
	return siteRevocations(ctx, s, s.e.reader(), scope)
}

func (s *sqlStore) ListSiteNames(ctx context.Context, realm, scope string) ([]string, error) {
	if _, err := s.GetSiteScope(ctx, realm, scope); err != nil {
		return nil, err
	}
	return siteNames(ctx, s, s.e.reader(), scope)
}

// siteRevocations and siteNames sort in Go: ORDER BY follows the
// database's collation, which is not byte order on PostgreSQL, and
// revocation lists must be sorted byte by byte.
func siteRevocations(ctx context.Context, s *sqlStore, q querier, scope string) ([]SiteRevocation, error) {
	rs, err := q.query(ctx, `SELECT tech, through_epoch, revoked_us, reason FROM site_revocations WHERE scope = $1`, scope)
	out, err := collect(s, rs, err, scanSiteRevocation)
	slices.SortFunc(out, func(a, b SiteRevocation) int { return strings.Compare(a.Tech, b.Tech) })
	return out, err
}

func scanSiteRevocation(r row) (SiteRevocation, error) {
	var rv SiteRevocation
	var through, at int64
	err := r.Scan(&rv.Tech, &through, &at, &rv.Reason)
	rv.Through, rv.RevokedAt = uint32(through), fromMicros(at)
	return rv, err
}

func siteNames(ctx context.Context, s *sqlStore, q querier, scope string) ([]string, error) {
	rs, err := q.query(ctx, `SELECT DISTINCT site FROM site_packages WHERE scope = $1`, scope)
	out, err := collect(s, rs, err, func(r row) (string, error) {
		var site string
		return site, r.Scan(&site)
	})
	slices.Sort(out)
	return out, err
}

// chainLock serialises, within a process on PostgreSQL, the transactions
// that append to the audit chain (syncs and site transactions): two at once
// would only collide on its sequence number and retry. (On SQLite the
// writer goroutine already serialises them.) It returns the unlock function.
func (s *sqlStore) chainLock() func() {
	if s.e.name() == "sqlite" {
		return func() {}
	}
	mu, _ := syncLocks.LoadOrStore(s, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}

// errAbort ends a transaction whose callback returned an error of its own
// (a rule of the caller, not a database failure). It wraps ErrInvalid, an
// error the store expects, so that SQLite rolls back that transaction's
// savepoint alone instead of failing every write committed with it, and so
// that inTx does not retry it. The caller's error is returned instead.
var errAbort = fmt.Errorf("%w: transaction aborted by its caller", ErrInvalid)

// abortableTx runs body in one transaction (inTx, retried on a lost audit
// race). body ends the transaction with abort(err) for an error of the
// caller's own (a rule, not the database): the transaction rolls back and
// abortableTx returns err itself. Any other error of body fails (or, for an
// audit race, retries) the transaction as inTx does.
func (s *sqlStore) abortableTx(ctx context.Context, body func(q querier, abort func(error) error) error) error {
	var abortErr error
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		abortErr = nil
		return body(q, func(err error) error { abortErr = err; return errAbort })
	})
	if errors.Is(err, errAbort) {
		return abortErr
	}
	return err
}

func (s *sqlStore) SiteScopeTx(ctx context.Context, realm, id string, create *SiteScope, fn func(tx SiteTx) error) error {
	if create != nil {
		c := *create
		c.Realm, c.ID = realm, id
		if err := checkSiteScope(&c); err != nil {
			return err
		}
		create = &c
	}
	defer s.chainLock()()
	return s.abortableTx(ctx, func(q querier, abort func(error) error) error {
		tx := &siteTx{ctx: ctx, s: s, q: q}
		if create != nil {
			n, err := q.exec(ctx, `INSERT INTO site_scopes (`+siteScopeColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (scope) DO NOTHING`, realm, id, s.stamp(create.CreatedAt), string(create.Policy), int64(create.MaxIssued),
				int64(create.PackageSerial), int64(create.RevocationSerial), nullBytes(create.RevocationList))
			if err != nil {
				return err
			}
			tx.created = n > 0
		}
		// A write that changes nothing takes the row lock (PostgreSQL,
		// CockroachDB); SQLite's write lock is already held.
		if _, err := q.exec(ctx, `UPDATE site_scopes SET max_issued = max_issued WHERE scope = $1`, id); err != nil {
			return err
		}
		sc, err := loadSiteScope(ctx, s, q, realm, id)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				if create != nil { // the id exists, in another realm
					err = fmt.Errorf("%w: scope id %q is taken by another realm; choose another id", ErrExists, id)
				}
				return abort(err)
			}
			return err
		}
		tx.sc = sc
		if err := fn(tx); err != nil {
			if tx.failed || tx.raced {
				return err // the database's own failure, or a lost race to retry
			}
			return abort(err)
		}
		return nil
	})
}

type siteTx struct {
	ctx     context.Context
	s       *sqlStore
	q       querier
	sc      SiteScope
	created bool
	// failed is set when a statement failed for a reason other than the
	// data (a database failure): the whole transaction must then fail.
	failed bool
	// raced is set when AppendAudit lost the audit sequence number to
	// another appender: the transaction is retried.
	raced bool
}

// check notes a statement's failure and returns it classified.
func (t *siteTx) check(err error) error {
	if err == nil {
		return nil
	}
	err = classify(t.s.e, err)
	if !expected(err) {
		t.failed = true
	}
	return err
}

func (t *siteTx) Scope() SiteScope { return t.sc }
func (t *siteTx) Created() bool    { return t.created }

func (t *siteTx) SaveScope(sc SiteScope) error {
	sc.Realm, sc.ID = t.sc.Realm, t.sc.ID
	if err := checkSiteScope(&sc); err != nil {
		return err
	}
	_, err := t.q.exec(t.ctx, `UPDATE site_scopes SET policy = $1, max_issued = $2, package_serial = $3, revocation_serial = $4, revocation_list = $5
		WHERE scope = $6`, string(sc.Policy), int64(sc.MaxIssued), int64(sc.PackageSerial), int64(sc.RevocationSerial), nullBytes(sc.RevocationList), t.sc.ID)
	if err != nil {
		return t.check(err)
	}
	t.sc.Policy, t.sc.MaxIssued, t.sc.PackageSerial, t.sc.RevocationSerial, t.sc.RevocationList =
		sc.Policy, sc.MaxIssued, sc.PackageSerial, sc.RevocationSerial, sc.RevocationList
	return nil
}

func (t *siteTx) AddSegment(g SiteSegment) error {
	if g.Start.IsZero() {
		return invalid("a segment needs its start")
	}
	_, err := t.q.exec(t.ctx, `INSERT INTO site_scope_segments (scope, start_us, first_epoch) VALUES ($1, $2, $3)`,
		t.sc.ID, micros(g.Start), int64(g.FirstEpoch))
	if err != nil {
		return t.check(err)
	}
	t.sc.Segments = append(t.sc.Segments, SiteSegment{Start: fromMicros(micros(g.Start)), FirstEpoch: g.FirstEpoch})
	return nil
}

func (t *siteTx) Revocations() ([]SiteRevocation, error) {
	out, err := siteRevocations(t.ctx, t.s, t.q, t.sc.ID)
	return out, t.check(err)
}

func (t *siteTx) Revocation(tech string) (SiteRevocation, bool, error) {
	rv, err := scanSiteRevocation(t.q.queryRow(t.ctx, `SELECT tech, through_epoch, revoked_us, reason FROM site_revocations
		WHERE scope = $1 AND tech = $2`, t.sc.ID, tech))
	if errors.Is(err, sql.ErrNoRows) {
		return SiteRevocation{}, false, nil
	}
	return rv, err == nil, t.check(err)
}

func (t *siteTx) PutRevocation(r SiteRevocation) error {
	if err := checkSiteRevocation(r); err != nil {
		return err
	}
	_, err := t.q.exec(t.ctx, `INSERT INTO site_revocations (scope, tech, through_epoch, revoked_us, reason) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (scope, tech) DO UPDATE SET through_epoch = excluded.through_epoch, revoked_us = excluded.revoked_us, reason = excluded.reason`,
		t.sc.ID, r.Tech, int64(r.Through), t.s.stamp(r.RevokedAt), r.Reason)
	return t.check(err)
}

func (t *siteTx) DeleteRevocation(tech string) (bool, error) {
	n, err := t.q.exec(t.ctx, `DELETE FROM site_revocations WHERE scope = $1 AND tech = $2`, t.sc.ID, tech)
	return n > 0, t.check(err)
}

func (t *siteTx) AddPackage(p SitePackage) error {
	if err := checkSitePackage(p); err != nil {
		return err
	}
	_, err := t.q.exec(t.ctx, `INSERT INTO site_packages (scope, serial, site, issued_us, epochs) VALUES ($1, $2, $3, $4, $5)`,
		t.sc.ID, int64(p.Serial), p.Site, t.s.stamp(p.IssuedAt), joinEpochs(p.Epochs))
	return t.check(err)
}

func (t *siteTx) Sites() ([]string, error) {
	out, err := siteNames(t.ctx, t.s, t.q, t.sc.ID)
	return out, t.check(err)
}

func (t *siteTx) AppendAudit(entries ...eventlog.Entry) ([]eventlog.Entry, error) {
	out, err := appendAuditIn(t.ctx, t.s, t.q, entries)
	if err = t.check(err); errors.Is(err, ErrExists) {
		t.raced = true
	}
	return out, err
}

// joinEpochs and splitEpochs store a package's epoch numbers as "2,3"
// (the form sites.db used).
func joinEpochs(es []uint32) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = strconv.FormatUint(uint64(e), 10)
	}
	return strings.Join(parts, ",")
}

func (s *sqlStore) ImportSiteScopes(ctx context.Context, realm string, recs []SiteScopeRecord, e eventlog.Entry) ([]string, error) {
	for i := range recs {
		recs[i].Scope.Realm = realm
		if err := checkSiteScope(&recs[i].Scope); err != nil {
			return nil, err
		}
		for _, r := range recs[i].Revocations {
			if err := checkSiteRevocation(r); err != nil {
				return nil, err
			}
		}
		for _, p := range recs[i].Packages {
			if err := checkSitePackage(p); err != nil {
				return nil, err
			}
		}
	}
	defer s.chainLock()()
	var imported []string
	err := s.abortableTx(ctx, func(q querier, abort func(error) error) error {
		imported = nil
		for _, rec := range recs {
			sc := rec.Scope
			n, err := q.exec(ctx, `INSERT INTO site_scopes (`+siteScopeColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (scope) DO NOTHING`, realm, sc.ID, micros(sc.CreatedAt), string(sc.Policy), int64(sc.MaxIssued),
				int64(sc.PackageSerial), int64(sc.RevocationSerial), nullBytes(sc.RevocationList))
			if err != nil {
				return err
			}
			if n == 0 {
				have, err := scanSiteScope(q.queryRow(ctx, `SELECT `+siteScopeColumns+` FROM site_scopes WHERE scope = $1`, sc.ID))
				if err != nil {
					return err
				}
				if have.Realm != realm || !have.CreatedAt.Equal(fromMicros(micros(sc.CreatedAt))) || have.MaxIssued != sc.MaxIssued ||
					have.PackageSerial != sc.PackageSerial || have.RevocationSerial != sc.RevocationSerial {
					return abort(fmt.Errorf("%w: scope %q is already stored with other values (created, changed since, or in another realm); nothing was imported", ErrExists, sc.ID))
				}
				continue // imported before
			}
			for _, g := range sc.Segments {
				if _, err := q.exec(ctx, `INSERT INTO site_scope_segments (scope, start_us, first_epoch) VALUES ($1, $2, $3)`,
					sc.ID, micros(g.Start), int64(g.FirstEpoch)); err != nil {
					return err
				}
			}
			for _, r := range rec.Revocations {
				if _, err := q.exec(ctx, `INSERT INTO site_revocations (scope, tech, through_epoch, revoked_us, reason) VALUES ($1, $2, $3, $4, $5)`,
					sc.ID, r.Tech, int64(r.Through), micros(r.RevokedAt), r.Reason); err != nil {
					return err
				}
			}
			for _, p := range rec.Packages {
				if _, err := q.exec(ctx, `INSERT INTO site_packages (scope, serial, site, issued_us, epochs) VALUES ($1, $2, $3, $4, $5)`,
					sc.ID, int64(p.Serial), p.Site, micros(p.IssuedAt), joinEpochs(p.Epochs)); err != nil {
					return err
				}
			}
			imported = append(imported, sc.ID)
		}
		if len(imported) == 0 {
			return nil
		}
		_, err := appendAuditIn(ctx, s, q, []eventlog.Entry{e})
		return err
	})
	if err != nil {
		return nil, err
	}
	return imported, nil
}
