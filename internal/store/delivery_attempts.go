package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// DeliveryAttemptStore counts the codes tried against a delivery's current
// code version (online confirms, and sealed codes the server opens at
// sync), migration 0010. Like DeliveryStore it is an interface of its own
// that every store Open returns also implements,
//
//	as, ok := st.(store.DeliveryAttemptStore)
//
// and internal/delivery, which holds the limit and what happens when it is
// reached, is its one caller. An attempt is counted before the code is
// compared (TakeDeliveryAttempt), so that guesses sent in parallel cannot
// outrun the limit.
type DeliveryAttemptStore interface {
	// TakeDeliveryAttempt counts one attempt at realm's delivery id at code
	// version, provided the delivery is stored with that code version and
	// fewer than limit (at least 1) attempts are counted for it, and appends
	// e to the audit log in the same transaction. It returns the count
	// after it. When limit attempts were counted already, nothing is
	// written and the answer is the count and taken = false. ErrNotFound:
	// no such delivery; ErrConflict: its code version is no longer version
	// (it was reassigned meanwhile).
	TakeDeliveryAttempt(ctx context.Context, realm, id string, version uint32, limit int, e eventlog.Entry) (n int, taken bool, err error)
	// DeliveryAttempts returns the attempts counted for realm's delivery id
	// at code version (0 when none).
	DeliveryAttempts(ctx context.Context, realm, id string, version uint32) (int, error)
}

var _ DeliveryAttemptStore = (*sqlStore)(nil)

// errNoAttempt marks, inside TakeDeliveryAttempt's transaction, that the
// conditional upsert wrote nothing; like errDuplicate it wraps ErrInvalid so
// the transaction is not retried.
var errNoAttempt = fmt.Errorf("%w: no attempt counted", ErrInvalid)

func (s *sqlStore) TakeDeliveryAttempt(ctx context.Context, realm, id string, version uint32, limit int, e eventlog.Entry) (int, bool, error) {
	if err := first(checkID("realm ID", realm), checkID("delivery ID", id)); err != nil {
		return 0, false, err
	}
	if version == 0 || limit < 1 {
		return 0, false, invalid("delivery %q: code version and attempt limit must be at least 1", id)
	}
	defer s.chainLock()()
	var n int64
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		// The SELECT's WHERE is what SQLite needs to parse INSERT ... SELECT
		// ... ON CONFLICT; it also makes the insert conditional on the
		// delivery being at this code version.
		err := q.queryRow(ctx, `INSERT INTO delivery_attempts (realm, id, code_version, attempts, updated_us)
			SELECT realm, id, code_version, 1, $4 FROM deliveries WHERE realm = $1 AND id = $2 AND code_version = $3
			ON CONFLICT (realm, id, code_version) DO UPDATE SET attempts = delivery_attempts.attempts + 1, updated_us = excluded.updated_us
			WHERE delivery_attempts.attempts < $5
			RETURNING attempts`, realm, id, int64(version), s.stamp(e.Time), int64(limit)).Scan(&n)
		if err != nil {
			if errors.Is(s.noRows(err, ""), ErrNotFound) {
				return errNoAttempt
			}
			return err
		}
		_, err = appendAuditIn(ctx, s, q, []eventlog.Entry{e})
		return err
	})
	if !errors.Is(err, errNoAttempt) {
		return int(n), err == nil, err
	}
	// Nothing written: the limit, or the delivery is not at this version.
	got, err := s.DeliveryAttempts(ctx, realm, id, version)
	if err != nil || got >= limit {
		return got, false, err
	}
	d, err := s.GetDelivery(ctx, realm, id)
	if err != nil {
		return 0, false, err
	}
	return 0, false, fmt.Errorf("%w: delivery %q in realm %q is at code version %d, not %d", ErrConflict, id, realm, d.CodeVersion, version)
}

func (s *sqlStore) DeliveryAttempts(ctx context.Context, realm, id string, version uint32) (int, error) {
	var n int64
	err := s.e.reader().queryRow(ctx, `SELECT attempts FROM delivery_attempts WHERE realm = $1 AND id = $2 AND code_version = $3`,
		realm, id, int64(version)).Scan(&n)
	if err = s.noRows(err, ""); errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	return int(n), err
}
