package offline

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/backoff"
	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/clockguard"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
	"github.com/outpost-auth/outpost/otp"
)

// MaxBundleSize bounds a bundle file (read no more than this for Import).
const MaxBundleSize = bundlefmt.MaxBundleSize

// Files in a field data directory.
const (
	// DatabaseFile is the SQLite store: bundles, token state, the device log.
	DatabaseFile = "field.db"
	// IdentityFile is the device's Ed25519 key (PKCS#8 PEM, mode 0600).
	IdentityFile = devicelog.IdentityFile
	// PublicKeyFile is the device's public key (PEM), for registering the device.
	PublicKeyFile = "device.pub"
)

// Schema versions of field_meta "schema". Version 2 stores always hold the
// monotonic counter's base (counter_base): a version 2 store without one
// was edited, and refuses to open. Version 1 stores may predate the counter
// (a base is then set up at open); every version 1 store is marked version
// 2 at its first open by this Outpost, base or none.
const (
	schemaVersion  = "2"
	schemaNoMarker = "1" // before the marker: the counter's base may be missing
)

// Policy is the device's local lockout and window policy (OneSpan's state
// data block rules). It is fixed at [Init] and stored in the database.
type Policy struct {
	// MaxFailures consecutive wrong codes for one token wipe every bundle of
	// that user on this device (1 to 1000).
	MaxFailures int `json:"max_failures"`
	// After the n-th consecutive failure the next attempt must wait
	// DelayBase × 2^(n-1), at most DelayMax. DelayBase 0 disables delays.
	DelayBase time.Duration `json:"delay_base"`
	DelayMax  time.Duration `json:"delay_max"`
	// ClockTolerance is how far the clock may go back behind the latest time
	// the store has seen (its high-water mark), and the skew allowed at both
	// ends of a bundle's validity window.
	ClockTolerance time.Duration `json:"clock_tolerance"`
	// TOTPBack and TOTPForward are the steps tried either side of the device
	// clock's step (0 to 10 each).
	TOTPBack    int `json:"totp_back"`
	TOTPForward int `json:"totp_forward"`
	// HOTPLookahead is how many counters after the next expected one are
	// tried (0 to 20): next..next+HOTPLookahead.
	HOTPLookahead int `json:"hotp_lookahead"`
}

// DefaultPolicy: wipe after 10 failures, delays 1 s, 2 s, 4 s … up to 5 min,
// 5 minutes of clock tolerance, TOTP steps −1..+1 (3 KDF evaluations per
// attempt), HOTP look-ahead 4 (5 evaluations).
var DefaultPolicy = Policy{MaxFailures: 10, DelayBase: time.Second, DelayMax: 5 * time.Minute,
	ClockTolerance: 5 * time.Minute, TOTPBack: 1, TOTPForward: 1, HOTPLookahead: 4}

// Validate checks p's ranges.
func (p Policy) Validate() error {
	switch {
	case p.MaxFailures < 1 || p.MaxFailures > maxFailures:
		return fmt.Errorf("offline: max failures %d (use 1 to %d)", p.MaxFailures, maxFailures)
	case p.DelayBase < 0 || p.DelayMax < p.DelayBase || p.DelayMax > maxDelay:
		return fmt.Errorf("offline: delays %v..%v (use 0 <= base <= max <= %v)", p.DelayBase, p.DelayMax, maxDelay)
	case p.ClockTolerance < 0 || p.ClockTolerance > clockguard.MaxTolerance:
		return fmt.Errorf("offline: clock tolerance %v (use 0 to %v)", p.ClockTolerance, clockguard.MaxTolerance)
	case p.TOTPBack < 0 || p.TOTPBack > maxTOTPSteps || p.TOTPForward < 0 || p.TOTPForward > maxTOTPSteps:
		return fmt.Errorf("offline: TOTP window -%d..+%d (use 0 to %d each way)", p.TOTPBack, p.TOTPForward, maxTOTPSteps)
	case p.HOTPLookahead < 0 || p.HOTPLookahead > maxHOTPLookahead:
		return fmt.Errorf("offline: HOTP look-ahead %d (use 0 to %d)", p.HOTPLookahead, maxHOTPLookahead)
	}
	return nil
}

// Limits of a Policy (the clock tolerance's is clockguard.MaxTolerance).
// Each attempt runs the KDF once per step or counter of its window, so the
// window limits bound an attempt's cost.
const (
	maxFailures      = 1000
	maxDelay         = 24 * time.Hour
	maxTOTPSteps     = 10 // each way
	maxHOTPLookahead = 20
)

// Delay is the wait imposed after the n-th consecutive failure (the
// growing delay of internal/backoff).
func (p Policy) Delay(n int) time.Duration { return backoff.Delay(p.DelayBase, p.DelayMax, n) }

// Errors of the store. Refusals of a verification wrap ErrRefused; the CLI
// maps ErrRefused to exit 3, ErrLocked and ErrWiped to 4, ErrCorrupt and the
// bundle integrity errors to 5.
var (
	// Errors of a bundle file, which Import checks before storing anything:
	// ErrMalformed (not a bundle, truncated, trailing data, a field out of
	// range), and those of its signed envelope.
	ErrMalformed = bundlefmt.ErrMalformed
	// ErrUnknownKey: signed by a key this device does not trust.
	ErrUnknownKey = artifact.ErrUnknownKey
	// ErrBadSignature: the signature does not verify (altered, or not from this server).
	ErrBadSignature = artifact.ErrBadSig
	// ErrWrongDevice: issued for another device.
	ErrWrongDevice = artifact.ErrWrongBound
	// ErrExpired and ErrNotYetValid: outside the bundle's validity window.
	ErrExpired     = artifact.ErrExpired
	ErrNotYetValid = artifact.ErrNotYetValid
	// ErrTooLarge: larger than MaxBundleSize.
	ErrTooLarge = artifact.ErrTooLarge
	// ErrNoSecret: Result.Secret was asked for a name the bundle does not carry.
	ErrNoSecret = bundlefmt.ErrNoSecret

	ErrNotInitialised     = errors.New("offline: no field store in this directory")
	ErrAlreadyInitialised = errors.New("offline: a field store already exists in this directory")
	// ErrCorrupt: the database, a stored bundle or the device key is damaged or was altered.
	ErrCorrupt = errors.New("offline: the local store is damaged or was altered")
	// ErrUnknownUser: no bundle (and no state) for the user on this device.
	ErrUnknownUser = errors.New("offline: no bundle for this user on this device")
	// ErrAmbiguous: the user has several tokens here; name one.
	ErrAmbiguous = errors.New("offline: several tokens match")
	// ErrStale: an import of a bundle not newer (by serial) than the one held.
	ErrStale = errors.New("offline: bundle is not newer than the one already imported")
	// ErrPINRequired and ErrPINNotUsed: the attempt's PIN does not fit the bundle.
	ErrPINRequired = errors.New("offline: this token needs the user's PIN with the code")
	ErrPINNotUsed  = errors.New("offline: this token's bundle takes no PIN")

	ErrRefused = errors.New("offline: refused")
	// ErrWrongCode: the code (or PIN) matched no entry in the window; it counts as a failure.
	ErrWrongCode = fmt.Errorf("%w: wrong code", ErrRefused)
	// ErrNoEntries: the bundle has no unused entry for now (used up, period
	// over or not started, or this time step's code already used).
	ErrNoEntries = fmt.Errorf("%w: no usable entry", ErrRefused)
	// ErrClockBack: the device clock is behind the latest time seen by more than the tolerance.
	ErrClockBack = fmt.Errorf("%w: device clock was set back", ErrRefused)
	// ErrOutOfValidity: the stored bundle is expired or not yet valid.
	ErrOutOfValidity = fmt.Errorf("%w: bundle outside its validity window", ErrRefused)

	// ErrLocked: too many recent failures; wait before the next attempt.
	ErrLocked = errors.New("offline: locked after failed attempts")
	// ErrWiped: the user's entries were wiped after too many failures.
	ErrWiped = errors.New("offline: wiped after too many failed attempts")

	// ErrForkedLog: a bundle names, as the newest entry of this device's log
	// the server holds, an entry this store does not have — its log ends
	// before it, or holds another entry there. The store was restored from
	// an older copy (or copied and used in two places), so it may accept
	// codes a second time. A fork is an incident: the import is refused and
	// logged as "fork". It wraps ErrCorrupt.
	ErrForkedLog = fmt.Errorf("%w: its log is not the one the server acknowledged", ErrCorrupt)
	// ErrRolledBack: the device's monotonic counter (Options.Counter) has
	// counted more log entries than this store's log holds: the store was
	// restored from an older copy. The store refuses to open. It wraps ErrCorrupt.
	ErrRolledBack = fmt.Errorf("%w: it is older than the device's monotonic counter", ErrCorrupt)
)

// Config is what Init records in a new store.
type Config struct {
	// DeviceID is this device's id: bundles must be bound to it.
	DeviceID string
	// ServerKey is the server's artifact signing key (from 'outpost keys export-public').
	ServerKey ed25519.PublicKey
	// Policy: the zero value means DefaultPolicy.
	Policy Policy
}

// Options tune an open store.
type Options struct {
	// Now is the device clock; nil means time.Now.
	Now func() time.Time
	// Workers is the goroutines one verification runs the KDF on; 0 = GOMAXPROCS.
	Workers int
	// Counter is the device's monotonic counter (see [Counter]); nil means a
	// FileCounter in the data directory (software: see docs/offline.md for
	// what it does not prevent). A store keeps the counter it was made with.
	Counter Counter
}

// Store is a field device's local store. It is safe for concurrent use, also
// by several processes: every decision is made in one SQLite transaction.
type Store struct {
	db      *sql.DB
	dir     string
	id      *devicelog.Identity
	device  string
	servers []ed25519.PublicKey
	policy  Policy
	now     func() time.Time
	workers int
	counter Counter
	// base is the counter's value minus the log's head (fixed at Init):
	// after every decision, counter - base == the log's last sequence number.
	base int64
	// schema is the store's schema version as opened (schemaVersion once
	// openCounter has run).
	schema string
}

const schema = `
CREATE TABLE IF NOT EXISTS field_meta (
	k TEXT PRIMARY KEY,
	v BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS field_bundles (
	realm       TEXT NOT NULL,
	usr         TEXT NOT NULL,
	token       TEXT NOT NULL,
	serial      INTEGER NOT NULL,
	data        BLOB NOT NULL,
	imported_us INTEGER NOT NULL,
	PRIMARY KEY (realm, usr, token)
);
CREATE TABLE IF NOT EXISTS field_tokens (
	realm           TEXT NOT NULL,
	usr             TEXT NOT NULL,
	token           TEXT NOT NULL,
	last_used       INTEGER NOT NULL DEFAULT -1,
	failures        INTEGER NOT NULL DEFAULT 0,
	locked_until_us INTEGER NOT NULL DEFAULT 0,
	wiped_us        INTEGER NOT NULL DEFAULT 0,
	max_serial      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (realm, usr, token)
);`

// Init creates a field store in dir (mode 0700): the device's Ed25519
// identity (device.key, device.pub), the SQLite database with the pinned
// server key and the policy, and the first entry of the device log. It
// refuses a directory that already holds a store.
func Init(ctx context.Context, dir string, cfg Config, opts Options) (*Store, error) {
	if err := ident.Check("device id", cfg.DeviceID); err != nil {
		return nil, fmt.Errorf("offline: %w", err)
	}
	if len(cfg.ServerKey) != ed25519.PublicKeySize {
		return nil, errors.New("offline: the server's Ed25519 public key is required")
	}
	pol := cfg.Policy
	if pol == (Policy{}) {
		pol = DefaultPolicy
	}
	if err := pol.Validate(); err != nil {
		return nil, err
	}
	dbPath := filepath.Join(dir, DatabaseFile)
	if _, err := os.Stat(dbPath); err == nil {
		return nil, fmt.Errorf("%w: %s exists (use it, or choose another --data)", ErrAlreadyInitialised, dbPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("offline: %w", err)
	}
	id, err := devicelog.LoadOrCreateIdentity(dir)
	if err != nil {
		return nil, err
	}
	db, err := sqlitedb.Open(dbPath)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, dir: dir, id: id, device: cfg.DeviceID, servers: []ed25519.PublicKey{cfg.ServerKey}, policy: pol}
	s.setOptions(opts)
	if s.base, err = s.startCounter(ctx, 0); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.create(ctx); err != nil {
		db.Close()
		os.Remove(dbPath)
		return nil, err
	}
	if err := datadir.WriteFileAtomic(filepath.Join(dir, PublicKeyFile), s.devicePublicPEM(), 0o644); err != nil {
		db.Close()
		return nil, fmt.Errorf("offline: writing %s: %w", PublicKeyFile, err)
	}
	return s, nil
}

func (s *Store) create(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("offline: creating tables: %w", err)
	}
	if err := devicelog.Migrate(ctx, s.db); err != nil {
		return err
	}
	pol, _ := json.Marshal(s.policy)
	srv, _ := json.Marshal(s.servers)
	now := s.now()
	return s.tx(ctx, func(tx *sql.Tx) error {
		for k, v := range map[string][]byte{
			"schema": []byte(schemaVersion), "device_id": []byte(s.device), "device_public_key": s.id.Public,
			"server_keys": srv, "policy": pol, "clock_hwm_us": []byte(strconv.FormatInt(now.UnixMicro(), 10)),
			"counter_base": []byte(strconv.FormatInt(s.base, 10)),
		} {
			if _, err := tx.ExecContext(ctx, `INSERT INTO field_meta (k, v) VALUES (?, ?)`, k, v); err != nil {
				return err
			}
		}
		ids := make([]string, len(s.servers))
		for i, k := range s.servers {
			ids[i] = keys.KeyID(k)
		}
		return s.log(ctx, tx, now, "init", "", map[string]any{"device": s.device, "device_key": s.id.KeyID, "server_keys": ids, "policy": s.policy})
	})
}

// Open opens the field store in dir, checking the database's integrity, that
// the device key matches the one recorded at Init, and the schema version.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	dbPath := filepath.Join(dir, DatabaseFile)
	if _, err := os.Stat(dbPath); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: run 'outpost field init --data %s ...' first", ErrNotInitialised, dir, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, IdentityFile)); err != nil {
		return nil, fmt.Errorf("%w: the device key %s is missing: %v", ErrCorrupt, filepath.Join(dir, IdentityFile), err)
	}
	id, err := devicelog.LoadOrCreateIdentity(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	db, err := sqlitedb.Open(dbPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	s := &Store{db: db, dir: dir, id: id}
	s.setOptions(opts)
	if err := s.load(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.openCounter(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) setOptions(o Options) {
	s.now = clock.Or(o.Now)
	s.workers = o.Workers
	if s.workers <= 0 {
		s.workers = runtime.GOMAXPROCS(0)
	}
	s.counter = o.Counter
	if s.counter == nil {
		s.counter = &FileCounter{Path: filepath.Join(s.dir, CounterFile)}
	}
}

func (s *Store) load(ctx context.Context) error {
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: restore the data directory from a backup, or run 'outpost field init' in a new one and import fresh bundles", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	var check string
	if err := s.db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&check); err != nil {
		return corrupt("%s is not a readable SQLite database (%v)", DatabaseFile, err)
	}
	if check != "ok" {
		return corrupt("SQLite integrity check: %.200s", check)
	}
	meta := map[string][]byte{}
	rows, err := s.db.QueryContext(ctx, `SELECT k, v FROM field_meta`)
	if err != nil {
		return corrupt("reading settings: %v", err)
	}
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return corrupt("reading settings: %v", err)
		}
		meta[k] = v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return corrupt("reading settings: %v", err)
	}
	s.schema = string(meta["schema"])
	if s.schema != schemaVersion && s.schema != schemaNoMarker {
		return corrupt("schema version %q, this Outpost reads %q and %q", meta["schema"], schemaNoMarker, schemaVersion)
	}
	s.device = string(meta["device_id"])
	if ident.Check("device id", s.device) != nil {
		return corrupt("device id missing")
	}
	if string(meta["device_public_key"]) != string(s.id.Public) {
		return corrupt("%s is not the key this store was created with", IdentityFile)
	}
	if err := json.Unmarshal(meta["server_keys"], &s.servers); err != nil || len(s.servers) == 0 {
		return corrupt("pinned server key unreadable")
	}
	for _, k := range s.servers {
		if len(k) != ed25519.PublicKeySize {
			return corrupt("pinned server key has %d bytes", len(k))
		}
	}
	if err := json.Unmarshal(meta["policy"], &s.policy); err != nil {
		return corrupt("policy unreadable")
	}
	if err := s.policy.Validate(); err != nil {
		return corrupt("policy: %v", err)
	}
	if _, err := strconv.ParseInt(string(meta["clock_hwm_us"]), 10, 64); err != nil {
		return corrupt("clock high-water mark unreadable")
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// DeviceID returns the id bundles must be bound to.
func (s *Store) DeviceID() string { return s.device }

// DevicePublicKey returns the device's Ed25519 public key (it signs the device log).
func (s *Store) DevicePublicKey() ed25519.PublicKey { return s.id.Public }

// Policy returns the store's policy.
func (s *Store) Policy() Policy { return s.policy }

func (s *Store) devicePublicPEM() []byte {
	p := keys.MarshalPublicPEM(s.id.Public)
	// MarshalPublicPEM's first line names an artifact signing key; say what this one is.
	if i := strings.IndexByte(string(p), '\n'); i >= 0 {
		p = append([]byte("Outpost field device "+s.device+" key "+s.id.KeyID), p[i:]...)
	}
	return p
}

// tx runs f in one IMMEDIATE transaction (sqlitedb begins them so).
func (s *Store) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("offline: %w", err)
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("offline: commit: %w", err)
	}
	return s.advance(ctx)
}

// log appends a decision to the device log inside tx. data never holds a secret.
func (s *Store) log(ctx context.Context, tx *sql.Tx, now time.Time, kind, subject string, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	_, err = devicelog.Append(ctx, tx, s.id.Private, eventlog.Entry{Time: now, Kind: kind, Actor: s.device, Subject: subject, Data: raw})
	return err
}

// clock applies the high-water-mark rule (internal/clockguard) inside tx:
// it refuses a clock more than the tolerance behind the latest time seen,
// and raises the mark.
func (s *Store) clock(ctx context.Context, tx *sql.Tx, now time.Time) error {
	var v []byte
	if err := tx.QueryRowContext(ctx, `SELECT v FROM field_meta WHERE k = 'clock_hwm_us'`).Scan(&v); err != nil {
		return fmt.Errorf("%w: clock high-water mark: %v", ErrCorrupt, err)
	}
	hwm, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: clock high-water mark unreadable", ErrCorrupt)
	}
	seen := time.UnixMicro(hwm)
	next, ok := clockguard.Check(now, seen, s.policy.ClockTolerance)
	if !ok {
		return fmt.Errorf("%w: it reads %s but this store has seen %s (tolerance %v): set the clock right",
			ErrClockBack, now.UTC().Format(time.RFC3339), seen.UTC().Format(time.RFC3339), s.policy.ClockTolerance)
	}
	if next.UnixMicro() > hwm {
		_, err = tx.ExecContext(ctx, `UPDATE field_meta SET v = ? WHERE k = 'clock_hwm_us'`, []byte(strconv.FormatInt(next.UnixMicro(), 10)))
	}
	return err
}

// TokenKey names one token on the device.
type TokenKey struct {
	Realm string `json:"realm"`
	User  string `json:"user"`
	Token string `json:"token"`
}

func (k TokenKey) String() string { return k.Realm + "/" + k.User + "/" + k.Token }

// ImportResult describes an imported bundle.
type ImportResult struct {
	TokenKey
	Serial    uint64    `json:"serial"`
	Type      string    `json:"type"`
	First     uint64    `json:"first"`
	Last      uint64    `json:"last"`
	Entries   int       `json:"entries"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// Replaced is the serial of the bundle it replaced (0 for none).
	Replaced uint64 `json:"replaced,omitempty"`
	// Unchanged is set when this very bundle was already imported.
	Unchanged bool `json:"unchanged,omitempty"`
}

// Import verifies a bundle file — signature by a pinned server key, binding
// to this device, validity at the device clock, every field — before
// anything is stored, then stores it in place of an older bundle (lower
// serial) for the same token. Importing a newer bundle for a wiped token
// lifts the wipe. The decision is logged; a refused bundle changes no state.
func (s *Store) Import(ctx context.Context, data []byte) (ImportResult, error) {
	now := s.now()
	b, err := bundlefmt.Decode(data, s.servers, bundlefmt.Expect{Device: s.device, Now: now, Skew: s.policy.ClockTolerance})
	if err != nil {
		s.logRefusal(ctx, now, "import.refused", "", map[string]any{"reason": reason(err)})
		return ImportResult{}, err
	}
	if b.Serial > bundlefmt.MaxCounter {
		return ImportResult{}, fmt.Errorf("%w: serial %d out of range", ErrMalformed, b.Serial)
	}
	key := TokenKey{b.Realm, b.User, b.Token}
	res := ImportResult{TokenKey: key, Serial: b.Serial, Type: b.OTP.Type, First: b.First, Last: b.Last(),
		Entries: b.Count(), NotBefore: b.NotBefore, NotAfter: b.NotAfter}
	var refused error
	err = s.tx(ctx, func(tx *sql.Tx) error {
		refuse := func(e error) error {
			refused = e
			return s.log(ctx, tx, now, "import.refused", key.User, map[string]any{"realm": key.Realm, "token": key.Token, "serial": b.Serial, "reason": reason(e)})
		}
		if head, err := checkAcked(ctx, tx, b); err != nil {
			if !errors.Is(err, ErrForkedLog) {
				return err
			}
			refused = err
			return s.log(ctx, tx, now, "fork", key.User, map[string]any{"realm": key.Realm, "token": key.Token, "serial": b.Serial,
				"acked": b.Acked, "head": head})
		}
		if err := s.clock(ctx, tx, now); err != nil {
			if errors.Is(err, ErrClockBack) {
				return refuse(err)
			}
			return err
		}
		var maxSerial, wiped int64
		err := tx.QueryRowContext(ctx, `SELECT max_serial, wiped_us FROM field_tokens WHERE realm = ? AND usr = ? AND token = ?`,
			key.Realm, key.User, key.Token).Scan(&maxSerial, &wiped)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := tx.ExecContext(ctx, `INSERT INTO field_tokens (realm, usr, token) VALUES (?, ?, ?)`,
				key.Realm, key.User, key.Token); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("%w: reading token state: %v", ErrCorrupt, err)
		}
		if b.Serial <= uint64(maxSerial) {
			var old []byte
			_ = tx.QueryRowContext(ctx, `SELECT data FROM field_bundles WHERE realm = ? AND usr = ? AND token = ? AND serial = ?`,
				key.Realm, key.User, key.Token, int64(b.Serial)).Scan(&old)
			if string(old) == string(data) {
				res.Unchanged = true
				return nil
			}
			return refuse(fmt.Errorf("%w: serial %d, this device has seen serial %d for %s: ask the server for a new bundle", ErrStale, b.Serial, maxSerial, key))
		}
		var prev int64
		if err := tx.QueryRowContext(ctx, `SELECT serial FROM field_bundles WHERE realm = ? AND usr = ? AND token = ?`,
			key.Realm, key.User, key.Token).Scan(&prev); err == nil {
			res.Replaced = uint64(prev)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO field_bundles (realm, usr, token, serial, data, imported_us) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (realm, usr, token) DO UPDATE SET serial = excluded.serial, data = excluded.data, imported_us = excluded.imported_us`,
			key.Realm, key.User, key.Token, int64(b.Serial), data, now.UnixMicro()); err != nil {
			return err
		}
		upd := `UPDATE field_tokens SET max_serial = ? WHERE realm = ? AND usr = ? AND token = ?`
		if wiped != 0 {
			// The server issued a new bundle after the wipe: its decision.
			upd = `UPDATE field_tokens SET max_serial = ?, wiped_us = 0, failures = 0, locked_until_us = 0 WHERE realm = ? AND usr = ? AND token = ?`
		}
		if _, err := tx.ExecContext(ctx, upd, int64(b.Serial), key.Realm, key.User, key.Token); err != nil {
			return err
		}
		// The server's last used counter or step at issue time: codes
		// accepted online are refused here from now on (max: never down).
		if _, err := tx.ExecContext(ctx, `UPDATE field_tokens SET last_used = ? WHERE realm = ? AND usr = ? AND token = ? AND last_used < ?`,
			b.Used, key.Realm, key.User, key.Token, b.Used); err != nil {
			return err
		}
		return s.log(ctx, tx, now, "import", key.User, map[string]any{"realm": key.Realm, "token": key.Token, "serial": b.Serial,
			"type": b.OTP.Type, "first": b.First, "last": b.Last(), "not_after": b.NotAfter, "replaced": res.Replaced, "unwiped": wiped != 0,
			"used": b.Used})
	})
	if err != nil {
		return ImportResult{}, fmt.Errorf("offline: storing the bundle: %w", err)
	}
	if refused != nil {
		return ImportResult{}, refused
	}
	return res, nil
}

// checkAcked checks, inside tx, that this store's log holds the entry the
// bundle says the server acknowledged (b.Acked, with its hash), and returns
// the log's head. The server only acknowledges entries this device sent, so
// a log that ends before that entry, or has another one there, is an older
// copy of the store, or a fork of it: ErrForkedLog.
func checkAcked(ctx context.Context, tx *sql.Tx, b *bundlefmt.Bundle) (uint64, error) {
	last, err := devicelog.Last(ctx, tx)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	var head uint64
	if last != nil {
		head = last.Seq
	}
	if b.Acked == 0 {
		return head, nil
	}
	if head < b.Acked {
		return head, fmt.Errorf("%w: this store's log ends at entry %d but the server acknowledged entry %d: the store was restored from an older copy; "+
			"re-initialise the device ('outpost field init' in a new directory) and re-register it", ErrForkedLog, head, b.Acked)
	}
	holds, err := holdsEntry(ctx, tx, b.Acked, b.AckedHash)
	if err != nil {
		return head, err
	}
	if !holds {
		return head, fmt.Errorf("%w: entry %d of this store's log is not the one the server acknowledged: the store was restored from an older copy "+
			"and used since, or copied to another device; re-initialise the device and re-register it", ErrForkedLog, b.Acked)
	}
	return head, nil
}

// holdsEntry reports whether entry seq (1 to the log's head) of the log has
// hash, compared in constant time.
func holdsEntry(ctx context.Context, q devicelog.Queryer, seq uint64, hash []byte) (bool, error) {
	es, err := devicelog.Since(ctx, q, seq-1, 1)
	if err != nil || len(es) != 1 || es[0].Seq != seq {
		return false, fmt.Errorf("%w: reading log entry %d: %v", ErrCorrupt, seq, err)
	}
	return subtle.ConstantTimeCompare(es[0].Hash, hash) == 1, nil
}

// logRefusal records a refusal that changes no state, in its own transaction.
// Failing to log it does not change the refusal.
func (s *Store) logRefusal(ctx context.Context, now time.Time, kind, subject string, data map[string]any) {
	_ = s.tx(ctx, func(tx *sql.Tx) error { return s.log(ctx, tx, now, kind, subject, data) })
}

// reason names an error's class for the log, without any input text.
func reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{ErrForkedLog, "forked"}, {ErrBadSignature, "bad_signature"}, {ErrUnknownKey, "unknown_key"}, {ErrWrongDevice, "wrong_device"},
		{ErrExpired, "expired"}, {ErrNotYetValid, "not_yet_valid"}, {ErrTooLarge, "too_large"}, {ErrMalformed, "malformed"},
		{ErrStale, "stale"}, {ErrClockBack, "clock_back"}, {ErrOutOfValidity, "out_of_validity"}, {ErrNoEntries, "no_entries"},
		{ErrLocked, "locked"}, {ErrWiped, "wiped"}, {ErrWrongCode, "wrong_code"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}

// Attempt is one offline verification. Realm and Token may be empty when the
// user has a single token on the device.
type Attempt struct {
	Realm, User, Token string
	Code               string
	PIN                string
}

// Result is a successful verification: the counter or step that matched, and
// the release key its entry unwrapped.
type Result struct {
	TokenKey
	// Type is "hotp" or "totp".
	Type string
	// Counter is the HOTP counter or TOTP step that matched; it is now used.
	Counter uint64
	Serial  uint64
	bundle  *bundlefmt.Bundle
	release []byte
}

// ReleaseKey returns the 32-byte key a correct code released (a data key the
// caller may use; it is the same for every entry of the bundle).
func (r *Result) ReleaseKey() []byte { return append([]byte(nil), r.release...) }

// SecretNames lists the static secrets the bundle carries.
func (r *Result) SecretNames() []string { return r.bundle.SecretNames() }

// Secret decrypts the static secret name with the released key.
func (r *Result) Secret(name string) ([]byte, error) { return r.bundle.OpenSecret(r.release, name) }

// resolve finds the one token an attempt names, among bundles and token states.
func (s *Store) resolve(ctx context.Context, a Attempt) (TokenKey, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT realm, usr, token FROM field_tokens
		WHERE usr = ? AND (? = '' OR realm = ?) AND (? = '' OR token = ?) ORDER BY realm, token LIMIT 20`,
		a.User, a.Realm, a.Realm, a.Token, a.Token)
	if err != nil {
		return TokenKey{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	var found []TokenKey
	for rows.Next() {
		var k TokenKey
		if err := rows.Scan(&k.Realm, &k.User, &k.Token); err != nil {
			return TokenKey{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		found = append(found, k)
	}
	if err := rows.Err(); err != nil {
		return TokenKey{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	switch len(found) {
	case 0:
		return TokenKey{}, fmt.Errorf("%w: %q: import one with 'outpost field import'", ErrUnknownUser, ident.Clip(a.User))
	case 1:
		return found[0], nil
	}
	names := make([]string, len(found))
	for i, k := range found {
		names[i] = k.Realm + "/" + k.Token
	}
	return TokenKey{}, fmt.Errorf("%w: user %q has %s here: name one with --realm and --token", ErrAmbiguous, ident.Clip(a.User), strings.Join(names, ", "))
}

// tokenState is one row of field_tokens.
type tokenState struct {
	lastUsed    int64 // -1: none
	failures    int
	lockedUntil int64 // Unix µs
	wiped       int64 // Unix µs, 0: not wiped
	maxSerial   int64
}

func (s *Store) readState(ctx context.Context, q devicelog.Queryer, k TokenKey) (tokenState, error) {
	var st tokenState
	err := q.QueryRowContext(ctx, `SELECT last_used, failures, locked_until_us, wiped_us, max_serial FROM field_tokens
		WHERE realm = ? AND usr = ? AND token = ?`, k.Realm, k.User, k.Token).
		Scan(&st.lastUsed, &st.failures, &st.lockedUntil, &st.wiped, &st.maxSerial)
	if errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("%w: %q", ErrUnknownUser, ident.Clip(k.User))
	}
	if err != nil {
		return st, fmt.Errorf("%w: reading token state: %v", ErrCorrupt, err)
	}
	if st.lastUsed < -1 || st.failures < 0 || st.maxSerial < 0 {
		return st, fmt.Errorf("%w: token state of %s out of range", ErrCorrupt, k)
	}
	return st, nil
}

// next is the first counter or step of b a code may still be accepted
// for: above the last used one (otp.NextCounter) and within the bundle.
func (st tokenState) next(b *bundlefmt.Bundle) uint64 {
	return max(b.First, otp.NextCounter(st.lastUsed >= 0, uint64(st.lastUsed)))
}

// loadBundle reads and re-verifies the stored bundle of k (nil when there is none).
func (s *Store) loadBundle(ctx context.Context, q devicelog.Queryer, k TokenKey) (*bundlefmt.Bundle, error) {
	var data []byte
	err := q.QueryRowContext(ctx, `SELECT data FROM field_bundles WHERE realm = ? AND usr = ? AND token = ?`, k.Realm, k.User, k.Token).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading the bundle: %v", ErrCorrupt, err)
	}
	b, err := bundlefmt.Decode(data, s.servers, bundlefmt.Expect{Device: s.device})
	if err != nil {
		return nil, fmt.Errorf("%w: the stored bundle of %s no longer verifies (%w): re-import it from the server", ErrCorrupt, k, err)
	}
	if b.Realm != k.Realm || b.User != k.User || b.Token != k.Token {
		return nil, fmt.Errorf("%w: the stored bundle of %s belongs to another token", ErrCorrupt, k)
	}
	return b, nil
}

// window returns the counters an attempt at now may try, or an error saying
// why there is none: TOTP the steps within the policy's window around the
// device clock, HOTP the look-ahead after the last used counter (otp's
// Window.Range and NextCounter); both only above the last used one and
// within the bundle.
func (s *Store) window(b *bundlefmt.Bundle, st tokenState, now time.Time) (lo, hi uint64, err error) {
	next := st.next(b)
	if b.Params.Type == otp.TypeHOTP {
		if next > b.Last() {
			return 0, 0, fmt.Errorf("%w: all %d entries of this bundle are used: sync or import a new bundle", ErrNoEntries, b.Count())
		}
		lo, hi = otp.Window{Forward: s.policy.HOTPLookahead}.Range(next)
		return lo, min(hi, b.Last()), nil
	}
	lo, hi = otp.Window{Back: s.policy.TOTPBack, Forward: s.policy.TOTPForward}.Range(b.Params.Step(now))
	switch {
	case lo > b.Last():
		return 0, 0, fmt.Errorf("%w: the bundle's period ended at %s: sync or import a new bundle", ErrNoEntries,
			otp.StepTime(b.Last()+1, b.Params.Period, b.Params.T0).Format(time.RFC3339))
	case hi < b.First:
		return 0, 0, fmt.Errorf("%w: the bundle's period starts at %s", ErrNoEntries,
			otp.StepTime(b.First, b.Params.Period, b.Params.T0).Format(time.RFC3339))
	}
	lo, hi = max(lo, next), min(hi, b.Last())
	if lo > hi {
		return 0, 0, fmt.Errorf("%w: the code for this time step was already used: wait for the next code", ErrNoEntries)
	}
	return lo, hi, nil
}

// Verify checks an attempt offline and, on success, returns the released key.
//
// Rules, in order: the token is resolved and its stored bundle re-verified;
// the code's format and the PIN's presence are checked (usage errors, no
// state change); then in one transaction the wipe, the clock high-water mark,
// the bundle's validity, the delay after failures and the window are checked
// — each refusal logged — and the attempt is counted as a failure before any
// KDF work, so that neither parallel attempts nor a killed process get a free
// guess. The KDF runs outside the transaction on at most (window size)
// entries. A second transaction records the outcome: a match above the last
// used counter becomes the last used one and clears the failures; anything
// else stays a failure, sets the next delay, and at Policy.MaxFailures wipes
// every bundle of the user on this device.
func (s *Store) Verify(ctx context.Context, a Attempt) (*Result, error) {
	k, b, err := s.attemptFor(ctx, a)
	if err != nil {
		return nil, err
	}
	lo, hi, err := s.admit(ctx, k, b, s.now())
	if err != nil {
		return nil, err
	}
	// The KDF work: at most hi-lo+1 evaluations.
	counter, release, tryErr := b.Try(ctx, lo, hi, a.Code, a.PIN, s.workers)
	if tryErr != nil && !errors.Is(tryErr, bundlefmt.ErrNoMatch) && ctx.Err() == nil {
		return nil, tryErr
	}
	return s.settle(ctx, k, b, counter, release, tryErr)
}

// attemptFor resolves the token an attempt names and re-verifies its stored
// bundle (nil when the token was wiped), then checks the attempt's usage —
// the code's format, the PIN's presence — which changes no state.
func (s *Store) attemptFor(ctx context.Context, a Attempt) (TokenKey, *bundlefmt.Bundle, error) {
	k, err := s.resolve(ctx, a)
	if err != nil {
		return k, nil, err
	}
	b, err := s.loadBundle(ctx, s.db, k)
	if err != nil || b == nil {
		return k, nil, err
	}
	if err := otp.CheckCode(a.Code, b.Params.Digits); err != nil {
		return k, nil, fmt.Errorf("%w (this token's codes have %d digits)", err, b.Params.Digits)
	}
	if b.PIN && a.PIN == "" {
		return k, nil, ErrPINRequired
	}
	if !b.PIN && a.PIN != "" {
		return k, nil, ErrPINNotUsed
	}
	return k, b, nil
}

// attemptData is the data of an attempt's log entries: the token, then
// the key-value pairs kv.
func attemptData(k TokenKey, kv ...any) map[string]any {
	m := map[string]any{"realm": k.Realm, "token": k.Token}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// admit is an attempt's first transaction: the wipe, the clock high-water
// mark, the bundle's validity, the delay after failures and the window are
// checked — each refusal logged and returned — and the attempt is counted
// as a failure before any KDF work, so that neither parallel attempts nor a
// killed process get a free guess. It returns the counters to try.
func (s *Store) admit(ctx context.Context, k TokenKey, b *bundlefmt.Bundle, now time.Time) (lo, hi uint64, err error) {
	var refused error
	err = s.tx(ctx, func(tx *sql.Tx) error {
		st, err := s.readState(ctx, tx, k)
		if err != nil {
			return err
		}
		refuse := func(e error) error {
			refused = e
			return s.log(ctx, tx, now, "verify.refused", k.User, attemptData(k, "reason", reason(e)))
		}
		if st.wiped != 0 {
			return refuse(fmt.Errorf("%w: %s's entries on this device were wiped at %s: the user must authenticate online, and the device needs a new bundle",
				ErrWiped, ident.Clip(k.User), time.UnixMicro(st.wiped).UTC().Format(time.RFC3339)))
		}
		if b == nil {
			return fmt.Errorf("%w: token state of %s has no bundle and is not wiped", ErrCorrupt, k)
		}
		if err := s.clock(ctx, tx, now); err != nil {
			if errors.Is(err, ErrClockBack) {
				return refuse(err)
			}
			return err
		}
		switch clockguard.Window(now, b.NotBefore, b.NotAfter, s.policy.ClockTolerance) {
		case clockguard.Before:
			return refuse(fmt.Errorf("%w: the bundle is valid from %s", ErrOutOfValidity, b.NotBefore.UTC().Format(time.RFC3339)))
		case clockguard.After:
			return refuse(fmt.Errorf("%w: the bundle expired at %s: sync or import a new one", ErrOutOfValidity, b.NotAfter.UTC().Format(time.RFC3339)))
		}
		if until := time.UnixMicro(st.lockedUntil); now.Before(until) {
			return refuse(fmt.Errorf("%w: %d failed attempts; try again in %s", ErrLocked, st.failures, (until.Sub(now) + time.Second - 1).Truncate(time.Second)))
		}
		if lo, hi, err = s.window(b, st, now); err != nil {
			return refuse(err)
		}
		fails := st.failures + 1
		if _, err := tx.ExecContext(ctx, `UPDATE field_tokens SET failures = ?, locked_until_us = ? WHERE realm = ? AND usr = ? AND token = ?`,
			fails, now.Add(s.policy.Delay(fails)).UnixMicro(), k.Realm, k.User, k.Token); err != nil {
			return err
		}
		return s.log(ctx, tx, now, "verify.attempt", k.User, attemptData(k, "serial", b.Serial, "from", lo, "to", hi))
	})
	if err == nil {
		err = refused
	}
	return lo, hi, err
}

// settle is an attempt's second transaction, the outcome of the KDF work
// (tryErr nil: counter matched and released release). It runs even if ctx
// was cancelled, so that the counted attempt is closed in the log. A match
// above the last used counter becomes the last used one and clears the
// failures; anything else stays a failure, sets the next delay, and at
// Policy.MaxFailures wipes every bundle of the user on this device.
func (s *Store) settle(ctx context.Context, k TokenKey, b *bundlefmt.Bundle, counter uint64, release []byte, tryErr error) (*Result, error) {
	done := s.now()
	octx := context.WithoutCancel(ctx)
	var res *Result
	var outcome error
	err := s.tx(octx, func(tx *sql.Tx) error {
		st, err := s.readState(octx, tx, k)
		if err != nil {
			return err
		}
		if st.wiped != 0 {
			outcome = fmt.Errorf("%w: while this attempt ran", ErrWiped)
			return nil
		}
		if tryErr == nil && int64(counter) > st.lastUsed {
			if _, err := tx.ExecContext(octx, `UPDATE field_tokens SET last_used = ?, failures = 0, locked_until_us = 0 WHERE realm = ? AND usr = ? AND token = ?`,
				int64(counter), k.Realm, k.User, k.Token); err != nil {
				return err
			}
			res = &Result{TokenKey: k, Type: b.OTP.Type, Counter: counter, Serial: b.Serial, bundle: b, release: release}
			return s.log(octx, tx, done, "verify.ok", k.User, attemptData(k, "serial", b.Serial, "counter", counter))
		}
		why := "wrong_code"
		switch {
		case tryErr == nil:
			why = "replayed" // matched a counter a concurrent attempt used first
		case ctx.Err() != nil:
			why = "interrupted"
		}
		outcome, err = s.fail(octx, tx, k, st, done, why)
		return err
	})
	if err != nil {
		clear(release)
		return nil, err
	}
	if res == nil {
		clear(release)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, outcome
	}
	return res, nil
}

// fail records, inside tx, an attempt that stays a failure (why: wrong_code,
// replayed or interrupted; st.failures already counts it): at
// Policy.MaxFailures it wipes the user's bundles, else it sets the next
// delay. It returns the error the attempt answers.
func (s *Store) fail(ctx context.Context, tx *sql.Tx, k TokenKey, st tokenState, done time.Time, why string) (error, error) {
	if st.failures >= s.policy.MaxFailures {
		if err := s.log(ctx, tx, done, "verify.fail", k.User, attemptData(k, "reason", why, "failures", st.failures)); err != nil {
			return nil, err
		}
		n, err := s.wipe(ctx, tx, k, done)
		if err != nil {
			return nil, err
		}
		return fmt.Errorf("%w: that was failure %d of %d, so %d bundle(s) of %s on this device were deleted: the user must authenticate online",
			ErrWiped, st.failures, s.policy.MaxFailures, n, ident.Clip(k.User)), nil
	}
	delay := s.policy.Delay(st.failures)
	if _, err := tx.ExecContext(ctx, `UPDATE field_tokens SET locked_until_us = ? WHERE realm = ? AND usr = ? AND token = ?`,
		done.Add(delay).UnixMicro(), k.Realm, k.User, k.Token); err != nil {
		return nil, err
	}
	outcome := fmt.Errorf("%w (failure %d of %d before this user's entries are wiped", ErrWrongCode, st.failures, s.policy.MaxFailures)
	if delay > 0 {
		outcome = fmt.Errorf("%w; wait %s before the next attempt)", outcome, delay)
	} else {
		outcome = fmt.Errorf("%w)", outcome)
	}
	if why == "replayed" {
		outcome = fmt.Errorf("%w: the code was already used", ErrWrongCode)
	}
	return outcome, s.log(ctx, tx, done, "verify.fail", k.User, attemptData(k, "reason", why, "failures", st.failures, "retry_after", delay.Seconds()))
}

// wipe deletes every bundle of k's user (in k's realm) and marks their token
// states wiped, inside tx. It returns how many bundles it deleted.
func (s *Store) wipe(ctx context.Context, tx *sql.Tx, k TokenKey, now time.Time) (int64, error) {
	r, err := tx.ExecContext(ctx, `DELETE FROM field_bundles WHERE realm = ? AND usr = ?`, k.Realm, k.User)
	if err != nil {
		return 0, err
	}
	n, _ := r.RowsAffected()
	if _, err := tx.ExecContext(ctx, `UPDATE field_tokens SET wiped_us = ? WHERE realm = ? AND usr = ?`, now.UnixMicro(), k.Realm, k.User); err != nil {
		return 0, err
	}
	return n, s.log(ctx, tx, now, "wipe", k.User, map[string]any{"realm": k.Realm, "token": k.Token, "bundles": n, "failures": s.policy.MaxFailures})
}

// AdvanceUsed raises the last used counter or step of a token to at least
// counter (max semantics: it never goes back), logging the change: the call
// the sync client makes for codes used online. It reports whether anything changed.
func (s *Store) AdvanceUsed(ctx context.Context, k TokenKey, counter uint64, source string) (bool, error) {
	if counter > bundlefmt.MaxCounter {
		return false, fmt.Errorf("offline: counter %d out of range", counter)
	}
	now := s.now()
	changed := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, `UPDATE field_tokens SET last_used = ? WHERE realm = ? AND usr = ? AND token = ? AND last_used < ?`,
			int64(counter), k.Realm, k.User, k.Token, int64(counter))
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return nil
		}
		changed = true
		return s.log(ctx, tx, now, "state.advance", k.User, map[string]any{"realm": k.Realm, "token": k.Token, "last_used": counter, "source": source})
	})
	return changed, err
}
