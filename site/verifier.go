package site

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/clockguard"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/sitewire"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
	"github.com/outpost-auth/outpost/otp"
)

// DatabaseFile is the site database inside a site data directory; the
// site's log key is devicelog.IdentityFile next to it.
const DatabaseFile = "site.db"

// Log entry kinds a site writes. Data never holds a code or a key.
const (
	KindInit       = "site.init"
	KindPackage    = "site.package"
	KindRevocation = "site.revocation"
	KindVerifyOK   = "site.verify.ok"
	KindRefused    = "site.verify.refused"
	KindLocked     = "site.verify.locked"
)

// Site is an initialised site data directory. Its methods are safe for
// concurrent use, also by several processes on the same directory (SQLite
// serialises the writers).
type Site struct {
	db  *sql.DB
	id  *devicelog.Identity
	dir string
	// Now is the site's clock; time.Now when nil.
	Now func() time.Time
}

// PassphraseFunc supplies a package's passphrase when one is needed.
type PassphraseFunc func() ([]byte, error)

// InitConfig is what Init needs.
type InitConfig struct {
	// SiteID is this site's id: the package must be bound to it.
	SiteID string
	// ServerKey is the server's artifact signing key (outpost keys export-public).
	ServerKey ed25519.PublicKey
	// Package is the provisioning package file; Passphrase opens its keys.
	Package    []byte
	Passphrase []byte
	// Now is the site's clock; time.Now when nil.
	Now func() time.Time
}

const schema = `
CREATE TABLE IF NOT EXISTS site_config (
	id                INTEGER PRIMARY KEY CHECK (id = 1),
	site_id           TEXT    NOT NULL,
	scope             TEXT    NOT NULL,
	server_key        BLOB    NOT NULL,
	device_key_id     TEXT    NOT NULL,
	policy            TEXT    NOT NULL,
	package_serial    INTEGER NOT NULL,
	revocation_serial INTEGER NOT NULL,
	clock_hwm_us      INTEGER NOT NULL,
	budget_tat_us     INTEGER NOT NULL,
	installed_us      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS site_epochs (
	epoch     INTEGER PRIMARY KEY,
	start_us  INTEGER NOT NULL,
	end_us    INTEGER NOT NULL,
	scope_key BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS site_revoked (
	tech          TEXT    PRIMARY KEY,
	through_epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS site_techs (
	tech            TEXT    PRIMARY KEY,
	used_until      INTEGER NOT NULL DEFAULT 0,
	failures        INTEGER NOT NULL DEFAULT 0,
	last_failure_us INTEGER NOT NULL DEFAULT 0
);`

func openDB(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sqlitedb.Open(path)
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("site: creating tables in %s: %w", path, err)
	}
	if err := devicelog.Migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// config is the site_config row.
type config struct {
	siteID, scope   string
	serverKey       ed25519.PublicKey
	deviceKeyID     string
	policy          Policy
	pkgSerial       uint64
	revSerial       uint64
	clockHWM        time.Time
	budgetTAT       time.Time
	installed       time.Time
	rawPolicy, rawK []byte
}

func loadConfig(ctx context.Context, q devicelog.Queryer) (config, error) {
	var c config
	var pkg, rev, hwm, tat, inst int64
	err := q.QueryRowContext(ctx, `SELECT site_id, scope, server_key, device_key_id, policy, package_serial,
		revocation_serial, clock_hwm_us, budget_tat_us, installed_us FROM site_config WHERE id = 1`).
		Scan(&c.siteID, &c.scope, &c.rawK, &c.deviceKeyID, &c.rawPolicy, &pkg, &rev, &hwm, &tat, &inst)
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotInitialised
	}
	if err != nil {
		return c, fmt.Errorf("site: reading the site configuration: %w", err)
	}
	if c.policy, err = UnmarshalPolicy(c.rawPolicy); err != nil || len(c.rawK) != ed25519.PublicKeySize || pkg < 0 || rev < 0 {
		return c, fmt.Errorf("%w: the site configuration does not decode", ErrCorrupt)
	}
	c.serverKey = ed25519.PublicKey(c.rawK)
	c.pkgSerial, c.revSerial = uint64(pkg), uint64(rev)
	c.clockHWM, c.budgetTAT, c.installed = time.UnixMicro(hwm).UTC(), time.UnixMicro(tat).UTC(), time.UnixMicro(inst).UTC()
	return c, nil
}

type epochKey struct {
	Epoch
	key []byte
}

func loadEpochs(ctx context.Context, q devicelog.Queryer) ([]epochKey, error) {
	rows, err := q.QueryContext(ctx, `SELECT epoch, start_us, end_us, scope_key FROM site_epochs ORDER BY epoch`)
	if err != nil {
		return nil, fmt.Errorf("site: reading epochs: %w", err)
	}
	defer rows.Close()
	var out []epochKey
	for rows.Next() {
		var n, s, e int64
		var k []byte
		if err := rows.Scan(&n, &s, &e, &k); err != nil {
			return nil, fmt.Errorf("site: reading epochs: %w", err)
		}
		if len(k) != ScopeKeySize || n < 0 || n > 1<<32-1 || len(out) >= sitewire.MaxEpochs {
			return nil, fmt.Errorf("%w: a stored epoch key is malformed", ErrCorrupt)
		}
		out = append(out, epochKey{Epoch{uint32(n), time.UnixMicro(s).UTC(), time.UnixMicro(e).UTC()}, k})
	}
	return out, rows.Err()
}

// Init installs the first provisioning package in dir (created with mode
// 0700 if needed), after checking it completely: signed by cfg.ServerKey,
// bound to cfg.SiteID, not over at the site's time, and decryptable with
// cfg.Passphrase. Nothing is written unless all of that holds. It creates
// the site's log key (devicelog.LoadOrCreateIdentity) and logs "site.init".
func Init(ctx context.Context, dir string, cfg InitConfig) (*Site, error) {
	if err := CheckName("site", cfg.SiteID); err != nil {
		return nil, err
	}
	if len(cfg.ServerKey) != ed25519.PublicKeySize {
		return nil, errors.New("site: the server's public key is missing or not an Ed25519 key")
	}
	now := utcNow(cfg.Now)
	path := filepath.Join(dir, DatabaseFile)
	if _, err := os.Stat(path); err == nil {
		db, err := openDB(ctx, path)
		if err != nil {
			return nil, err
		}
		_, err = loadConfig(ctx, db)
		db.Close()
		if !errors.Is(err, ErrNotInitialised) {
			return nil, fmt.Errorf("%w: %s holds a site; install newer files with 'outpost site update'", ErrAlreadyInitialised, dir)
		}
	}
	pkg, err := readPackage(cfg.Package, artifact.Keys{cfg.ServerKey}, cfg.SiteID, now)
	if err != nil {
		return nil, err
	}
	scopeKeys, err := pkg.OpenKeys(cfg.Passphrase)
	if err != nil {
		return nil, err
	}
	id, err := devicelog.LoadOrCreateIdentity(dir)
	if err != nil {
		return nil, err
	}
	db, err := openDB(ctx, path)
	if err != nil {
		return nil, err
	}
	s := &Site{db: db, id: id, dir: dir, Now: cfg.Now}
	rawPolicy, err := MarshalPolicy(pkg.Policy)
	if err != nil {
		db.Close()
		return nil, err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := loadConfig(ctx, tx); !errors.Is(err, ErrNotInitialised) {
			return fmt.Errorf("%w: another process initialised %s", ErrAlreadyInitialised, dir)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO site_config (id, site_id, scope, server_key, device_key_id, policy,
			package_serial, revocation_serial, clock_hwm_us, budget_tat_us, installed_us) VALUES (1, ?, ?, ?, ?, ?, ?, 0, ?, 0, ?)`,
			cfg.SiteID, pkg.Scope, []byte(cfg.ServerKey), id.KeyID, rawPolicy, int64(pkg.Header.Serial), now.UnixMicro(), now.UnixMicro()); err != nil {
			return err
		}
		if err := installEpochs(ctx, tx, pkg.Epochs, scopeKeys); err != nil {
			return err
		}
		if err := installRevocation(ctx, tx, pkg.Revocation); err != nil {
			return err
		}
		_, err := s.log(ctx, tx, now, KindInit, cfg.SiteID, "", map[string]any{
			"scope": pkg.Scope, "package_serial": pkg.Header.Serial, "epochs": epochNumbers(pkg.Epochs),
			"revocation_serial": pkg.Revocation.Serial, "server_key": keys.KeyID(cfg.ServerKey), "device_key": id.KeyID})
		return err
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Open opens an initialised site data directory.
func Open(ctx context.Context, dir string) (*Site, error) {
	path := filepath.Join(dir, DatabaseFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s; run 'outpost site init --data %s ...' first", ErrNotInitialised, dir, DatabaseFile, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, devicelog.IdentityFile)); err != nil {
		return nil, fmt.Errorf("%w: the site's log key %s is missing (%v)", ErrCorrupt, devicelog.IdentityFile, err)
	}
	id, err := devicelog.LoadOrCreateIdentity(dir)
	if err != nil {
		return nil, err
	}
	db, err := openDB(ctx, path)
	if err != nil {
		return nil, err
	}
	c, err := loadConfig(ctx, db)
	if err == nil && c.deviceKeyID != id.KeyID {
		err = fmt.Errorf("%w: %s is key %s, but this site's log was started with key %s", ErrCorrupt, devicelog.IdentityFile, id.KeyID, c.deviceKeyID)
	}
	if errors.Is(err, ErrNotInitialised) {
		err = fmt.Errorf("%w: %s has no installed package; run 'outpost site init --data %s ...'", ErrNotInitialised, dir, dir)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Site{db: db, id: id, dir: dir}, nil
}

// Close closes the database.
func (s *Site) Close() error { return s.db.Close() }

// DevicePublicKey returns the public half of the site's log key: what the
// server checks the site's log against.
func (s *Site) DevicePublicKey() ed25519.PublicKey { return s.id.Public }

// utcNow reads now, or clock.System when now is nil, in UTC.
func utcNow(now func() time.Time) time.Time { return clock.Or(now)().UTC() }

func (s *Site) now() time.Time { return utcNow(s.Now) }

func (s *Site) inTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("site: %w", err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("site: committing: %w", err)
	}
	return nil
}

// log appends one entry to the site's log inside tx. data never holds a secret.
func (s *Site) log(ctx context.Context, tx *sql.Tx, now time.Time, kind, actor, subject string, data any) (eventlog.Entry, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return eventlog.Entry{}, fmt.Errorf("site: encoding a log entry: %w", err)
	}
	return devicelog.Append(ctx, tx, s.id.Private, eventlog.Entry{Time: now, Kind: kind, Actor: actor, Subject: subject, Data: b})
}

func installEpochs(ctx context.Context, tx *sql.Tx, es []Epoch, scopeKeys [][]byte) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM site_epochs`); err != nil {
		return err
	}
	for i, e := range es {
		if _, err := tx.ExecContext(ctx, `INSERT INTO site_epochs (epoch, start_us, end_us, scope_key) VALUES (?, ?, ?, ?)`,
			int64(e.N), e.Start.UnixMicro(), e.End.UnixMicro(), scopeKeys[i]); err != nil {
			return err
		}
	}
	return nil
}

func installRevocation(ctx context.Context, tx *sql.Tx, l *sitewire.RevocationList) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM site_revoked`); err != nil {
		return err
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO site_revoked (tech, through_epoch) VALUES (?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, r := range l.Revoked {
		if _, err := stmt.ExecContext(ctx, r.Tech, int64(r.Through)); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `UPDATE site_config SET revocation_serial = ? WHERE id = 1`, int64(l.Serial))
	return err
}

func epochNumbers(es []Epoch) []uint32 {
	out := make([]uint32, len(es))
	for i, e := range es {
		out[i] = e.N
	}
	return out
}

// Reasons a Decision gives.
const (
	ReasonOK            = "ok"
	ReasonWrongCode     = "wrong-code"
	ReasonMalformedCode = "malformed-code"
	ReasonReplayed      = "replayed"
	ReasonRevoked       = "revoked"
	ReasonLocked        = "locked"
	ReasonSiteLocked    = "site-locked"
	ReasonClockBack     = "clock-back"
	ReasonNoEpoch       = "no-epoch"
)

// Decision is the outcome of one Verify, accepted or not. It is also what
// the log entry of the decision records (without the code).
type Decision struct {
	OK     bool      `json:"ok"`
	Reason string    `json:"reason"`
	Tech   string    `json:"tech"`
	Time   time.Time `json:"time"` // the site's time
	// Epoch and Step are the matching epoch and TOTP step (accepted or replayed codes).
	Epoch uint32 `json:"epoch,omitempty"`
	Step  uint64 `json:"step,omitempty"`
	// Failures is the technician's count of consecutive failed codes after this decision.
	Failures int `json:"failures"`
	// RetryAt, when set, is the earliest time the next attempt will be checked.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// LogSeq is the sequence number of the decision's log entry.
	LogSeq uint64 `json:"log_seq"`
}

// Verify checks code for technician tech at the site's time and records the
// decision. It returns the Decision and nil when the code is accepted, or
// the Decision and an error wrapping ErrRefused or ErrLocked (see the
// package comment for the order of the checks). An invalid technician id
// (CheckTechID) is refused with ErrBadID before anything is recorded.
//
// Only a wrong or malformed code counts as a failure (for the technician and
// for the site-wide budget); a replayed code, a revoked technician, a
// locked-out attempt, a clock set back or a site with no open epoch is
// refused and logged without changing any counter.
func (s *Site) Verify(ctx context.Context, tech, code string) (Decision, error) {
	if err := CheckTechID(tech); err != nil {
		return Decision{}, err
	}
	now := s.now().Truncate(time.Microsecond) // the resolution the log keeps
	d := Decision{Tech: tech, Time: now}
	var refusal error
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		refusal, err = s.decide(ctx, tx, &d, code, now)
		return err
	})
	if err != nil {
		return Decision{}, err
	}
	return d, refusal
}

// decide takes the decision of one Verify inside tx, in the order of the
// package comment: each step either refuses (recording the refusal) or
// hands on to the next.
func (s *Site) decide(ctx context.Context, tx *sql.Tx, d *Decision, code string, now time.Time) (refusal error, err error) {
	v := &deciding{s: s, ctx: ctx, tx: tx, d: d, now: now, kind: KindRefused, logData: map[string]any{}}
	if v.c, err = loadConfig(ctx, tx); err != nil {
		return nil, err
	}
	err = tx.QueryRowContext(ctx, `SELECT used_until, failures, last_failure_us FROM site_techs WHERE tech = ?`, d.Tech).
		Scan(&v.used, &d.Failures, &v.lastFail)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("site: reading technician state: %w", err)
	}
	if refusal, err := v.checkClock(); refusal != nil || err != nil {
		return refusal, err
	}
	if refusal, err := v.checkBudgets(); refusal != nil || err != nil {
		return refusal, err
	}
	usable, refusal, err := v.usableEpochs()
	if refusal != nil || err != nil {
		return refusal, err
	}
	// 4. The code, against every usable epoch (all are computed).
	malformed := otp.CheckCode(code, v.c.policy.Digits) != nil
	var matched *epochKey
	var step uint64
	if !malformed {
		for i := range usable {
			st, err := CheckCode(usable[i].key, v.c.policy, d.Tech, code, now)
			if err == nil && matched == nil {
				matched, step = &usable[i], st
			}
		}
	}
	if matched != nil {
		return v.accept(matched, step)
	}
	return v.failure(malformed)
}

// deciding is one decision as it forms, inside its transaction: the site's
// configuration, the technician's state, and the log entry it will write.
type deciding struct {
	s        *Site
	ctx      context.Context
	tx       *sql.Tx
	c        config
	d        *Decision
	now      time.Time
	used     int64 // the technician's used_until: (last accepted step + 1) × period, in seconds
	lastFail int64 // Unix µs of the technician's latest failure
	kind     string
	logData  map[string]any
}

// record appends the decision to the site's log.
func (v *deciding) record() error {
	d := v.d
	v.logData["reason"] = d.Reason
	if d.OK || d.Reason == ReasonReplayed {
		v.logData["epoch"], v.logData["step"] = d.Epoch, d.Step
	}
	v.logData["failures"] = d.Failures
	if !d.RetryAt.IsZero() {
		v.logData["retry_at"] = d.RetryAt
	}
	e, err := v.s.log(v.ctx, v.tx, v.now, v.kind, v.c.siteID, d.Tech, v.logData)
	d.LogSeq = e.Seq
	return err
}

// refuse records a refusal for reason and returns it: wrapping ErrRefused
// and sentinel, or ErrLocked when sentinel is nil.
func (v *deciding) refuse(reason string, sentinel error, format string, a ...any) (error, error) {
	v.d.Reason = reason
	if sentinel == nil {
		v.kind = KindLocked
		return fmt.Errorf("%w: "+format, append([]any{ErrLocked}, a...)...), v.record()
	}
	return fmt.Errorf("%w: %w: "+format, append([]any{ErrRefused, sentinel}, a...)...), v.record()
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// checkClock is step 1: never go back past the high-water mark (beyond the
// tolerance, internal/clockguard); raise it.
func (v *deciding) checkClock() (error, error) {
	p := v.c.policy
	mark, ok := clockguard.Check(v.now, v.c.clockHWM, p.ClockTolerance)
	if !ok {
		v.logData["high_water"] = v.c.clockHWM
		return v.refuse(ReasonClockBack, ErrClockBack, "the site's time %s is more than %v behind %s, a time it has already seen; set the clock right",
			stamp(v.now), p.ClockTolerance, stamp(v.c.clockHWM))
	}
	if mark.After(v.c.clockHWM) {
		if _, err := v.tx.ExecContext(v.ctx, `UPDATE site_config SET clock_hwm_us = ? WHERE id = 1`, mark.UnixMicro()); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// checkBudgets is step 2: the site-wide failure budget, then the
// technician's lockout.
func (v *deciding) checkBudgets() (error, error) {
	p, d := v.c.policy, v.d
	if at := p.siteRetryAt(v.c.budgetTAT); at.After(v.now) {
		d.RetryAt = at
		return v.refuse(ReasonSiteLocked, nil, "this site has seen too many failed codes (%d per hour allowed, all technicians together); next attempt at %s",
			p.SiteFailuresPerHour, stamp(at))
	}
	if at := p.RetryAt(d.Failures, time.UnixMicro(v.lastFail)); at.After(v.now) {
		d.RetryAt = at
		return v.refuse(ReasonLocked, nil, "%s has %d failed code(s) in a row; next attempt at %s", d.Tech, d.Failures, stamp(at))
	}
	return nil, nil
}

// usableEpochs is step 3: the open epochs, minus those revoked for the
// technician.
func (v *deciding) usableEpochs() ([]epochKey, error, error) {
	p, d := v.c.policy, v.d
	eks, err := loadEpochs(v.ctx, v.tx)
	if err != nil {
		return nil, nil, err
	}
	var through int64 = -1
	err = v.tx.QueryRowContext(v.ctx, `SELECT through_epoch FROM site_revoked WHERE tech = ?`, d.Tech).Scan(&through)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("site: reading the revocation list: %w", err)
	}
	var open, usable []epochKey
	for _, ek := range eks {
		if ek.Open(v.now, p.Overlap) {
			open = append(open, ek)
			if int64(ek.N) > through {
				usable = append(usable, ek)
			}
		}
	}
	if len(open) == 0 {
		last := "none"
		if len(eks) > 0 {
			last = stamp(eks[len(eks)-1].End.Add(p.Overlap))
		}
		refusal, err := v.refuse(ReasonNoEpoch, ErrNoEpoch, "the installed package covers epochs up to %s and the site's time is %s; install a newer package with 'outpost site update'",
			last, stamp(v.now))
		return nil, refusal, err
	}
	if len(usable) == 0 {
		refusal, err := v.refuse(ReasonRevoked, ErrRevoked, "%s is on the revocation list for epochs up to %d", d.Tech, through)
		return nil, refusal, err
	}
	return usable, nil, nil
}

// accept records a code that matched step in epoch m, unless the
// technician already used that step or a later one here (a replay).
func (v *deciding) accept(m *epochKey, step uint64) (error, error) {
	d := v.d
	d.Epoch, d.Step = m.N, step
	period := int64(v.c.policy.Period / time.Second)
	if int64(step)*period < v.used {
		return v.refuse(ReasonReplayed, ErrReplayed, "%s already used a code of this time step or a later one here", d.Tech)
	}
	if _, err := v.tx.ExecContext(v.ctx, `INSERT INTO site_techs (tech, used_until, failures, last_failure_us) VALUES (?, ?, 0, 0)
		ON CONFLICT (tech) DO UPDATE SET used_until = excluded.used_until, failures = 0`, d.Tech, (int64(step)+1)*period); err != nil {
		return nil, err
	}
	d.OK, d.Reason, d.Failures, v.kind = true, ReasonOK, 0, KindVerifyOK
	return nil, v.record()
}

// failure is step 5: a wrong or malformed code counts for the technician
// and for the site-wide budget.
func (v *deciding) failure(malformed bool) (error, error) {
	p, d := v.c.policy, v.d
	d.Failures++
	d.RetryAt = p.RetryAt(d.Failures, v.now)
	if _, err := v.tx.ExecContext(v.ctx, `INSERT INTO site_techs (tech, used_until, failures, last_failure_us) VALUES (?, 0, ?, ?)
		ON CONFLICT (tech) DO UPDATE SET failures = excluded.failures, last_failure_us = excluded.last_failure_us`,
		d.Tech, d.Failures, v.now.UnixMicro()); err != nil {
		return nil, err
	}
	if _, err := v.tx.ExecContext(v.ctx, `UPDATE site_config SET budget_tat_us = ? WHERE id = 1`, p.siteAfterFailure(v.c.budgetTAT, v.now).UnixMicro()); err != nil {
		return nil, err
	}
	next := "try again"
	if d.Failures >= p.LockoutFailures {
		next = "locked until " + stamp(d.RetryAt)
	} else if d.RetryAt.After(v.now) {
		next = "next attempt at " + stamp(d.RetryAt)
	}
	if malformed {
		return v.refuse(ReasonMalformedCode, otp.ErrMalformedCode, "the code must be exactly %d digits; %s has %d failed code(s) in a row; %s",
			p.Digits, d.Tech, d.Failures, next)
	}
	return v.refuse(ReasonWrongCode, ErrWrongCode, "%s has %d failed code(s) in a row; %s", d.Tech, d.Failures, next)
}
