package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// Deliveries (docs/deliveries.md). Like SiteStore, an interface of its own
// so that the core contract stays small: every store Open returns also
// implements DeliveryStore,
//
//	ds, ok := st.(store.DeliveryStore)
//
// and internal/delivery, which holds the rules (the states and their
// transitions, codes, what is sealed), is its one caller. The store knows
// no state machine: it writes what it is given, on the condition that the
// row is still as the caller read it, with the audit entry in the same
// transaction. The table is migration 0005's.

// Delivery is a stored delivery. Nothing in it reveals a code or a
// recipient: CodeMAC is an HMAC of the current code and Recipient is sealed.
type Delivery struct {
	Realm, ID string
	// Device is the courier device the current code was issued to.
	Device string
	// Mode and State are internal/delivery's names, stored as they are.
	Mode, State                    string
	CreatedAt, UpdatedAt, NotAfter time.Time
	// CodeVersion counts the codes issued for the delivery (1 for the first).
	CodeVersion uint32
	CodeMAC     []byte
	Recipient   []byte
	// Check, when set, is the sealed mode data of the code version
	// (CourierStore): CreateDelivery and UpdateDelivery store it in the same
	// transaction. GetDelivery and ListDeliveries leave it empty.
	Check []byte
}

// MaxDeliveryNameLen bounds Mode and State.
const MaxDeliveryNameLen = 32

// DeliveryStore stores deliveries.
type DeliveryStore interface {
	// CreateDelivery stores d with the audit entry e and the outbox
	// messages msgs (OutboxStore) in one transaction. ErrExists when the
	// realm already has d.ID; ErrNotFound when the realm does not exist.
	CreateDelivery(ctx context.Context, d Delivery, e eventlog.Entry, msgs ...OutboxMessage) error
	// GetDelivery returns realm's delivery id (ErrNotFound).
	GetDelivery(ctx context.Context, realm, id string) (Delivery, error)
	// ListDeliveries returns up to limit (1..MaxListLimit) of realm's
	// deliveries with ID > after, ordered by ID.
	ListDeliveries(ctx context.Context, realm, after string, limit int) ([]Delivery, error)
	// UpdateDelivery stores d's Device, State, UpdatedAt, CodeVersion and
	// CodeMAC with the audit entry e and the outbox messages msgs in one
	// transaction, provided the stored row still has state fromState and
	// code version fromVersion; otherwise nothing is written and the answer
	// is ErrConflict (someone changed it first: read it again) or
	// ErrNotFound.
	UpdateDelivery(ctx context.Context, d Delivery, fromState string, fromVersion uint32, e eventlog.Entry, msgs ...OutboxMessage) error
	// DueDeliveries returns up to limit (1..MaxListLimit) deliveries of
	// every realm whose NotAfter is at or before now and whose state is one
	// of states, soonest first (for the expiry sweep).
	DueDeliveries(ctx context.Context, now time.Time, states []string, limit int) ([]Delivery, error)
}

var _ DeliveryStore = (*sqlStore)(nil)

func checkDelivery(d Delivery) error {
	if err := first(checkID("realm ID", d.Realm), checkID("delivery ID", d.ID), checkID("device ID", d.Device)); err != nil {
		return err
	}
	if d.Mode == "" || len(d.Mode) > MaxDeliveryNameLen || d.State == "" || len(d.State) > MaxDeliveryNameLen {
		return invalid("delivery %q: mode and state must be 1 to %d bytes", d.ID, MaxDeliveryNameLen)
	}
	if d.NotAfter.IsZero() || d.CodeVersion == 0 || len(d.CodeMAC) == 0 || len(d.Recipient) == 0 {
		return invalid("delivery %q needs its expiry, code version, code MAC and sealed recipient", d.ID)
	}
	return first(checkBlob("code MAC", d.CodeMAC), checkBlob("sealed recipient", d.Recipient), checkCheck(d))
}

const deliveryColumns = `realm, id, device, mode, state, created_us, updated_us, not_after_us, code_version, code_mac, recipient`

func scanDelivery(r row) (Delivery, error) {
	var d Delivery
	var created, updated, notAfter, version int64
	err := r.Scan(&d.Realm, &d.ID, &d.Device, &d.Mode, &d.State, &created, &updated, &notAfter, &version, &d.CodeMAC, &d.Recipient)
	d.CreatedAt, d.UpdatedAt, d.NotAfter, d.CodeVersion = fromMicros(created), fromMicros(updated), fromMicros(notAfter), uint32(version)
	return d, err
}

func (s *sqlStore) CreateDelivery(ctx context.Context, d Delivery, e eventlog.Entry, msgs ...OutboxMessage) error {
	if err := first(checkDelivery(d), checkOutbox(msgs)); err != nil {
		return err
	}
	created := s.stamp(d.CreatedAt)
	updated := created
	if !d.UpdatedAt.IsZero() {
		updated = micros(d.UpdatedAt)
	}
	defer s.chainLock()()
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		if _, err := q.exec(ctx, `INSERT INTO deliveries (`+deliveryColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			d.Realm, d.ID, d.Device, d.Mode, d.State, created, updated, micros(d.NotAfter), int64(d.CodeVersion), d.CodeMAC, d.Recipient); err != nil {
			if err = classify(s.e, err); errors.Is(err, ErrExists) {
				return fmt.Errorf("%w: delivery %q in realm %q", errDuplicate, d.ID, d.Realm)
			}
			return err
		}
		if err := insertOutbox(ctx, q, msgs); err != nil {
			return err
		}
		if err := putCheck(ctx, q, d); err != nil {
			return err
		}
		_, err := appendAuditIn(ctx, s, q, []eventlog.Entry{e})
		return err
	})
	switch {
	case errors.Is(err, errDuplicate):
		return fmt.Errorf("%w: delivery %q in realm %q", ErrExists, d.ID, d.Realm)
	case errors.Is(err, errForeignKey):
		return fmt.Errorf("%w: realm %q (create it first)", ErrNotFound, d.Realm)
	}
	return err
}

// errDuplicate marks a duplicate delivery id inside CreateDelivery's
// transaction, which must not be retried as a lost audit race (ErrExists)
// would be. It wraps ErrInvalid, an error the store expects.
var errDuplicate = fmt.Errorf("%w: duplicate", ErrInvalid)

func (s *sqlStore) GetDelivery(ctx context.Context, realm, id string) (Delivery, error) {
	d, err := scanDelivery(s.e.reader().queryRow(ctx, `SELECT `+deliveryColumns+` FROM deliveries WHERE realm = $1 AND id = $2`, realm, id))
	if err != nil {
		return Delivery{}, s.noRows(err, "delivery %q in realm %q", id, realm)
	}
	return d, nil
}

func (s *sqlStore) ListDeliveries(ctx context.Context, realm, after string, limit int) ([]Delivery, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	rs, err := s.e.reader().query(ctx, `SELECT `+deliveryColumns+` FROM deliveries WHERE realm = $1 AND id > $2 ORDER BY id LIMIT $3`,
		realm, after, int64(limit))
	return collect(s, rs, err, scanDelivery)
}

func (s *sqlStore) UpdateDelivery(ctx context.Context, d Delivery, fromState string, fromVersion uint32, e eventlog.Entry, msgs ...OutboxMessage) error {
	if err := first(checkDelivery(d), checkOutbox(msgs)); err != nil {
		return err
	}
	defer s.chainLock()()
	var changed bool
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		n, err := q.exec(ctx, `UPDATE deliveries SET device = $1, state = $2, updated_us = $3, code_version = $4, code_mac = $5
			WHERE realm = $6 AND id = $7 AND state = $8 AND code_version = $9`,
			d.Device, d.State, s.stamp(d.UpdatedAt), int64(d.CodeVersion), d.CodeMAC, d.Realm, d.ID, fromState, int64(fromVersion))
		if err != nil {
			return err
		}
		if changed = n > 0; !changed {
			return nil
		}
		if err := insertOutbox(ctx, q, msgs); err != nil {
			return err
		}
		if err := putCheck(ctx, q, d); err != nil {
			return err
		}
		_, err = appendAuditIn(ctx, s, q, []eventlog.Entry{e})
		return err
	})
	if err != nil || changed {
		return err
	}
	if _, err := s.GetDelivery(ctx, d.Realm, d.ID); err != nil {
		return err
	}
	return fmt.Errorf("%w: delivery %q in realm %q changed since it was read", ErrConflict, d.ID, d.Realm)
}
