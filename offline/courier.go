package offline

// The courier's side of a field store (issue 11, docs/deliveries.md): the
// route manifest the server gives this device at sync, the check of a
// recipient's delivery code at the door, and the receipts that travel back
// with the next sync. Same store, same signed log, same device key as the
// OTP side.
//
//	info, err := s.InstallManifest(ctx, manifest) // Sync does it with the manifest of every answer
//	res, err := s.CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "parcel-1", Code: "1234 5678 9", Location: "48.85,2.35"})
//
// Every decision is an entry of the device log, in the same transaction as
// the state it changes. An attempt is counted, and persisted, before the
// slow check runs, so a killed process gets no free guess; a mistyped code
// (its check digit is wrong) costs none.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
)

// Errors of the courier's side. Refusals wrap ErrRefused (exit 3), an
// exhausted attempt limit wraps ErrLocked (exit 4).
var (
	// ErrTypo: the code's check digit is wrong: a mistyped code, ask again; no attempt used.
	ErrTypo = deliverycode.ErrTypo
	// ErrNotACode: the text is not a delivery code (length, characters); no attempt used.
	ErrNotACode = deliverycode.ErrMalformed
	// ErrNoManifest: this device holds no route manifest: sync first.
	ErrNoManifest = fmt.Errorf("%w: no route manifest on this device", ErrRefused)
	// ErrNotOnRoute: the delivery is not in this device's manifest
	// (never assigned to it, reassigned, cancelled or finished).
	ErrNotOnRoute = fmt.Errorf("%w: delivery not in this device's route manifest", ErrRefused)
	// ErrManifestTooOld: the manifest is older than its max age: sync first.
	ErrManifestTooOld = fmt.Errorf("%w: route manifest too old", ErrRefused)
	// ErrDeliveryExpired: past the delivery's expiry.
	ErrDeliveryExpired = fmt.Errorf("%w: delivery expired", ErrRefused)
	// ErrDelivered: a code for this delivery was accepted already on this device.
	ErrDelivered = fmt.Errorf("%w: delivery already confirmed", ErrRefused)
	// ErrNoAttempts: the delivery's attempt limit is used up.
	ErrNoAttempts = fmt.Errorf("%w: no attempts left for this delivery", ErrLocked)
	// ErrWrongMode: a code for a token-mode delivery or a token for a code.
	ErrWrongMode = errors.New("offline: this delivery is checked another way")
	// ErrStaleManifest: a manifest not newer than the installed one.
	ErrStaleManifest = errors.New("offline: route manifest is not newer than the installed one")
)

// Courier log kinds (device log).
const (
	kindManifest        = "courier.manifest"
	kindManifestRefused = "courier.manifest.refused"
	kindTypo            = "courier.typo"
	kindAttempt         = "courier.attempt"
	kindAccepted        = "courier.ok"
	kindFailed          = "courier.fail"
	kindRefused         = "courier.refused"
)

const courierSchema = `
CREATE TABLE IF NOT EXISTS courier_manifest (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	serial    INTEGER NOT NULL,
	issued_us INTEGER NOT NULL,
	body      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS courier_attempts (
	delivery    TEXT    NOT NULL,
	version     INTEGER NOT NULL,
	attempts    INTEGER NOT NULL DEFAULT 0,
	accepted_us INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (delivery, version)
);
CREATE TABLE IF NOT EXISTS courier_receipts (
	delivery TEXT    NOT NULL,
	version  INTEGER NOT NULL,
	log_seq  INTEGER NOT NULL,
	data     BLOB    NOT NULL,
	status   TEXT    NOT NULL DEFAULT '',
	reason   TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (delivery, version)
);`

func (s *Store) courierTables(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, courierSchema); err != nil {
		return fmt.Errorf("%w: creating the courier tables: %v", ErrCorrupt, err)
	}
	return nil
}

// ManifestInfo describes an installed route manifest.
type ManifestInfo struct {
	Serial     uint64    `json:"serial"`
	IssuedAt   time.Time `json:"issued_at"`
	Deliveries int       `json:"deliveries"`
	// Unchanged: the very same manifest was installed already.
	Unchanged bool `json:"unchanged,omitempty"`
}

// InstallManifest verifies a route manifest and installs it in place of
// the one held: signed by a pinned server key, for this device, within its
// validity window, newer (by serial) than the installed one — each refusal
// logged. Deliveries it no longer lists can no longer be checked here.
func (s *Store) InstallManifest(ctx context.Context, data []byte) (ManifestInfo, error) {
	if err := s.courierTables(ctx); err != nil {
		return ManifestInfo{}, err
	}
	now := s.now()
	refuse := func(err error) (ManifestInfo, error) {
		s.logRefusal(ctx, now, kindManifestRefused, "", map[string]any{"reason": reason(err)})
		return ManifestInfo{}, fmt.Errorf("offline: route manifest refused: %w", err)
	}
	h, body, err := artifact.Verify(data, artifact.Keys(s.servers), artifact.Expect{Type: courierproto.ManifestType, Subject: s.device,
		Now: now, Skew: s.policy.ClockTolerance, MaxSize: courierproto.MaxManifestSize})
	if err != nil {
		return refuse(err)
	}
	m, err := courierproto.DecodeManifest(body)
	if err == nil && (h.Version != courierproto.ManifestVersion || h.Serial == 0) {
		err = fmt.Errorf("%w: manifest version %d serial %d", ErrMalformed, h.Version, h.Serial)
	}
	if err != nil {
		return refuse(fmt.Errorf("%w: %w", ErrMalformed, err))
	}
	if m.Device != s.device {
		return refuse(fmt.Errorf("%w: the manifest is for device %q, this is %q", ErrWrongDevice, ident.Clip(m.Device), s.device))
	}
	info := ManifestInfo{Serial: h.Serial, IssuedAt: m.IssuedAt, Deliveries: len(m.Deliveries)}
	var stale error
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var held uint64
		var heldBody []byte
		err := tx.QueryRowContext(ctx, `SELECT serial, body FROM courier_manifest WHERE id = 1`).Scan(&held, &heldBody)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("%w: reading the route manifest: %v", ErrCorrupt, err)
		case held == h.Serial && string(heldBody) == string(body):
			info.Unchanged = true
			return nil
		case held >= h.Serial:
			stale = fmt.Errorf("%w: it has serial %d, this device holds serial %d", ErrStaleManifest, h.Serial, held)
			return s.log(ctx, tx, now, kindManifestRefused, "", map[string]any{"reason": "stale", "serial": h.Serial, "held": held})
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO courier_manifest (id, serial, issued_us, body) VALUES (1, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET serial = excluded.serial, issued_us = excluded.issued_us, body = excluded.body`,
			int64(h.Serial), m.IssuedAt.UnixMicro(), []byte(body)); err != nil {
			return err
		}
		return s.log(ctx, tx, now, kindManifest, "", map[string]any{"serial": h.Serial, "issued_at": m.IssuedAt, "deliveries": len(m.Deliveries)})
	})
	if err == nil {
		err = stale
	}
	return info, err
}

// manifest reads the installed manifest (ErrNoManifest).
func (s *Store) manifest(ctx context.Context, q devicelog.Queryer) (courierproto.Manifest, uint64, error) {
	var serial uint64
	var body []byte
	err := q.QueryRowContext(ctx, `SELECT serial, body FROM courier_manifest WHERE id = 1`).Scan(&serial, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return courierproto.Manifest{}, 0, fmt.Errorf("%w: sync this device ('outpost field sync') to get its route", ErrNoManifest)
	}
	if err != nil {
		return courierproto.Manifest{}, 0, fmt.Errorf("%w: reading the route manifest: %v", ErrCorrupt, err)
	}
	m, err := courierproto.DecodeManifest(body)
	if err != nil {
		return courierproto.Manifest{}, 0, fmt.Errorf("%w: the stored route manifest: %v", ErrCorrupt, err)
	}
	return m, serial, nil
}

// DeliveryAttempt is one check at the door: exactly one of Code (typed by
// the courier, as the recipient reads it) and Token (a delivery token, as
// scanned from the recipient's QR code).
type DeliveryAttempt struct {
	Delivery string
	Code     string
	Token    string
	// Location is "lat,lon" when known (recorded in the log and the receipt).
	Location string
}

// DeliveryResult is an accepted check.
type DeliveryResult struct {
	Delivery string `json:"delivery"`
	Version  int    `json:"version"`
	Mode     string `json:"mode"`
	// Provisional: the fingerprint mode accepted a code that the server
	// confirms at sync (it passed a check that lets 1 wrong code in about 1,000 through).
	Provisional bool `json:"provisional,omitempty"`
	// LogSeq is the device log entry of the decision.
	LogSeq uint64 `json:"log_seq"`
	// Receipt is the signed receipt, sent at the next sync.
	Receipt []byte `json:"-"`
}

// AttemptsError is a wrong code with the attempts left.
type AttemptsError struct {
	Left int
	Err  error
}

func (e *AttemptsError) Error() string {
	return fmt.Sprintf("%v (%d attempt(s) left)", e.Err, e.Left)
}
func (e *AttemptsError) Unwrap() error { return e.Err }

// CheckDelivery checks a recipient's code (or token) for a delivery of
// the installed manifest, as the package comment says, and on success
// writes a receipt (a statement signed with the device key: realm,
// delivery, version, device, mode, time, location, log entry) that the
// next sync uploads.
func (s *Store) CheckDelivery(ctx context.Context, a DeliveryAttempt) (*DeliveryResult, error) {
	if err := s.courierTables(ctx); err != nil {
		return nil, err
	}
	if err := ident.Check("delivery id", a.Delivery); err != nil {
		return nil, fmt.Errorf("offline: %w", err)
	}
	if a.Location != "" {
		if _, _, err := courierproto.ParseLocation(a.Location); err != nil {
			return nil, err
		}
	}
	now := s.now()
	m, serial, err := s.manifest(ctx, s.db)
	if err != nil {
		return nil, err
	}
	var md *courierproto.ManifestDelivery
	for i := range m.Deliveries {
		if m.Deliveries[i].ID == a.Delivery {
			md = &m.Deliveries[i]
		}
	}
	data := func(kv ...any) map[string]any {
		d := map[string]any{"realm": m.Realm, "delivery": a.Delivery}
		if md != nil {
			d["version"], d["mode"] = md.Version, md.Mode
		}
		if a.Location != "" {
			d["location"] = a.Location
		}
		for i := 0; i+1 < len(kv); i += 2 {
			d[kv[i].(string)] = kv[i+1]
		}
		return d
	}
	if md == nil {
		err := fmt.Errorf("%w: %q is not on this device's route (manifest %d): sync, or it was reassigned or cancelled", ErrNotOnRoute, ident.Clip(a.Delivery), serial)
		s.logRefusal(ctx, now, kindRefused, a.Delivery, data("reason", "not_on_route"))
		return nil, err
	}
	code, err := s.entered(md, a)
	if err != nil {
		if errors.Is(err, ErrTypo) || errors.Is(err, ErrNotACode) {
			s.logRefusal(ctx, now, kindTypo, a.Delivery, data("reason", map[bool]string{true: "typo", false: "not_a_code"}[errors.Is(err, ErrTypo)]))
		}
		return nil, err
	}
	b := md.Binding(m.Realm, s.device)
	if err := s.admitDelivery(ctx, m, md, now, data); err != nil {
		return nil, err
	}
	ok, sealed, checkErr := s.matchDelivery(m, md, b, code, a.Token, now)
	res, err := s.settleDelivery(context.WithoutCancel(ctx), m, serial, md, a, ok && checkErr == nil, sealed, data)
	if checkErr != nil && err != nil && !errors.Is(err, ErrCorrupt) {
		// The server-signed mode data or keys cannot be used: the attempt
		// stays counted, and the courier is told to sync rather than ask again.
		return nil, fmt.Errorf("%w: the route manifest's data for delivery %s cannot be used (%v): sync this device", ErrCorrupt, md.ID, checkErr)
	}
	return res, err
}

// entered reads the code or token the attempt carries for md's mode.
func (s *Store) entered(md *courierproto.ManifestDelivery, a DeliveryAttempt) (string, error) {
	if (a.Code == "") == (a.Token == "") {
		return "", fmt.Errorf("%w: give the recipient's code or scan their token", ErrWrongMode)
	}
	if md.Mode == courierproto.ModeToken {
		if a.Token == "" {
			return "", fmt.Errorf("%w: delivery %s is checked with the recipient's QR token: scan it", ErrWrongMode, md.ID)
		}
		return "", nil
	}
	if a.Code == "" {
		return "", fmt.Errorf("%w: delivery %s is checked with the recipient's code: type it", ErrWrongMode, md.ID)
	}
	return deliverycode.Parse(a.Code)
}

// admitDelivery is a check's first transaction: clock, manifest age,
// expiry, accepted already, attempt limit — each refusal logged — and the
// attempt counted before any slow work.
func (s *Store) admitDelivery(ctx context.Context, m courierproto.Manifest, md *courierproto.ManifestDelivery, now time.Time, data func(...any) map[string]any) error {
	var refused error
	err := s.tx(ctx, func(tx *sql.Tx) error {
		refuse := func(e error, why string) error {
			refused = e
			return s.log(ctx, tx, now, kindRefused, md.ID, data("reason", why))
		}
		if err := s.clock(ctx, tx, now); err != nil {
			if errors.Is(err, ErrClockBack) {
				return refuse(err, "clock_back")
			}
			return err
		}
		if maxAge := time.Duration(m.MaxAge) * time.Second; now.Sub(m.IssuedAt) > maxAge {
			return refuse(fmt.Errorf("%w: it was issued at %s and may be used for %v: sync this device first (a cancelled or reassigned delivery is only learnt at sync)",
				ErrManifestTooOld, m.IssuedAt.UTC().Format(time.RFC3339), maxAge), "manifest_too_old")
		}
		if !now.Before(md.NotAfter) {
			return refuse(fmt.Errorf("%w: delivery %s expired at %s", ErrDeliveryExpired, md.ID, md.NotAfter.UTC().Format(time.RFC3339)), "expired")
		}
		var attempts int
		var accepted int64
		err := tx.QueryRowContext(ctx, `SELECT attempts, accepted_us FROM courier_attempts WHERE delivery = ? AND version = ?`, md.ID, md.Version).Scan(&attempts, &accepted)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: reading attempts: %v", ErrCorrupt, err)
		}
		switch {
		case accepted != 0:
			return refuse(fmt.Errorf("%w: delivery %s was confirmed on this device at %s", ErrDelivered, md.ID, time.UnixMicro(accepted).UTC().Format(time.RFC3339)), "already_accepted")
		case attempts >= md.Attempts:
			return refuse(fmt.Errorf("%w: %d of %d attempts used: the recipient must ask the shipper for a new code", ErrNoAttempts, attempts, md.Attempts), "no_attempts")
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO courier_attempts (delivery, version, attempts) VALUES (?, ?, 1)
			ON CONFLICT (delivery, version) DO UPDATE SET attempts = attempts + 1`, md.ID, md.Version); err != nil {
			return err
		}
		return s.log(ctx, tx, now, kindAttempt, md.ID, data("attempt", attempts+1, "limit", md.Attempts))
	})
	if err == nil {
		err = refused
	}
	return err
}

// matchDelivery runs the mode's check; for the hash and fingerprint modes
// it also seals the code to the server, which confirms it at sync.
func (s *Store) matchDelivery(m courierproto.Manifest, md *courierproto.ManifestDelivery, b courierproto.Binding, code, token string, now time.Time) (bool, []byte, error) {
	if md.Mode == courierproto.ModeToken {
		return courierproto.VerifyToken(m.Keys.Token, token, now, b) == nil, nil, nil
	}
	ok, err := courierproto.MatchCheck(md.Mode, md.Check, code, b)
	if err != nil || !ok {
		return ok, nil, err
	}
	sealed, err := courierproto.SealCode(m.Keys.Seal, b, code)
	return err == nil, sealed, err
}

// settleDelivery is a check's second transaction: the outcome in the log
// and, on success, the receipt.
func (s *Store) settleDelivery(ctx context.Context, m courierproto.Manifest, serial uint64, md *courierproto.ManifestDelivery, a DeliveryAttempt,
	ok bool, sealed []byte, data func(...any) map[string]any) (*DeliveryResult, error) {
	done := s.now()
	var res *DeliveryResult
	var outcome error
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var attempts int
		if err := tx.QueryRowContext(ctx, `SELECT attempts FROM courier_attempts WHERE delivery = ? AND version = ?`, md.ID, md.Version).Scan(&attempts); err != nil {
			return fmt.Errorf("%w: reading attempts: %v", ErrCorrupt, err)
		}
		if !ok {
			outcome = &AttemptsError{Left: max(0, md.Attempts-attempts), Err: fmt.Errorf("%w for delivery %s", ErrWrongCode, md.ID)}
			return s.log(ctx, tx, done, kindFailed, md.ID, data("attempt", attempts, "left", max(0, md.Attempts-attempts)))
		}
		n, err := tx.ExecContext(ctx, `UPDATE courier_attempts SET accepted_us = ? WHERE delivery = ? AND version = ? AND accepted_us = 0`, done.UnixMicro(), md.ID, md.Version)
		if err != nil {
			return err
		}
		if c, _ := n.RowsAffected(); c == 0 {
			outcome = fmt.Errorf("%w: a concurrent check accepted delivery %s first", ErrDelivered, md.ID)
			return s.log(ctx, tx, done, kindRefused, md.ID, data("reason", "already_accepted"))
		}
		raw, err := json.Marshal(data("manifest", serial, "provisional", md.Mode == courierproto.ModeFingerprint))
		if err != nil {
			return err
		}
		e, err := devicelog.Append(ctx, tx, s.id.Private, eventlog.Entry{Time: done, Kind: kindAccepted, Actor: s.device, Subject: md.ID, Data: raw})
		if err != nil {
			return err
		}
		r := courierproto.Receipt{Realm: m.Realm, Delivery: md.ID, Version: md.Version, Device: s.device, Mode: md.Mode, Time: done.UTC(),
			Location: a.Location, Manifest: serial, LogSeq: e.Seq, LogHash: e.Hash, Sealed: sealed}
		if md.Mode == courierproto.ModeToken {
			r.Token = a.Token
		}
		signer := &keys.Signer{Private: s.id.Private, Public: s.id.Public, KeyID: s.id.KeyID}
		receipt, err := artifact.Sign(signer, artifact.Header{Type: courierproto.ReceiptType, Version: courierproto.ReceiptVersion, Subject: s.device,
			Serial: e.Seq, IssuedAt: done, NotBefore: done, NotAfter: done.Add(courierproto.CountersignValidity)}, r)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO courier_receipts (delivery, version, log_seq, data) VALUES (?, ?, ?, ?)`, md.ID, md.Version, int64(e.Seq), receipt); err != nil {
			return err
		}
		res = &DeliveryResult{Delivery: md.ID, Version: md.Version, Mode: md.Mode, Provisional: md.Mode == courierproto.ModeFingerprint, LogSeq: e.Seq, Receipt: receipt}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, outcome
	}
	return res, nil
}

// pendingReceipts are the receipts the server has not answered whose log
// entry is at most upTo (the upload carries it, or the server holds it), inside tx.
func pendingReceipts(ctx context.Context, tx *sql.Tx, upTo uint64) ([][]byte, error) {
	rows, err := tx.QueryContext(ctx, `SELECT data FROM courier_receipts WHERE status = '' AND log_seq <= ? ORDER BY log_seq LIMIT ?`, int64(upTo), courierproto.MaxReceipts)
	if err != nil {
		return nil, fmt.Errorf("%w: reading receipts: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("%w: reading receipts: %v", ErrCorrupt, err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// applyCourier records the server's answers to receipts and installs the
// answer's manifest.
func (s *Store) applyCourier(ctx context.Context, manifest []byte, acks []courierproto.ReceiptAck, rep *SyncReport) error {
	if len(acks) > 0 {
		err := s.tx(ctx, func(tx *sql.Tx) error {
			for _, k := range acks {
				if _, err := tx.ExecContext(ctx, `UPDATE courier_receipts SET status = ?, reason = ? WHERE delivery = ? AND version = ? AND status = ''`,
					k.Status, k.Reason, k.Delivery, k.Version); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("offline: recording receipt answers: %w", err)
		}
		for _, k := range acks {
			rep.Receipts = append(rep.Receipts, ReceiptAnswer(k))
		}
	}
	if len(manifest) == 0 {
		return nil
	}
	info, err := s.InstallManifest(ctx, manifest)
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
		return nil
	}
	rep.Manifest = &info
	return nil
}

// ReceiptAnswer is the server's answer to one of this device's receipts.
type ReceiptAnswer struct {
	Delivery string `json:"delivery"`
	Version  int    `json:"version"`
	// Status is ReceiptDelivered, ReceiptDuplicate or ReceiptRefused.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Receipt statuses: every one is final (the receipt is not sent again).
const (
	// ReceiptDelivered: the server made the delivery delivered.
	ReceiptDelivered = courierproto.AckDelivered
	// ReceiptDuplicate: an earlier upload of the same receipt did.
	ReceiptDuplicate = courierproto.AckDuplicate
	// ReceiptRefused: the server does not believe it and recorded an incident.
	ReceiptRefused = courierproto.AckRefused
)

// RouteDelivery is one delivery of the installed manifest as this device sees it.
type RouteDelivery struct {
	ID       string    `json:"id"`
	Version  int       `json:"version"`
	Mode     string    `json:"mode"`
	NotAfter time.Time `json:"not_after"`
	Attempts int       `json:"attempts"`
	Limit    int       `json:"limit"`
	Accepted bool      `json:"accepted"`
	// Receipt is the server's answer to its receipt: "" (not sent or not
	// answered yet), delivered, duplicate or refused.
	Receipt string `json:"receipt,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Route is the installed manifest and the state of each delivery.
type Route struct {
	Serial     uint64          `json:"serial"`
	IssuedAt   time.Time       `json:"issued_at"`
	UsableTill time.Time       `json:"usable_until"`
	Deliveries []RouteDelivery `json:"deliveries"`
}

// Route returns the installed manifest's deliveries (ErrNoManifest).
func (s *Store) Route(ctx context.Context) (Route, error) {
	if err := s.courierTables(ctx); err != nil {
		return Route{}, err
	}
	m, serial, err := s.manifest(ctx, s.db)
	if err != nil {
		return Route{}, err
	}
	r := Route{Serial: serial, IssuedAt: m.IssuedAt, UsableTill: m.IssuedAt.Add(time.Duration(m.MaxAge) * time.Second), Deliveries: []RouteDelivery{}}
	for _, d := range m.Deliveries {
		rd := RouteDelivery{ID: d.ID, Version: d.Version, Mode: d.Mode, NotAfter: d.NotAfter, Limit: d.Attempts}
		var accepted int64
		err := s.db.QueryRowContext(ctx, `SELECT attempts, accepted_us FROM courier_attempts WHERE delivery = ? AND version = ?`, d.ID, d.Version).Scan(&rd.Attempts, &accepted)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return Route{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		rd.Accepted = accepted != 0
		err = s.db.QueryRowContext(ctx, `SELECT status, reason FROM courier_receipts WHERE delivery = ? AND version = ?`, d.ID, d.Version).Scan(&rd.Receipt, &rd.Reason)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return Route{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		r.Deliveries = append(r.Deliveries, rd)
	}
	return r, nil
}
