package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// The courier's side of deliveries (docs/deliveries.md, issue 11 parts 4 to
// 6), migration 0007: the mode data of each delivery's current code, the
// route manifests issued to courier devices, and the proofs of delivery.
// Like DeliveryStore, an interface of its own; every store Open returns
// implements it:
//
//	cs, ok := st.(store.CourierStore)
//
// internal/delivery holds the rules and is its one caller; the store
// writes what it is given, on conditions, with the audit entries in the
// same transaction.

// MaxCheckLen bounds a delivery's sealed mode data; MaxReceiptLen a
// receipt and a countersignature.
const (
	MaxCheckLen   = 4096
	MaxReceiptLen = 32 << 10
)

// DeliveryCheck is the sealed mode data of a delivery's code version.
type DeliveryCheck struct {
	CodeVersion uint32
	Data        []byte
}

// ManifestItem is one delivery (at one code version) put in a manifest.
type ManifestItem struct {
	ID          string
	CodeVersion uint32
}

// StateMove is a conditional state change: applied when the delivery still
// has state From and code version CodeVersion, with its audit entry.
type StateMove struct {
	ID          string
	From, To    string
	CodeVersion uint32
	Entry       eventlog.Entry
	// Msgs are the outbox messages of the move (its shipper event), written
	// when it is applied.
	Msgs []OutboxMessage
}

// DeliveryProof is a delivery's proof: the device's receipt as received
// and the server's countersignature.
type DeliveryProof struct {
	Realm, ID   string
	CodeVersion uint32
	Device      string
	Receipt     []byte
	Countersign []byte
	DeliveredAt time.Time
}

// ProofWrite makes a delivery delivered with its proof (DeliverWithProofs).
type ProofWrite struct {
	// Delivery is the delivery with its new State and UpdatedAt.
	Delivery    Delivery
	FromState   string
	FromVersion uint32
	Proof       DeliveryProof
	Entry       eventlog.Entry
	// Msgs are the outbox messages of the change (its shipper event),
	// written when the write is applied.
	Msgs []OutboxMessage
}

// CourierStore stores what courier devices are given and what they prove.
type CourierStore interface {
	// GetDeliveryCheck returns the sealed mode data stored with the
	// delivery's code (Delivery.Check, written by CreateDelivery and
	// UpdateDelivery); ErrNotFound when there is none.
	GetDeliveryCheck(ctx context.Context, realm, id string) (DeliveryCheck, error)
	// ListDeviceDeliveries returns up to limit (1..MaxListLimit) of
	// realm's deliveries assigned to device, in one of states, with
	// NotAfter after notAfter, by id, with ID > after.
	ListDeviceDeliveries(ctx context.Context, realm, device string, states []string, notAfter time.Time, after string, limit int) ([]Delivery, error)
	// RecordManifest records, in one transaction, a new route manifest for
	// realm's device issued at at: its serial (one above the last one, 1
	// for the first), the items it lists, and the moves (each applied only
	// if its condition holds, with its audit entry). It returns the serial
	// and the ids of the moves applied.
	RecordManifest(ctx context.Context, realm, device string, at time.Time, items []ManifestItem, moves []StateMove) (uint64, []string, error)
	// LastManifest returns the serial of the last manifest issued to
	// realm's device, 0 when none was.
	LastManifest(ctx context.Context, realm, device string) (uint64, error)
	// GetManifested returns the serial and time of the first manifest of
	// device that listed the delivery at this code version; ErrNotFound
	// when the server never put it in that device's manifest.
	GetManifested(ctx context.Context, realm, id string, version uint32, device string) (uint64, time.Time, error)
	// DeliverWithProofs applies ws in one transaction, each write on its
	// own conditions, and returns one result per write: nil when the
	// delivery became ws[i].Delivery.State (its UpdatedAt) with the proof
	// stored and the audit entry appended; ErrNotFound when there is no
	// such delivery; ErrExists when it has a proof already; ErrConflict
	// when its row no longer has FromState and FromVersion (someone changed
	// it first). Writes that fail leave nothing behind. The error is the
	// transaction's (then nothing at all is written).
	DeliverWithProofs(ctx context.Context, ws []ProofWrite) ([]error, error)
	// GetDeliveryProof returns the delivery's proof (ErrNotFound).
	GetDeliveryProof(ctx context.Context, realm, id string) (DeliveryProof, error)
}

var _ CourierStore = (*sqlStore)(nil)

// putCheck stores d.Check as the mode data of d's code version inside
// CreateDelivery's or UpdateDelivery's transaction (nothing when empty).
func putCheck(ctx context.Context, q querier, d Delivery) error {
	if len(d.Check) == 0 {
		return nil
	}
	_, err := q.exec(ctx, `INSERT INTO delivery_checks (realm, id, code_version, data) VALUES ($1, $2, $3, $4)
		ON CONFLICT (realm, id) DO UPDATE SET code_version = excluded.code_version, data = excluded.data`,
		d.Realm, d.ID, int64(d.CodeVersion), d.Check)
	return err
}

func checkCheck(d Delivery) error {
	if len(d.Check) > MaxCheckLen {
		return invalid("delivery %q: mode data is %d bytes, more than %d", d.ID, len(d.Check), MaxCheckLen)
	}
	return nil
}

func (s *sqlStore) GetDeliveryCheck(ctx context.Context, realm, id string) (DeliveryCheck, error) {
	var c DeliveryCheck
	var v int64
	err := s.e.reader().queryRow(ctx, `SELECT code_version, data FROM delivery_checks WHERE realm = $1 AND id = $2`, realm, id).Scan(&v, &c.Data)
	if err != nil {
		return DeliveryCheck{}, s.noRows(err, "mode data of delivery %q in realm %q", id, realm)
	}
	c.CodeVersion = uint32(v)
	return c, nil
}

func (s *sqlStore) ListDeviceDeliveries(ctx context.Context, realm, device string, states []string, notAfter time.Time, after string, limit int) ([]Delivery, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	if len(states) == 0 || len(states) > 16 {
		return nil, invalid("list deliveries: 1 to 16 states")
	}
	args := []any{realm, device, micros(notAfter), after, int64(limit)}
	in := ""
	for i, st := range states {
		if i > 0 {
			in += ", "
		}
		args = append(args, st)
		in += fmt.Sprintf("$%d", len(args))
	}
	rs, err := s.e.reader().query(ctx, `SELECT `+deliveryColumns+` FROM deliveries WHERE realm = $1 AND device = $2 AND not_after_us > $3
		AND id > $4 AND state IN (`+in+`) ORDER BY id LIMIT $5`, args...)
	return collect(s, rs, err, scanDelivery)
}

func (s *sqlStore) RecordManifest(ctx context.Context, realm, device string, at time.Time, items []ManifestItem, moves []StateMove) (uint64, []string, error) {
	if err := first(checkID("realm ID", realm), checkID("device ID", device)); err != nil {
		return 0, nil, err
	}
	for _, m := range moves {
		if err := checkOutbox(m.Msgs); err != nil {
			return 0, nil, err
		}
	}
	defer s.chainLock()()
	var serial int64
	var applied []string
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		applied = applied[:0]
		if err := q.queryRow(ctx, `INSERT INTO courier_manifests (realm, device, serial, issued_us) VALUES ($1, $2, 1, $3)
			ON CONFLICT (realm, device) DO UPDATE SET serial = courier_manifests.serial + 1, issued_us = excluded.issued_us
			RETURNING serial`, realm, device, s.stamp(at)).Scan(&serial); err != nil {
			return err
		}
		for _, it := range items {
			if _, err := q.exec(ctx, `INSERT INTO delivery_manifested (realm, id, code_version, device, serial, issued_us)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (realm, id, code_version, device) DO NOTHING`,
				realm, it.ID, int64(it.CodeVersion), device, serial, s.stamp(at)); err != nil {
				return err
			}
		}
		var entries []eventlog.Entry
		for _, m := range moves {
			n, err := q.exec(ctx, `UPDATE deliveries SET state = $1, updated_us = $2 WHERE realm = $3 AND id = $4 AND state = $5 AND code_version = $6`,
				m.To, s.stamp(at), realm, m.ID, m.From, int64(m.CodeVersion))
			if err != nil {
				return err
			}
			if n > 0 {
				if err := insertOutbox(ctx, q, m.Msgs); err != nil {
					return err
				}
				applied = append(applied, m.ID)
				entries = append(entries, m.Entry)
			}
		}
		_, err := appendAuditIn(ctx, s, q, entries)
		return err
	})
	switch {
	case errors.Is(err, errForeignKey):
		return 0, nil, fmt.Errorf("%w: realm %q or a delivery of the manifest", ErrNotFound, realm)
	case err != nil:
		return 0, nil, err
	}
	return uint64(serial), applied, nil
}

func (s *sqlStore) LastManifest(ctx context.Context, realm, device string) (uint64, error) {
	var serial int64
	err := s.e.reader().queryRow(ctx, `SELECT serial FROM courier_manifests WHERE realm = $1 AND device = $2`, realm, device).Scan(&serial)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, classify(s.e, err)
	}
	return uint64(serial), nil
}

func (s *sqlStore) GetManifested(ctx context.Context, realm, id string, version uint32, device string) (uint64, time.Time, error) {
	var serial, at int64
	err := s.e.reader().queryRow(ctx, `SELECT serial, issued_us FROM delivery_manifested WHERE realm = $1 AND id = $2 AND code_version = $3 AND device = $4`,
		realm, id, int64(version), device).Scan(&serial, &at)
	if err != nil {
		return 0, time.Time{}, s.noRows(err, "delivery %q version %d was never in device %q's manifest", id, version, device)
	}
	return uint64(serial), fromMicros(at), nil
}

func (s *sqlStore) DeliverWithProofs(ctx context.Context, ws []ProofWrite) ([]error, error) {
	for _, w := range ws {
		d, p := w.Delivery, w.Proof
		if err := first(checkDelivery(d), checkID("device ID", p.Device), checkOutbox(w.Msgs)); err != nil {
			return nil, err
		}
		if p.Realm != d.Realm || p.ID != d.ID || len(p.Receipt) == 0 || len(p.Receipt) > MaxReceiptLen || len(p.Countersign) == 0 || len(p.Countersign) > MaxReceiptLen {
			return nil, invalid("delivery %q: a proof of the same delivery needs a receipt and a countersignature of at most %d bytes each", d.ID, MaxReceiptLen)
		}
	}
	if len(ws) == 0 {
		return nil, nil
	}
	defer s.chainLock()()
	var results []error
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		results = make([]error, len(ws))
		var entries []eventlog.Entry
		for i, w := range ws {
			d, p := w.Delivery, w.Proof
			var version int64
			if err := q.queryRow(ctx, `SELECT code_version FROM deliveries WHERE realm = $1 AND id = $2`, d.Realm, d.ID).Scan(&version); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					results[i] = fmt.Errorf("%w: delivery %q in realm %q", ErrNotFound, d.ID, d.Realm)
					continue
				}
				return err
			}
			n, err := q.exec(ctx, `INSERT INTO delivery_proofs (realm, id, code_version, device, receipt, countersign, delivered_us)
				VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (realm, id) DO NOTHING`,
				d.Realm, d.ID, int64(p.CodeVersion), p.Device, p.Receipt, p.Countersign, s.stamp(p.DeliveredAt))
			if err != nil {
				return err
			}
			if n == 0 {
				results[i] = fmt.Errorf("%w: delivery %q in realm %q has a proof already", ErrExists, d.ID, d.Realm)
				continue
			}
			n, err = q.exec(ctx, `UPDATE deliveries SET state = $1, updated_us = $2 WHERE realm = $3 AND id = $4 AND state = $5 AND code_version = $6`,
				d.State, s.stamp(d.UpdatedAt), d.Realm, d.ID, w.FromState, int64(w.FromVersion))
			if err != nil {
				return err
			}
			if n == 0 {
				if _, err := q.exec(ctx, `DELETE FROM delivery_proofs WHERE realm = $1 AND id = $2`, d.Realm, d.ID); err != nil {
					return err
				}
				results[i] = fmt.Errorf("%w: delivery %q in realm %q changed since it was read", ErrConflict, d.ID, d.Realm)
				continue
			}
			if err := insertOutbox(ctx, q, w.Msgs); err != nil {
				return err
			}
			entries = append(entries, w.Entry)
		}
		_, err := appendAuditIn(ctx, s, q, entries)
		return err
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

func (s *sqlStore) GetDeliveryProof(ctx context.Context, realm, id string) (DeliveryProof, error) {
	p := DeliveryProof{Realm: realm, ID: id}
	var v, at int64
	err := s.e.reader().queryRow(ctx, `SELECT code_version, device, receipt, countersign, delivered_us FROM delivery_proofs WHERE realm = $1 AND id = $2`,
		realm, id).Scan(&v, &p.Device, &p.Receipt, &p.Countersign, &at)
	if err != nil {
		return DeliveryProof{}, s.noRows(err, "proof of delivery %q in realm %q", id, realm)
	}
	p.CodeVersion, p.DeliveredAt = uint32(v), fromMicros(at)
	return p, nil
}
