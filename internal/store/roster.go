package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
)

// The device roster (docs/onboarding.md). Like DeliveryStore, an interface
// of its own so that the core contract stays small: every store Open
// returns also implements RosterStore,
//
//	rs, ok := st.(store.RosterStore)
//
// and internal/roster, which holds the rules (states, expiry, holds, the
// key-mismatch incident), is its one caller. The store knows no state
// machine: it writes what it is given inside a transaction the roster
// runs, with the audit entries of the change in the same transaction. A
// sync reaches the same operations inside its own transaction through
// SyncTx.Roster, so that a vouch and the acknowledgement of the log entry
// carrying it commit together (exactly once). The tables are migration
// 0008's.

// Vouch is one staff device's vouch for a device, as its signed log said.
type Vouch struct {
	Realm string
	// StaffDevice and DeviceSeq name the log entry: together with Realm
	// they are the vouch's key.
	StaffDevice string
	DeviceSeq   uint64
	Serial      string
	Model       string
	// KeyType is the label's key type ("p256", "ed25519"); SPKI the key in
	// PKIX SubjectPublicKeyInfo DER.
	KeyType  string
	SPKI     []byte
	Site     string
	Location string
	// VouchedAt is the staff device's clock; ReceivedAt the server's at sync.
	VouchedAt, ReceivedAt, ExpiresAt time.Time
	// State and Reason are internal/roster's names, stored as they are.
	State, Reason string
	UpdatedAt     time.Time
}

// ExpectedSerial is a serial an administrator expects (a purchase order's).
type ExpectedSerial struct {
	Realm, Serial, OrderRef string
	AddedAt                 time.Time
}

// Bounds of roster records.
const (
	MaxRosterSPKI   = 512
	MaxRosterText   = 128 // key type, location, state, order reference
	MaxRosterReason = 512
	// MaxExpectedBatch bounds the serials one PutExpected call adds.
	MaxExpectedBatch = 100000
	// MaxVouchesOf bounds the serials of one VouchesOf call.
	MaxVouchesOf = 500
)

// RosterStore stores the roster.
type RosterStore interface {
	// RosterTx runs fn in one transaction: what fn does through tx commits
	// together (with its audit entries) or not at all. fn may be run again
	// when the transaction lost a race on the audit chain, so it must not
	// act outside tx. fn's own error is returned and nothing is written.
	RosterTx(ctx context.Context, fn func(tx RosterTx) error) error
	// GetVouches returns the vouches for realm's serial, oldest first by
	// the staff device's clock (none: an empty list, not an error).
	GetVouches(ctx context.Context, realm, serial string) ([]Vouch, error)
	// ListVouches returns the vouches of up to limit (1..MaxListLimit) of
	// realm's serials greater than after, ordered by serial, then staff
	// device and sequence number.
	ListVouches(ctx context.Context, realm, after string, limit int) ([]Vouch, error)
}

// RosterTx is what a roster transaction (RosterStore.RosterTx or a sync's
// SyncTx.Roster) may do.
type RosterTx interface {
	// Vouches returns the vouches for realm's serial, as GetVouches.
	Vouches(realm, serial string) ([]Vouch, error)
	// VouchesOf returns the vouches for any of realm's serials (at most
	// MaxVouchesOf of them), in no particular order: one query for a sync's
	// batch.
	VouchesOf(realm string, serials []string) ([]Vouch, error)
	// PutVouches stores vs in few statements, each unless a vouch with its
	// realm, staff device and sequence number exists, and returns how many
	// it stored. It stores none when one is invalid (ErrInvalid; see
	// CheckVouch), or its realm does not exist.
	PutVouches(vs []Vouch) (int, error)
	// SetVouchState sets state, reason and UpdatedAt of one vouch provided
	// its stored state is from, and reports whether it did.
	SetVouchState(realm, staffDevice string, seq uint64, from, to, reason string, at time.Time) (bool, error)
	// ExpectedOf returns which of serials (at most MaxVouchesOf) realm
	// expects; AnyExpected whether it expects any serial at all.
	ExpectedOf(realm string, serials []string) ([]string, error)
	AnyExpected(realm string) (bool, error)
	// PutExpected adds serials (at most MaxExpectedBatch) to realm's
	// expected ones; serials already expected are left as they are. It
	// returns how many were added.
	PutExpected(realm string, serials []string, orderRef string, at time.Time) (int, error)
	// Voucher reports whether device may vouch in realm; SetVoucher grants
	// or withdraws that, reporting whether anything changed.
	Voucher(realm, device string) (bool, error)
	SetVoucher(realm, device string, allowed bool, at time.Time) (bool, error)
	// AppendAudit chains entries after the audit log's last one.
	AppendAudit(entries ...eventlog.Entry) ([]eventlog.Entry, error)
}

var _ RosterStore = (*sqlStore)(nil)

// CheckVouch reports whether PutVouches would refuse v as invalid (an error
// wrapping ErrInvalid saying why), so that a caller storing many vouches
// at once can set the bad ones apart first.
func CheckVouch(v Vouch) error { return checkVouch(&v) }

func checkVouch(v *Vouch) error {
	if err := first(checkID("realm ID", v.Realm), checkID("device ID", v.StaffDevice), checkSerial(v.Serial),
		wrapInvalid(ident.CheckName("model", v.Model)), checkID("site", v.Site)); err != nil {
		return err
	}
	switch {
	case v.DeviceSeq == 0 || v.DeviceSeq > 1<<63-1:
		return invalid("vouch sequence number %d out of range", v.DeviceSeq)
	case len(v.SPKI) == 0 || len(v.SPKI) > MaxRosterSPKI:
		return invalid("vouch key of %d bytes (1 to %d)", len(v.SPKI), MaxRosterSPKI)
	case v.KeyType == "" || len(v.KeyType) > MaxRosterText || len(v.Location) > MaxRosterText:
		return invalid("vouch key type or location too long")
	case v.State == "" || len(v.State) > MaxRosterText || len(v.Reason) > MaxRosterReason:
		return invalid("vouch state %q or reason out of bounds", v.State)
	case v.VouchedAt.IsZero() || v.ExpiresAt.IsZero():
		return invalid("a vouch needs its time and expiry")
	}
	return first(checkText("key type", v.KeyType), checkText("location", v.Location), checkText("reason", v.Reason))
}

// checkSerial checks a device serial with the label's rule (ident.CheckName).
func checkSerial(sn string) error { return wrapInvalid(ident.CheckName("serial", sn)) }

const vouchColumns = `realm, staff_device, device_seq, serial, model, key_type, spki, site, location, vouched_us, received_us, expires_us, state, reason, updated_us`

func scanVouch(r row) (Vouch, error) {
	var v Vouch
	var seq, vouched, received, expires, updated int64
	err := r.Scan(&v.Realm, &v.StaffDevice, &seq, &v.Serial, &v.Model, &v.KeyType, &v.SPKI, &v.Site, &v.Location,
		&vouched, &received, &expires, &v.State, &v.Reason, &updated)
	v.DeviceSeq = uint64(seq)
	v.VouchedAt, v.ReceivedAt, v.ExpiresAt, v.UpdatedAt = fromMicros(vouched), fromMicros(received), fromMicros(expires), fromMicros(updated)
	return v, err
}

func (s *sqlStore) GetVouches(ctx context.Context, realm, serial string) ([]Vouch, error) {
	return vouchesOf(ctx, s, s.e.reader(), realm, serial)
}

func vouchesOf(ctx context.Context, s *sqlStore, q querier, realm, serial string) ([]Vouch, error) {
	rs, err := q.query(ctx, `SELECT `+vouchColumns+` FROM roster_vouches WHERE realm = $1 AND serial = $2
		ORDER BY vouched_us, staff_device, device_seq`, realm, serial)
	out, err := collect(s, rs, err, scanVouch)
	if out == nil && err == nil {
		out = []Vouch{}
	}
	return out, err
}

func (s *sqlStore) ListVouches(ctx context.Context, realm, after string, limit int) ([]Vouch, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	rs, err := s.e.reader().query(ctx, `SELECT `+vouchColumns+` FROM roster_vouches WHERE realm = $1 AND serial IN
		(SELECT DISTINCT serial FROM roster_vouches WHERE realm = $1 AND serial > $2 ORDER BY serial LIMIT $3)
		ORDER BY serial, staff_device, device_seq`, realm, after, int64(limit))
	return collect(s, rs, err, scanVouch)
}

func (s *sqlStore) RosterTx(ctx context.Context, fn func(tx RosterTx) error) error {
	defer s.chainLock()()
	return s.abortableTx(ctx, func(q querier, abort func(error) error) error {
		tx := &rosterTx{ctx: ctx, s: s, q: q}
		if err := fn(tx); err != nil {
			if tx.failed || tx.raced {
				return err // the database's own failure, or a lost race to retry
			}
			return abort(err)
		}
		return nil
	})
}

// Roster gives a sync's transaction the roster's operations.
func (t *syncTx) Roster() RosterTx { return &rosterTx{ctx: t.ctx, s: t.s, q: t.q} }

type rosterTx struct {
	ctx context.Context
	s   *sqlStore
	q   querier
	// failed and raced as in siteTx.
	failed, raced bool
}

func (t *rosterTx) check(err error) error {
	if err == nil {
		return nil
	}
	err = classify(t.s.e, err)
	if !expected(err) {
		t.failed = true
	}
	return err
}

func (t *rosterTx) Vouches(realm, serial string) ([]Vouch, error) {
	out, err := vouchesOf(t.ctx, t.s, t.q, realm, serial)
	return out, t.check(err)
}

const vouchCols = 15

// The multi-row INSERTs of PutVouches, per engine.
var (
	vouchInserts       = multiRowInserts(`INSERT INTO roster_vouches (`+vouchColumns+`) VALUES `, vouchTail, vouchCols, dollar)
	vouchInsertsSQLite = multiRowInserts(`INSERT INTO roster_vouches (`+vouchColumns+`) VALUES `, vouchTail, vouchCols, question)
)

const vouchTail = ` ON CONFLICT (realm, staff_device, device_seq) DO NOTHING`

func (t *rosterTx) PutVouches(vs []Vouch) (int, error) {
	args := make([]any, 0, vouchCols*len(vs))
	for _, v := range vs {
		if err := checkVouch(&v); err != nil {
			return 0, err
		}
		args = append(args, v.Realm, v.StaffDevice, int64(v.DeviceSeq), v.Serial, v.Model, v.KeyType, v.SPKI, v.Site, v.Location,
			micros(v.VouchedAt), t.s.stamp(v.ReceivedAt), micros(v.ExpiresAt), v.State, v.Reason, t.s.stamp(v.UpdatedAt))
	}
	stmts := vouchInserts
	if t.s.e.name() == "sqlite" {
		stmts = vouchInsertsSQLite
	}
	n, err := insertChunksCount(t.ctx, t.q, stmts, vouchCols, args)
	if err = t.check(err); errors.Is(err, errForeignKey) {
		return 0, invalid("a vouch's realm does not exist")
	}
	return int(n), err
}

func (t *rosterTx) SetVouchState(realm, staffDevice string, seq uint64, from, to, reason string, at time.Time) (bool, error) {
	if to == "" || len(to) > MaxRosterText || len(reason) > MaxRosterReason || seq > 1<<63-1 {
		return false, invalid("vouch state %q or reason out of bounds", to)
	}
	if err := checkText("reason", reason); err != nil {
		return false, err
	}
	n, err := t.q.exec(t.ctx, `UPDATE roster_vouches SET state = $1, reason = $2, updated_us = $3
		WHERE realm = $4 AND staff_device = $5 AND device_seq = $6 AND state = $7`,
		to, reason, t.s.stamp(at), realm, staffDevice, int64(seq), from)
	return n > 0, t.check(err)
}

// inList returns "$2, $3, …" for serials and the arguments realm, serials….
func inList(realm string, serials []string) (string, []any) {
	args := make([]any, 0, 1+len(serials))
	args = append(args, realm)
	var in strings.Builder
	for i, sn := range serials {
		if i > 0 {
			in.WriteString(", ")
		}
		in.WriteString(dollar(i + 2))
		args = append(args, sn)
	}
	return in.String(), args
}

func (t *rosterTx) VouchesOf(realm string, serials []string) ([]Vouch, error) {
	if len(serials) > MaxVouchesOf {
		return nil, invalid("%d serials in one lookup, at most %d", len(serials), MaxVouchesOf)
	}
	if len(serials) == 0 {
		return nil, nil
	}
	in, args := inList(realm, serials)
	rs, err := t.q.query(t.ctx, `SELECT `+vouchColumns+` FROM roster_vouches WHERE realm = $1 AND serial IN (`+in+`)`, args...)
	out, err := collect(t.s, rs, err, scanVouch)
	return out, t.check(err)
}

func (t *rosterTx) ExpectedOf(realm string, serials []string) ([]string, error) {
	if len(serials) > MaxVouchesOf {
		return nil, invalid("%d serials in one lookup, at most %d", len(serials), MaxVouchesOf)
	}
	if len(serials) == 0 {
		return nil, nil
	}
	in, args := inList(realm, serials)
	rs, err := t.q.query(t.ctx, `SELECT serial FROM roster_expected WHERE realm = $1 AND serial IN (`+in+`)`, args...)
	out, err := collect(t.s, rs, err, func(r row) (string, error) {
		var sn string
		return sn, r.Scan(&sn)
	})
	return out, t.check(err)
}

func (t *rosterTx) AnyExpected(realm string) (bool, error) {
	var one int64
	err := t.q.queryRow(t.ctx, `SELECT 1 FROM roster_expected WHERE realm = $1 LIMIT 1`, realm).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, t.check(err)
}

func (t *rosterTx) PutExpected(realm string, serials []string, orderRef string, at time.Time) (int, error) {
	if len(serials) > MaxExpectedBatch {
		return 0, invalid("%d serials in one batch, at most %d", len(serials), MaxExpectedBatch)
	}
	if len(orderRef) > MaxRosterText {
		return 0, invalid("order reference longer than %d bytes", MaxRosterText)
	}
	if err := first(checkID("realm ID", realm), checkText("order reference", orderRef)); err != nil {
		return 0, err
	}
	added := 0
	for _, sn := range serials {
		if err := checkSerial(sn); err != nil {
			return 0, err
		}
		n, err := t.q.exec(t.ctx, `INSERT INTO roster_expected (realm, serial, order_ref, added_us) VALUES ($1, $2, $3, $4)
			ON CONFLICT (realm, serial) DO NOTHING`, realm, sn, orderRef, t.s.stamp(at))
		if err = t.check(err); errors.Is(err, errForeignKey) {
			return 0, invalid("realm %q does not exist", realm)
		} else if err != nil {
			return 0, err
		}
		added += int(n)
	}
	return added, nil
}

func (t *rosterTx) Voucher(realm, device string) (bool, error) {
	var one int64
	err := t.q.queryRow(t.ctx, `SELECT 1 FROM roster_vouchers WHERE realm = $1 AND device = $2`, realm, device).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, t.check(err)
}

func (t *rosterTx) SetVoucher(realm, device string, allowed bool, at time.Time) (bool, error) {
	if err := first(checkID("realm ID", realm), checkID("device ID", device)); err != nil {
		return false, err
	}
	var n int64
	var err error
	if allowed {
		n, err = t.q.exec(t.ctx, `INSERT INTO roster_vouchers (realm, device, granted_us) VALUES ($1, $2, $3)
			ON CONFLICT (realm, device) DO NOTHING`, realm, device, t.s.stamp(at))
	} else {
		n, err = t.q.exec(t.ctx, `DELETE FROM roster_vouchers WHERE realm = $1 AND device = $2`, realm, device)
	}
	if err = t.check(err); errors.Is(err, errForeignKey) {
		return false, invalid("realm %q does not exist", realm)
	}
	return n > 0, err
}

func (t *rosterTx) AppendAudit(entries ...eventlog.Entry) ([]eventlog.Entry, error) {
	out, err := appendAuditIn(t.ctx, t.s, t.q, entries)
	if err = t.check(err); errors.Is(err, ErrExists) {
		t.raced = true
	}
	return out, err
}
