package store

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
)

// Field-device sync (docs/sync.md). Its storage is a separate interface so
// that the core contract (Store) stays small: every store Open returns also
// implements SyncStore,
//
//	ss, ok := st.(store.SyncStore)
//
// and internal/fieldsync, which holds the rules, is its one caller. The
// tables are those of migration 0002.

// Device states.
const (
	DevicePending = "pending" // created with an enrolment code, no key yet
	DeviceActive  = "active"  // may sync
	DeviceRevoked = "revoked" // refused for ever
)

// Device is a registered field device: its Ed25519 public key, and how far
// the server has got with its log.
type Device struct {
	Realm string
	ID    string
	// Status is DevicePending, DeviceActive or DeviceRevoked.
	Status string
	// PublicKey and KeyID (keys.KeyID of it); empty while pending.
	PublicKey []byte
	KeyID     string
	// EnrolHash is the SHA-256 of the one-time enrolment code of a pending
	// device, valid until EnrolUntil.
	EnrolHash  []byte
	EnrolUntil time.Time
	CreatedAt  time.Time
	RevokedAt  time.Time
	// AckedSeq and AckedHash are the newest entry of the device's log the
	// server has recorded (0 and nil for none).
	AckedSeq  uint64
	AckedHash []byte
	// UploadSerial and UploadHash are the serial and SHA-256 of the last
	// upload applied: a later upload needs a higher serial, and the very
	// same bytes again are a retry.
	UploadSerial uint64
	UploadHash   []byte
	LastSync     time.Time
}

// DeviceToken is what the server knows of one token on one device, learnt
// from the device's log and state: the bundle it imported last, the highest
// counter it accepted, what it reported.
type DeviceToken struct {
	Realm, Device, UserID, TokenID string
	// The bundle of the device log's latest "import" entry.
	Serial      uint64
	Type        string
	First, Last uint64
	NotAfter    time.Time
	// OfflineUsed is the highest counter the device's log accepted (-1
	// none); UsedSerial the serial of the bundle that accepted it.
	OfflineUsed int64
	UsedSerial  uint64
	// ReportedUsed, Failures and Wiped are the device's last state report.
	ReportedUsed int64
	Failures     int
	Wiped        bool
	UpdatedAt    time.Time
}

// OfflineUse is a counter (or step) a device accepted offline.
type OfflineUse struct {
	Realm, UserID, TokenID string
	Counter                uint64
	Device                 string
	DeviceSeq, AuditSeq    uint64
	At                     time.Time
}

// Refill is a bundle the server issued to a device because the bundle with
// serial FromSerial ran low. Bundle is the file itself, kept so that a lost
// answer gets the same bundle again rather than a second one.
type Refill struct {
	Realm, Device, UserID, TokenID string
	FromSerial, Serial             uint64
	Bundle                         []byte
	IssuedAt                       time.Time
}

// MaxRefillLen bounds a stored refill bundle.
const MaxRefillLen = 16 << 20

// IssuedBundle is the server's record of a bundle it issued to a device
// (migration 0003): sync accepts a device's events and state for a token
// only within the bundles recorded here for that device, never on the
// device's word. First..Last are counters (HOTP) or steps (TOTP).
type IssuedBundle struct {
	Realm, Device, UserID, TokenID string
	Serial                         uint64
	// Type is "hotp" or "totp".
	Type        string
	First, Last uint64
	NotAfter    time.Time
	// PIN: the user's PIN is mixed into the entries; Secrets: how many
	// static secrets the bundle carries.
	PIN      bool
	Secrets  int
	IssuedAt time.Time
}

// SyncStore stores devices and the state sync reconciles.
type SyncStore interface {
	// CreateDevice stores d. ErrExists when the id (in any realm) or the
	// key id is taken; ErrNotFound when the realm does not exist.
	CreateDevice(ctx context.Context, d Device) error
	// GetDevice finds a device by id (ids are unique across realms, as
	// bundles name a device by id alone).
	GetDevice(ctx context.Context, id string) (Device, error)
	// GetDeviceByKeyID finds a device by its key id.
	GetDeviceByKeyID(ctx context.Context, keyID string) (Device, error)
	// ListDevices returns up to limit devices of realm with ID > after, by ID.
	ListDevices(ctx context.Context, realm, after string, limit int) ([]Device, error)
	// ActivateDevice gives a pending device its key, if and only if it is
	// still pending, its enrolment hash is enrolHash and now is before
	// EnrolUntil (one conditional UPDATE: a code works once). ErrNotFound
	// otherwise; ErrExists when another device has that key.
	ActivateDevice(ctx context.Context, id string, enrolHash, pub []byte, keyID string, now time.Time) error
	// ResetEnrolment gives a still pending device a new enrolment hash and
	// expiry (ErrNotFound when it is not pending).
	ResetEnrolment(ctx context.Context, realm, id string, enrolHash []byte, until time.Time) error
	// RevokeDevice marks the device revoked (idempotent; ErrNotFound).
	RevokeDevice(ctx context.Context, realm, id string, now time.Time) error
	// ListDeviceTokens returns what the server knows of the device's tokens.
	ListDeviceTokens(ctx context.Context, realm, device string) ([]DeviceToken, error)
	// GetRefill and PutRefill keep issued refills (PutRefill: ErrExists
	// when one for that token and FromSerial exists).
	GetRefill(ctx context.Context, realm, device, user, token string, fromSerial uint64) (Refill, error)
	PutRefill(ctx context.Context, r Refill) error
	// CountRefills returns how many refills of the token were issued to
	// device at or after since (the refill rate's count).
	CountRefills(ctx context.Context, realm, device, user, token string, since time.Time) (int, error)
	// PutIssuedBundle records a bundle issued to a device, before it is
	// handed out (ErrExists when that serial is recorded for that token and
	// device).
	PutIssuedBundle(ctx context.Context, b IssuedBundle) error
	// OfflineUses returns the recorded offline acceptances of a token's
	// counter (or TOTP step), oldest first: one indexed lookup.
	OfflineUses(ctx context.Context, realm, user, token string, counter uint64) ([]OfflineUse, error)
	// FindAudit returns up to limit (1..MaxListLimit) audit entries of kind
	// (and subject, unless ""), with Seq < before (0: no bound), newest first.
	FindAudit(ctx context.Context, kind, subject string, before uint64, limit int) ([]eventlog.Entry, error)
	// SyncDevice runs fn in one transaction with the device's row locked
	// (its LastSync set to now): everything fn does through tx commits
	// together or not at all. fn may be run again when the transaction lost
	// a race (another audit appender), so it must not act outside tx. It
	// returns ErrNotFound for an unknown device, and fn's error.
	SyncDevice(ctx context.Context, realm, id string, now time.Time, fn func(tx SyncTx) error) error
}

// SyncTx is what fn of SyncDevice may do.
type SyncTx interface {
	// Device is the device's row as locked.
	Device() Device
	// SaveDevice records the new acknowledged entry and the applied upload.
	SaveDevice(ackedSeq uint64, ackedHash []byte, uploadSerial uint64, uploadHash []byte) error
	// LockToken locks a token's row until the transaction ends and returns
	// it (ErrNotFound). Lock tokens in a fixed order (realm, user, id) to
	// avoid deadlocks with other syncs.
	LockToken(realm, user, id string) (Token, error)
	// RaiseToken is AdvanceToken's rule inside the transaction: it sets
	// LastUsed = used if the token is unused or LastUsed < used, and
	// reports whether it did.
	RaiseToken(realm, user, id string, used int64) (bool, error)
	// DeviceToken returns the device's record of a token (found false when none).
	DeviceToken(realm, user, token string) (DeviceToken, bool, error)
	// PutDeviceToken inserts or replaces it.
	PutDeviceToken(t DeviceToken) error
	// IssuedBundle returns the record of bundle serial of a token, issued
	// to this device (found false when the server issued no such bundle).
	IssuedBundle(realm, user, token string, serial uint64) (IssuedBundle, bool, error)
	// IssuedSpan returns the lowest First and the highest Last of the
	// bundles of a token issued to this device (found false when none).
	IssuedSpan(realm, user, token string) (first, last uint64, found bool, err error)
	// OfflineUses returns the recorded offline acceptances of counter.
	OfflineUses(realm, user, token string, counter uint64) ([]OfflineUse, error)
	// AddOfflineUses records acceptances (an existing one is left as it is).
	AddOfflineUses(uses []OfflineUse) error
	// FindAudit is SyncStore.FindAudit inside the transaction.
	FindAudit(kind, subject string, before uint64, limit int) ([]eventlog.Entry, error)
	// AppendAudit chains entries after the audit log's last one and returns them stored.
	AppendAudit(entries []eventlog.Entry) ([]eventlog.Entry, error)
	// Roster is the device roster inside this transaction (roster.go): a
	// vouch carried by a log entry is stored with the entry's acknowledgement.
	Roster() RosterTx
}

var _ SyncStore = (*sqlStore)(nil)

var deviceStatuses = []string{DevicePending, DeviceActive, DeviceRevoked}

func checkDevice(d *Device) error {
	if err := first(checkID("realm ID", d.Realm), checkID("device ID", d.ID)); err != nil {
		return err
	}
	ok := false
	for _, s := range deviceStatuses {
		ok = ok || s == d.Status
	}
	switch {
	case !ok:
		return invalid("device status %q (use %s)", ident.Clip(d.Status), strings.Join(deviceStatuses, ", "))
	case d.Status == DevicePending && (len(d.EnrolHash) != 32 || len(d.PublicKey) != 0):
		return invalid("a pending device needs a 32-byte enrolment hash and no key")
	case d.Status != DevicePending && (len(d.PublicKey) != ed25519.PublicKeySize || d.KeyID == ""):
		return invalid("an active device needs its %d-byte Ed25519 key and key id", ed25519.PublicKeySize)
	}
	return checkText("key ID", d.KeyID)
}

func nullText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

const deviceColumns = `realm, id, status, public_key, key_id, enrol_hash, enrol_until_us, created_us, revoked_us,
	acked_seq, acked_hash, upload_serial, upload_hash, last_sync_us`

func scanDevice(r row) (Device, error) {
	var d Device
	var kid sql.NullString
	var until, created, revoked, acked, serial, last int64
	if err := r.Scan(&d.Realm, &d.ID, &d.Status, &d.PublicKey, &kid, &d.EnrolHash, &until, &created, &revoked,
		&acked, &d.AckedHash, &serial, &d.UploadHash, &last); err != nil {
		return Device{}, err
	}
	d.KeyID = kid.String
	d.EnrolUntil, d.CreatedAt, d.RevokedAt, d.LastSync = fromMicros(until), fromMicros(created), fromMicros(revoked), fromMicros(last)
	d.AckedSeq, d.UploadSerial = uint64(acked), uint64(serial)
	return d, nil
}

func (s *sqlStore) CreateDevice(ctx context.Context, d Device) error {
	if err := checkDevice(&d); err != nil {
		return err
	}
	_, err := s.exec(ctx, `INSERT INTO devices (`+deviceColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		d.Realm, d.ID, d.Status, nullBytes(d.PublicKey), nullText(d.KeyID), nullBytes(d.EnrolHash), micros(d.EnrolUntil),
		s.stamp(d.CreatedAt), micros(d.RevokedAt), int64(d.AckedSeq), nullBytes(d.AckedHash), int64(d.UploadSerial),
		nullBytes(d.UploadHash), micros(d.LastSync))
	switch err = classify(s.e, err); {
	case errors.Is(err, ErrExists):
		return fmt.Errorf("%w: device %q, or a device with the same key", ErrExists, d.ID)
	case errors.Is(err, errForeignKey):
		return fmt.Errorf("%w: realm %q", ErrNotFound, d.Realm)
	}
	return err
}

func (s *sqlStore) GetDevice(ctx context.Context, id string) (Device, error) {
	d, err := scanDevice(s.e.reader().queryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1`, id))
	if err != nil {
		return Device{}, s.noRows(err, "device %q", id)
	}
	return d, nil
}

func (s *sqlStore) GetDeviceByKeyID(ctx context.Context, keyID string) (Device, error) {
	d, err := scanDevice(s.e.reader().queryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE key_id = $1`, keyID))
	if err != nil {
		return Device{}, s.noRows(err, "device with key %q", keyID)
	}
	return d, nil
}

func (s *sqlStore) ListDevices(ctx context.Context, realm, after string, limit int) ([]Device, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	rs, err := s.e.reader().query(ctx, `SELECT `+deviceColumns+` FROM devices WHERE realm = $1 AND id > $2 ORDER BY id LIMIT $3`,
		realm, after, int64(limit))
	return collect(s, rs, err, scanDevice)
}

func (s *sqlStore) ActivateDevice(ctx context.Context, id string, enrolHash, pub []byte, keyID string, now time.Time) error {
	if len(pub) != ed25519.PublicKeySize || keyID == "" || len(enrolHash) != 32 {
		return invalid("activating a device needs its Ed25519 key, key id and enrolment hash")
	}
	n, err := s.exec(ctx, `UPDATE devices SET status = $1, public_key = $2, key_id = $3, enrol_hash = NULL, enrol_until_us = 0
		WHERE id = $4 AND status = $5 AND enrol_hash = $6 AND enrol_until_us > $7`,
		DeviceActive, pub, keyID, id, DevicePending, enrolHash, micros(now))
	if err = classify(s.e, err); errors.Is(err, ErrExists) {
		return fmt.Errorf("%w: another device has this key", ErrExists)
	}
	return s.mustChange(n, err, "pending device %q with this enrolment code", id)
}

func (s *sqlStore) ResetEnrolment(ctx context.Context, realm, id string, enrolHash []byte, until time.Time) error {
	if len(enrolHash) != 32 {
		return invalid("an enrolment hash has 32 bytes")
	}
	n, err := s.exec(ctx, `UPDATE devices SET enrol_hash = $1, enrol_until_us = $2 WHERE realm = $3 AND id = $4 AND status = $5`,
		enrolHash, micros(until), realm, id, DevicePending)
	return s.mustChange(n, err, "pending device %q in realm %q", id, realm)
}

func (s *sqlStore) RevokeDevice(ctx context.Context, realm, id string, now time.Time) error {
	n, err := s.exec(ctx, `UPDATE devices SET status = $1, revoked_us = CASE WHEN revoked_us = 0 THEN $2 ELSE revoked_us END,
		enrol_hash = NULL WHERE realm = $3 AND id = $4`, DeviceRevoked, micros(now), realm, id)
	return s.mustChange(n, err, "device %q in realm %q", id, realm)
}

const deviceTokenColumns = `realm, device, user_id, token_id, serial, otp_type, first_counter, last_counter, not_after_us,
	offline_used, used_serial, reported_used, failures, wiped, updated_us`

func scanDeviceToken(r row) (DeviceToken, error) {
	var t DeviceToken
	var serial, first, last, notAfter, usedSerial, failures, updated int64
	if err := r.Scan(&t.Realm, &t.Device, &t.UserID, &t.TokenID, &serial, &t.Type, &first, &last, &notAfter,
		&t.OfflineUsed, &usedSerial, &t.ReportedUsed, &failures, &t.Wiped, &updated); err != nil {
		return DeviceToken{}, err
	}
	t.Serial, t.First, t.Last, t.UsedSerial = uint64(serial), uint64(first), uint64(last), uint64(usedSerial)
	t.NotAfter, t.Failures, t.UpdatedAt = fromMicros(notAfter), int(failures), fromMicros(updated)
	return t, nil
}

func (s *sqlStore) ListDeviceTokens(ctx context.Context, realm, device string) ([]DeviceToken, error) {
	rs, err := s.e.reader().query(ctx, `SELECT `+deviceTokenColumns+` FROM device_tokens WHERE realm = $1 AND device = $2
		ORDER BY user_id, token_id`, realm, device)
	return collect(s, rs, err, scanDeviceToken)
}

const refillColumns = `realm, device, user_id, token_id, from_serial, serial, bundle, issued_us`

func (s *sqlStore) GetRefill(ctx context.Context, realm, device, user, token string, fromSerial uint64) (Refill, error) {
	var r Refill
	var from, serial, issued int64
	err := s.e.reader().queryRow(ctx, `SELECT `+refillColumns+` FROM device_refills
		WHERE realm = $1 AND device = $2 AND user_id = $3 AND token_id = $4 AND from_serial = $5`,
		realm, device, user, token, int64(fromSerial)).Scan(&r.Realm, &r.Device, &r.UserID, &r.TokenID, &from, &serial, &r.Bundle, &issued)
	if err != nil {
		return Refill{}, s.noRows(err, "refill of %s/%s on device %q", user, token, device)
	}
	r.FromSerial, r.Serial, r.IssuedAt = uint64(from), uint64(serial), fromMicros(issued)
	return r, nil
}

func (s *sqlStore) PutRefill(ctx context.Context, r Refill) error {
	if err := first(checkID("realm ID", r.Realm), checkID("device ID", r.Device), checkID("user ID", r.UserID), checkID("token ID", r.TokenID)); err != nil {
		return err
	}
	if len(r.Bundle) == 0 || len(r.Bundle) > MaxRefillLen || r.FromSerial > 1<<63-1 || r.Serial > 1<<63-1 {
		return invalid("refill bundle of %d bytes, serials %d/%d", len(r.Bundle), r.FromSerial, r.Serial)
	}
	_, err := s.exec(ctx, `INSERT INTO device_refills (`+refillColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		r.Realm, r.Device, r.UserID, r.TokenID, int64(r.FromSerial), int64(r.Serial), r.Bundle, s.stamp(r.IssuedAt))
	return classify(s.e, err)
}

func (s *sqlStore) CountRefills(ctx context.Context, realm, device, user, token string, since time.Time) (int, error) {
	var n int64
	err := s.e.reader().queryRow(ctx, `SELECT COUNT(*) FROM device_refills
		WHERE realm = $1 AND device = $2 AND user_id = $3 AND token_id = $4 AND issued_us >= $5`,
		realm, device, user, token, micros(since)).Scan(&n)
	return int(n), err
}

const issuedColumns = `realm, device, user_id, token_id, serial, otp_type, first_counter, last_counter, not_after_us, pin, secrets, issued_us`

func checkIssued(b *IssuedBundle) error {
	if err := first(checkID("realm ID", b.Realm), checkID("device ID", b.Device), checkID("user ID", b.UserID), checkID("token ID", b.TokenID)); err != nil {
		return err
	}
	big := uint64(1<<63 - 1)
	switch {
	case b.Type != "hotp" && b.Type != "totp":
		return invalid("issued bundle type %q (use hotp or totp)", ident.Clip(b.Type))
	case b.Serial == 0 || b.Serial > big || b.Last > big || b.First > b.Last:
		return invalid("issued bundle serial %d, range %d..%d", b.Serial, b.First, b.Last)
	case b.Secrets < 0 || b.Secrets > 1<<10:
		return invalid("issued bundle with %d secrets", b.Secrets)
	}
	return nil
}

func (s *sqlStore) PutIssuedBundle(ctx context.Context, b IssuedBundle) error {
	if err := checkIssued(&b); err != nil {
		return err
	}
	_, err := s.exec(ctx, `INSERT INTO issued_bundles (`+issuedColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		b.Realm, b.Device, b.UserID, b.TokenID, int64(b.Serial), b.Type, int64(b.First), int64(b.Last), micros(b.NotAfter),
		b.PIN, int64(b.Secrets), s.stamp(b.IssuedAt))
	if err = classify(s.e, err); errors.Is(err, ErrExists) {
		return fmt.Errorf("%w: bundle serial %d of %s/%s for device %q", ErrExists, b.Serial, b.UserID, b.TokenID, b.Device)
	}
	return err
}

func (t *syncTx) IssuedBundle(realm, user, token string, serial uint64) (IssuedBundle, bool, error) {
	if serial > 1<<63-1 {
		return IssuedBundle{}, false, nil
	}
	var b IssuedBundle
	var ser, first, last, notAfter, secrets, issued int64
	err := t.q.queryRow(t.ctx, `SELECT `+issuedColumns+` FROM issued_bundles
		WHERE realm = $1 AND device = $2 AND user_id = $3 AND token_id = $4 AND serial = $5`, realm, t.d.ID, user, token, int64(serial)).Scan(
		&b.Realm, &b.Device, &b.UserID, &b.TokenID, &ser, &b.Type, &first, &last, &notAfter, &b.PIN, &secrets, &issued)
	if errors.Is(err, sql.ErrNoRows) {
		return IssuedBundle{}, false, nil
	}
	if err != nil {
		return IssuedBundle{}, false, err
	}
	b.Serial, b.First, b.Last, b.Secrets = uint64(ser), uint64(first), uint64(last), int(secrets)
	b.NotAfter, b.IssuedAt = fromMicros(notAfter), fromMicros(issued)
	return b, true, nil
}

func (t *syncTx) IssuedSpan(realm, user, token string) (uint64, uint64, bool, error) {
	var n, lo, hi int64
	err := t.q.queryRow(t.ctx, `SELECT COUNT(*), COALESCE(MIN(first_counter), 0), COALESCE(MAX(last_counter), 0) FROM issued_bundles
		WHERE realm = $1 AND device = $2 AND user_id = $3 AND token_id = $4`, realm, t.d.ID, user, token).Scan(&n, &lo, &hi)
	if err != nil {
		return 0, 0, false, err
	}
	return uint64(lo), uint64(hi), n > 0, nil
}

func (s *sqlStore) FindAudit(ctx context.Context, kind, subject string, before uint64, limit int) ([]eventlog.Entry, error) {
	return findAudit(ctx, s, s.e.reader(), kind, subject, before, limit)
}

func findAudit(ctx context.Context, s *sqlStore, q querier, kind, subject string, before uint64, limit int) ([]eventlog.Entry, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	if before == 0 || before > 1<<63-1 {
		before = 1<<63 - 1
	}
	var rs rows
	var err error
	if subject == "" {
		rs, err = q.query(ctx, `SELECT `+auditColumns+` FROM audit_log WHERE kind = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`,
			kind, int64(before), int64(limit))
	} else {
		rs, err = q.query(ctx, `SELECT `+auditColumns+` FROM audit_log WHERE kind = $1 AND subject = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4`,
			kind, subject, int64(before), int64(limit))
	}
	return collect(s, rs, err, scanAudit)
}

// syncLocks serialises SyncDevice within a process on PostgreSQL: every
// sync appends to the one audit chain, so two at once would only collide on
// its sequence number and retry. (On SQLite the writer goroutine already
// serialises them.)
var syncLocks sync.Map // *sqlStore → *sync.Mutex

func (s *sqlStore) SyncDevice(ctx context.Context, realm, id string, now time.Time, fn func(tx SyncTx) error) error {
	if s.e.name() != "sqlite" {
		mu, _ := syncLocks.LoadOrStore(s, &sync.Mutex{})
		mu.(*sync.Mutex).Lock()
		defer mu.(*sync.Mutex).Unlock()
	}
	return inTx(ctx, s.e, isAuditRace, func(q querier) error {
		n, err := q.exec(ctx, `UPDATE devices SET last_sync_us = $1 WHERE realm = $2 AND id = $3`, micros(now), realm, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%w: device %q in realm %q", ErrNotFound, id, realm)
		}
		d, err := scanDevice(q.queryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE realm = $1 AND id = $2`, realm, id))
		if err != nil {
			return err
		}
		return fn(&syncTx{ctx: ctx, s: s, q: q, d: d})
	})
}

type syncTx struct {
	ctx context.Context
	s   *sqlStore
	q   querier
	d   Device
}

func (t *syncTx) Device() Device { return t.d }

func (t *syncTx) SaveDevice(ackedSeq uint64, ackedHash []byte, uploadSerial uint64, uploadHash []byte) error {
	if ackedSeq > 1<<63-1 || uploadSerial > 1<<63-1 || len(ackedHash) > 64 || len(uploadHash) > 64 {
		return invalid("device sync state out of range")
	}
	_, err := t.q.exec(t.ctx, `UPDATE devices SET acked_seq = $1, acked_hash = $2, upload_serial = $3, upload_hash = $4
		WHERE realm = $5 AND id = $6`, int64(ackedSeq), nullBytes(ackedHash), int64(uploadSerial), nullBytes(uploadHash), t.d.Realm, t.d.ID)
	if err == nil {
		t.d.AckedSeq, t.d.AckedHash, t.d.UploadSerial, t.d.UploadHash = ackedSeq, ackedHash, uploadSerial, uploadHash
	}
	return err
}

func (t *syncTx) LockToken(realm, user, id string) (Token, error) {
	// A write that changes nothing takes the row lock (PostgreSQL,
	// CockroachDB); SQLite's write lock is already held. Concurrent online
	// acceptances of this token wait until the sync commits, then see its values.
	if _, err := t.q.exec(t.ctx, `UPDATE tokens SET used = used WHERE realm = $1 AND user_id = $2 AND id = $3`, realm, user, id); err != nil {
		return Token{}, err
	}
	tok, err := scanToken(t.q.queryRow(t.ctx, `SELECT `+tokenColumns+` FROM tokens WHERE realm = $1 AND user_id = $2 AND id = $3`, realm, user, id))
	if err != nil {
		return Token{}, t.s.noRows(err, "token %q of user %q in realm %q", id, user, realm)
	}
	return tok, nil
}

// RaiseToken runs the statement of AdvanceToken (sql.go), the replay rule,
// inside the sync's transaction.
func (t *syncTx) RaiseToken(realm, user, id string, used int64) (bool, error) {
	if used < 0 {
		return false, invalid("step or counter %d is negative", used)
	}
	n, err := t.q.exec(t.ctx, `UPDATE tokens SET last_used = $1, used = TRUE WHERE realm = $2 AND user_id = $3 AND id = $4 AND (used = FALSE OR last_used < $1)`,
		used, realm, user, id)
	return n > 0, err
}

func (t *syncTx) DeviceToken(realm, user, token string) (DeviceToken, bool, error) {
	dt, err := scanDeviceToken(t.q.queryRow(t.ctx, `SELECT `+deviceTokenColumns+` FROM device_tokens
		WHERE realm = $1 AND device = $2 AND user_id = $3 AND token_id = $4`, realm, t.d.ID, user, token))
	if errors.Is(err, sql.ErrNoRows) {
		return DeviceToken{Realm: realm, Device: t.d.ID, UserID: user, TokenID: token, OfflineUsed: -1, ReportedUsed: -1}, false, nil
	}
	return dt, err == nil, err
}

func (t *syncTx) PutDeviceToken(dt DeviceToken) error {
	if err := first(checkID("realm ID", dt.Realm), checkID("user ID", dt.UserID), checkID("token ID", dt.TokenID), checkText("OTP type", dt.Type)); err != nil {
		return err
	}
	if dt.Device != t.d.ID || dt.Realm != t.d.Realm {
		return invalid("device token of %q/%q in the sync of %q/%q", dt.Realm, dt.Device, t.d.Realm, t.d.ID)
	}
	big := uint64(1<<63 - 1)
	if dt.Serial > big || dt.First > big || dt.Last > big || dt.UsedSerial > big || dt.OfflineUsed < -1 || dt.ReportedUsed < -1 || dt.Failures < 0 {
		return invalid("device token values out of range")
	}
	_, err := t.q.exec(t.ctx, `INSERT INTO device_tokens (`+deviceTokenColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
		ON CONFLICT (realm, device, user_id, token_id) DO UPDATE SET serial = excluded.serial, otp_type = excluded.otp_type,
		first_counter = excluded.first_counter, last_counter = excluded.last_counter, not_after_us = excluded.not_after_us,
		offline_used = excluded.offline_used, used_serial = excluded.used_serial, reported_used = excluded.reported_used,
		failures = excluded.failures, wiped = excluded.wiped, updated_us = excluded.updated_us`,
		dt.Realm, dt.Device, dt.UserID, dt.TokenID, int64(dt.Serial), dt.Type, int64(dt.First), int64(dt.Last), micros(dt.NotAfter),
		dt.OfflineUsed, int64(dt.UsedSerial), dt.ReportedUsed, int64(dt.Failures), dt.Wiped, t.s.stamp(dt.UpdatedAt))
	return err
}

func (t *syncTx) OfflineUses(realm, user, token string, counter uint64) ([]OfflineUse, error) {
	return offlineUses(t.ctx, t.s, t.q, realm, user, token, counter)
}

func (s *sqlStore) OfflineUses(ctx context.Context, realm, user, token string, counter uint64) ([]OfflineUse, error) {
	return offlineUses(ctx, s, s.e.reader(), realm, user, token, counter)
}

func offlineUses(ctx context.Context, s *sqlStore, q querier, realm, user, token string, counter uint64) ([]OfflineUse, error) {
	if counter > 1<<63-1 {
		return nil, nil
	}
	rs, err := q.query(ctx, `SELECT realm, user_id, token_id, counter, device, device_seq, audit_seq, at_us FROM offline_uses
		WHERE realm = $1 AND user_id = $2 AND token_id = $3 AND counter = $4 ORDER BY audit_seq`, realm, user, token, int64(counter))
	return collect(s, rs, err, func(r row) (OfflineUse, error) {
		var u OfflineUse
		var c, ds, as, at int64
		if err := r.Scan(&u.Realm, &u.UserID, &u.TokenID, &c, &u.Device, &ds, &as, &at); err != nil {
			return u, err
		}
		u.Counter, u.DeviceSeq, u.AuditSeq, u.At = uint64(c), uint64(ds), uint64(as), fromMicros(at)
		return u, nil
	})
}

const offlineUseCols = 8

// multiRowInserts returns, for k = 0, 1, …, the statement inserting 2^k rows
// of cols columns into head ("INSERT INTO t (…) VALUES "), followed by tail.
// placeholder numbers each argument: "$N" for PostgreSQL; SQLite gets "?",
// because it looks named parameters ("$N" is one) up by name in a list, at
// a cost growing with the square of their number.
func multiRowInserts(head, tail string, cols int, placeholder func(n int) string) []string {
	var out []string
	for n := 1; n <= maxBatch; n *= 2 {
		var b strings.Builder
		b.WriteString(head)
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(")
			for j := range cols {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString(placeholder(cols*i + j + 1))
			}
			b.WriteString(")")
		}
		b.WriteString(tail)
		out = append(out, b.String())
	}
	return out
}

func dollar(n int) string { return fmt.Sprintf("$%d", n) }
func question(int) string { return "?" }

const offlineUseHead = `INSERT INTO offline_uses (realm, user_id, token_id, counter, device, device_seq, audit_seq, at_us) VALUES `
const offlineUseTail = ` ON CONFLICT (realm, user_id, token_id, counter, device) DO NOTHING`

// The multi-row INSERTs of a sync, per engine.
var (
	offlineUseInserts       = multiRowInserts(offlineUseHead, offlineUseTail, offlineUseCols, dollar)
	offlineUseInsertsSQLite = multiRowInserts(offlineUseHead, offlineUseTail, offlineUseCols, question)
	auditInsertsSQLite      = multiRowInserts(`INSERT INTO audit_log (`+auditColumns+`) VALUES `, "", 8, question)
)

func (t *syncTx) AddOfflineUses(uses []OfflineUse) error {
	args := make([]any, 0, offlineUseCols*len(uses))
	for _, u := range uses {
		if err := first(checkID("realm ID", u.Realm), checkID("user ID", u.UserID), checkID("token ID", u.TokenID), checkID("device ID", u.Device)); err != nil {
			return err
		}
		if u.Counter > 1<<63-1 || u.DeviceSeq > 1<<63-1 || u.AuditSeq > 1<<63-1 {
			return invalid("offline use out of range")
		}
		args = append(args, u.Realm, u.UserID, u.TokenID, int64(u.Counter), u.Device, int64(u.DeviceSeq), int64(u.AuditSeq), t.s.stamp(u.At))
	}
	stmts := offlineUseInserts
	if t.s.e.name() == "sqlite" {
		stmts = offlineUseInsertsSQLite
	}
	return insertChunks(t.ctx, t.q, stmts, offlineUseCols, args)
}

// insertChunks runs multi-row INSERTs of power-of-two sizes (stmts[k]
// inserts 2^k rows of cols columns) over args.
func insertChunks(ctx context.Context, q querier, stmts []string, cols int, args []any) error {
	_, err := insertChunksCount(ctx, q, stmts, cols, args)
	return err
}

// insertChunksCount is insertChunks returning how many rows were inserted.
func insertChunksCount(ctx context.Context, q querier, stmts []string, cols int, args []any) (int64, error) {
	var total int64
	for len(args) > 0 {
		n, k := 1, 0
		for 2*n*cols <= len(args) && 2*n <= maxBatch {
			n *= 2
			k++
		}
		done, err := q.exec(ctx, stmts[k], args[:cols*n]...)
		if err != nil {
			return total, err
		}
		total += done
		args = args[cols*n:]
	}
	return total, nil
}

func (t *syncTx) FindAudit(kind, subject string, before uint64, limit int) ([]eventlog.Entry, error) {
	return findAudit(t.ctx, t.s, t.q, kind, subject, before, limit)
}

func (t *syncTx) AppendAudit(entries []eventlog.Entry) ([]eventlog.Entry, error) {
	return appendAuditIn(t.ctx, t.s, t.q, entries)
}

// appendAuditIn chains entries after the audit log's last one inside the
// transaction q belongs to (SyncTx.AppendAudit, SiteTx.AppendAudit).
func appendAuditIn(ctx context.Context, s *sqlStore, q querier, entries []eventlog.Entry) ([]eventlog.Entry, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	var prev *eventlog.Entry
	last, err := scanAudit(q.queryRow(ctx, `SELECT `+auditColumns+` FROM audit_log ORDER BY seq DESC LIMIT 1`))
	switch {
	case err == nil:
		prev = &last
	case !errors.Is(err, sql.ErrNoRows):
		return nil, err
	}
	out := make([]eventlog.Entry, len(entries))
	args := make([]any, 0, 8*len(entries))
	for i, e := range entries {
		if e.Time.IsZero() {
			e.Time = s.now()
		}
		n, err := eventlog.Next(prev, e, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		out[i] = n
		prev = &out[i]
		args = append(args, int64(n.Seq), n.Time.UnixMicro(), n.Kind, n.Actor, n.Subject, nullBytes(n.Data), n.Prev, n.Hash)
	}
	// On PostgreSQL a large upload goes in with COPY: one round trip and no
	// statement with thousands of parameters to parse.
	if pq, ok := q.(pgQuerier); ok && len(entries) > 64 {
		if tx, ok := pq.db.(pgx.Tx); ok {
			rows := make([][]any, len(out))
			for i := range out {
				rows[i] = args[8*i : 8*i+8]
			}
			_, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_log"}, auditColumnList, pgx.CopyFromRows(rows))
			return out, err
		}
	}
	stmts := auditInserts
	if s.e.name() == "sqlite" {
		stmts = auditInsertsSQLite
	}
	return out, insertChunks(ctx, q, stmts, 8, args)
}

// auditColumnList is auditColumns as COPY wants them.
var auditColumnList = strings.Split(auditColumns, ", ")
