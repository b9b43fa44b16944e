package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// The transactional outbox (docs/deliveries.md, "The outbox"). Like
// DeliveryStore, an interface of its own: every store Open returns also
// implements OutboxStore,
//
//	os, ok := st.(store.OutboxStore)
//
// and internal/outbox, which holds the rules (what a message holds, when it
// is retried, dead-lettered or erased), is its one caller. Messages are
// written by CreateDelivery and UpdateDelivery in the transaction of the
// delivery change that causes them; the store writes a message whose ID is
// already there not at all (the ID is the idempotency key), so one delivery
// version never gets two messages of one kind. The tables are migration
// 0006's.

// The states of an outbox message.
const (
	OutboxPending = "pending" // to send (again) at NextAt
	OutboxSent    = "sent"    // sent: its secret is erased
	OutboxDead    = "dead"    // dead letter: an admin may resend it
	OutboxSkipped = "skipped" // nothing to send any more (superseded, no endpoint)
)

// OutboxMessage is one message of the outbox.
type OutboxMessage struct {
	// ID is the idempotency key (internal/outbox derives it from realm,
	// delivery, version and kind); receivers dedupe on it.
	ID, Realm, Delivery string
	// Version is the delivery's code version the message is about.
	Version uint32
	// Kind is internal/outbox's name of what the message is.
	Kind, State string
	// Attempts counts the claims (a claim is an attempt, even if the
	// process dies before it finishes).
	Attempts             int
	NextAt, LeaseUntil   time.Time
	LeaseOwner           string
	CreatedAt, UpdatedAt time.Time
	ExpiresAt            time.Time
	LastError            string
	Payload, Secret      []byte
}

// OutboxFinish is the end of one attempt at a claimed message.
type OutboxFinish struct {
	ID, Owner string
	// State is the message's state after the attempt: OutboxPending (retry
	// at NextAt), OutboxSent, OutboxDead or OutboxSkipped.
	State     string
	NextAt    time.Time
	Now       time.Time
	LastError string
	// EraseSecret sets the message's secret to NULL.
	EraseSecret bool
	// Audit, when set, is written in the same transaction.
	Audit *eventlog.Entry
}

// RealmWebhook is where a realm's delivery events go.
type RealmWebhook struct {
	Realm, URL string
	// Secret is the HMAC key, sealed by the caller.
	Secret    []byte
	UpdatedAt time.Time
}

// MaxOutboxError bounds LastError (longer ones are cut).
const MaxOutboxError = 512

// OutboxStore stores the outbox and the realms' webhooks.
type OutboxStore interface {
	// ClaimOutbox leases up to limit (1..MaxListLimit) pending messages
	// due at now whose lease has run out to owner until now+lease,
	// counting an attempt on each, and returns them. Several processes on
	// one database never claim one message at once (PostgreSQL: FOR UPDATE
	// SKIP LOCKED; SQLite: one writer).
	ClaimOutbox(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]OutboxMessage, error)
	// FinishOutbox ends the attempt: provided the message is still pending
	// and leased to f.Owner, it takes f's state, next time and error (the
	// lease is released), with f.Audit in the same transaction. ErrConflict
	// when the lease was lost (another process may have sent it), ErrNotFound.
	FinishOutbox(ctx context.Context, f OutboxFinish) error
	// GetOutbox returns realm's message id (ErrNotFound).
	GetOutbox(ctx context.Context, realm, id string) (OutboxMessage, error)
	// ListOutbox returns up to limit of realm's messages in state (any when
	// ""), with ID > after, by ID.
	ListOutbox(ctx context.Context, realm, state, after string, limit int) ([]OutboxMessage, error)
	// ResendOutbox makes realm's message id pending again, due at now, with
	// no attempt counted and its CreatedAt set to now, and writes e in the same transaction, provided it
	// is in state from. ErrConflict when it is not (any more), ErrNotFound.
	ResendOutbox(ctx context.Context, realm, id, from string, now time.Time, e eventlog.Entry) error
	// EraseOutboxSecrets sets to NULL the secret of every message in state
	// dead whose ExpiresAt is at or before now, and returns how many.
	EraseOutboxSecrets(ctx context.Context, now time.Time) (int64, error)
	// SetRealmWebhook stores realm's webhook (replacing it) with e in one
	// transaction. ErrNotFound when the realm does not exist.
	SetRealmWebhook(ctx context.Context, w RealmWebhook, e eventlog.Entry) error
	// GetRealmWebhook returns realm's webhook (ErrNotFound when none).
	GetRealmWebhook(ctx context.Context, realm string) (RealmWebhook, error)
}

var _ OutboxStore = (*sqlStore)(nil)

func checkOutbox(msgs []OutboxMessage) error {
	for _, m := range msgs {
		if err := first(checkID("outbox ID", m.ID), checkID("realm ID", m.Realm), checkID("delivery ID", m.Delivery)); err != nil {
			return err
		}
		if m.Kind == "" || len(m.Kind) > MaxDeliveryNameLen || m.Version == 0 || m.ExpiresAt.IsZero() {
			return invalid("outbox message %q needs a kind of 1 to %d bytes, a version and an expiry", m.ID, MaxDeliveryNameLen)
		}
		if err := first(checkBlob("outbox payload", m.Payload), checkBlob("outbox secret", m.Secret)); err != nil {
			return err
		}
	}
	return nil
}

// insertOutbox writes msgs as pending, due at their NextAt (their
// CreatedAt when zero), inside the caller's transaction. A message whose
// ID exists is not written again.
func insertOutbox(ctx context.Context, q querier, msgs []OutboxMessage) error {
	for _, m := range msgs {
		next := m.NextAt
		if next.IsZero() {
			next = m.CreatedAt
		}
		if _, err := q.exec(ctx, `INSERT INTO outbox (id, realm, delivery, version, kind, state, attempts, next_us, lease_owner,
				lease_until_us, created_us, updated_us, expires_us, last_error, payload, secret)
			VALUES ($1, $2, $3, $4, $5, $6, 0, $7, '', 0, $8, $8, $9, '', $10, $11) ON CONFLICT (id) DO NOTHING`,
			m.ID, m.Realm, m.Delivery, int64(m.Version), m.Kind, OutboxPending, micros(next), micros(m.CreatedAt),
			micros(m.ExpiresAt), nullBytes(m.Payload), nullBytes(m.Secret)); err != nil {
			return err
		}
	}
	return nil
}

const outboxColumns = `id, realm, delivery, version, kind, state, attempts, next_us, lease_owner, lease_until_us,
	created_us, updated_us, expires_us, last_error, payload, secret`

func scanOutbox(r row) (OutboxMessage, error) {
	var m OutboxMessage
	var version, attempts, next, lease, created, updated, expires int64
	err := r.Scan(&m.ID, &m.Realm, &m.Delivery, &version, &m.Kind, &m.State, &attempts, &next, &m.LeaseOwner, &lease,
		&created, &updated, &expires, &m.LastError, &m.Payload, &m.Secret)
	m.Version, m.Attempts = uint32(version), int(attempts)
	m.NextAt, m.LeaseUntil, m.CreatedAt = fromMicros(next), fromMicros(lease), fromMicros(created)
	m.UpdatedAt, m.ExpiresAt = fromMicros(updated), fromMicros(expires)
	return m, err
}

func (s *sqlStore) ClaimOutbox(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]OutboxMessage, error) {
	if err := first(checkLimit(limit), checkID("outbox owner", owner)); err != nil {
		return nil, err
	}
	if lease <= 0 {
		return nil, invalid("outbox lease %v must be positive", lease)
	}
	// PostgreSQL: rows another session is claiming are skipped, not waited
	// for; the outer conditions are checked again on the locked rows.
	// SQLite has one writer, so the plain subquery is enough.
	lock := ""
	if s.e.name() == "postgres" {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	// A write whose ctx ends while it is being applied returns at once and
	// is applied later (committer.do): the result crosses under mu.
	var mu sync.Mutex
	var out []OutboxMessage
	err := s.e.write(ctx, func(q querier) error {
		rs, err := q.query(ctx, `UPDATE outbox SET lease_owner = $1, lease_until_us = $2, attempts = attempts + 1, updated_us = $3
			WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_us <= $3 AND lease_until_us <= $3
				ORDER BY next_us, id LIMIT $4`+lock+`)
			AND state = 'pending' AND lease_until_us <= $3
			RETURNING `+outboxColumns, owner, micros(now.Add(lease)), micros(now), int64(limit))
		ms, err := collect(s, rs, err, scanOutbox)
		mu.Lock()
		out = ms
		mu.Unlock()
		return err
	})
	if err != nil {
		return nil, classify(s.e, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return out, nil
}

func (s *sqlStore) FinishOutbox(ctx context.Context, f OutboxFinish) error {
	switch f.State {
	case OutboxPending, OutboxSent, OutboxDead, OutboxSkipped:
	default:
		return invalid("outbox state %q", f.State)
	}
	// Text a database takes: valid UTF-8, no NUL, at most MaxOutboxError bytes.
	f.LastError = strings.ToValidUTF8(strings.ReplaceAll(f.LastError, "\x00", ""), "")
	if len(f.LastError) > MaxOutboxError {
		f.LastError = strings.ToValidUTF8(f.LastError[:MaxOutboxError], "")
	}
	erase := `secret`
	if f.EraseSecret {
		erase = `NULL`
	}
	stmt := `UPDATE outbox SET state = $1, next_us = $2, lease_owner = '', lease_until_us = 0, updated_us = $3,
		last_error = $4, secret = ` + erase + ` WHERE id = $5 AND state = 'pending' AND lease_owner = $6`
	args := []any{f.State, micros(f.NextAt), s.stamp(f.Now), f.LastError, f.ID, f.Owner}
	var n int64
	var err error
	if f.Audit == nil {
		n, err = s.exec(ctx, stmt, args...)
	} else {
		defer s.chainLock()()
		err = inTx(ctx, s.e, isAuditRace, func(q querier) error {
			if n, err = q.exec(ctx, stmt, args...); err != nil || n == 0 {
				return err
			}
			_, err := appendAuditIn(ctx, s, q, []eventlog.Entry{*f.Audit})
			return err
		})
	}
	if err != nil || n > 0 {
		return classify(s.e, err)
	}
	if err := s.e.reader().queryRow(ctx, `SELECT id FROM outbox WHERE id = $1`, f.ID).Scan(new(string)); err != nil {
		return s.noRows(err, "outbox message %q", f.ID)
	}
	return fmt.Errorf("%w: outbox message %q is no longer leased to %q", ErrConflict, f.ID, f.Owner)
}

func (s *sqlStore) GetOutbox(ctx context.Context, realm, id string) (OutboxMessage, error) {
	m, err := scanOutbox(s.e.reader().queryRow(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE realm = $1 AND id = $2`, realm, id))
	if err != nil {
		return OutboxMessage{}, s.noRows(err, "outbox message %q in realm %q", id, realm)
	}
	return m, nil
}

func (s *sqlStore) ListOutbox(ctx context.Context, realm, state, after string, limit int) ([]OutboxMessage, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	rs, err := s.e.reader().query(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE realm = $1 AND ($2 = '' OR state = $2) AND id > $3
		ORDER BY id LIMIT $4`, realm, state, after, int64(limit))
	return collect(s, rs, err, scanOutbox)
}

func (s *sqlStore) ResendOutbox(ctx context.Context, realm, id, from string, now time.Time, e eventlog.Entry) error {
	defer s.chainLock()()
	var n int64
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		var err error
		n, err = q.exec(ctx, `UPDATE outbox SET state = 'pending', attempts = 0, next_us = $1, lease_owner = '', lease_until_us = 0,
			created_us = $1, updated_us = $1 WHERE realm = $2 AND id = $3 AND state = $4`, micros(now), realm, id, from)
		if err != nil || n == 0 {
			return err
		}
		_, err = appendAuditIn(ctx, s, q, []eventlog.Entry{e})
		return err
	})
	if err != nil || n > 0 {
		return err
	}
	if _, err := s.GetOutbox(ctx, realm, id); err != nil {
		return err
	}
	return fmt.Errorf("%w: outbox message %q is not %s", ErrConflict, id, from)
}

func (s *sqlStore) EraseOutboxSecrets(ctx context.Context, now time.Time) (int64, error) {
	n, err := s.exec(ctx, `UPDATE outbox SET secret = NULL WHERE state = 'dead' AND expires_us <= $1 AND secret IS NOT NULL`, micros(now))
	return n, classify(s.e, err)
}

func (s *sqlStore) SetRealmWebhook(ctx context.Context, w RealmWebhook, e eventlog.Entry) error {
	if err := first(checkID("realm ID", w.Realm), checkBlob("webhook secret", w.Secret)); err != nil {
		return err
	}
	if w.URL == "" || len(w.URL) > 2048 || len(w.Secret) == 0 {
		return invalid("webhook of realm %q needs a URL of at most 2048 bytes and a secret", w.Realm)
	}
	defer s.chainLock()()
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		if _, err := q.exec(ctx, `INSERT INTO realm_webhooks (realm, url, secret, updated_us) VALUES ($1, $2, $3, $4)
			ON CONFLICT (realm) DO UPDATE SET url = excluded.url, secret = excluded.secret, updated_us = excluded.updated_us`,
			w.Realm, w.URL, w.Secret, s.stamp(w.UpdatedAt)); err != nil {
			return err
		}
		_, err := appendAuditIn(ctx, s, q, []eventlog.Entry{e})
		return err
	})
	if errors.Is(err, errForeignKey) {
		return fmt.Errorf("%w: realm %q (create it first)", ErrNotFound, w.Realm)
	}
	return err
}

func (s *sqlStore) GetRealmWebhook(ctx context.Context, realm string) (RealmWebhook, error) {
	w := RealmWebhook{Realm: realm}
	var updated int64
	err := s.e.reader().queryRow(ctx, `SELECT url, secret, updated_us FROM realm_webhooks WHERE realm = $1`, realm).Scan(&w.URL, &w.Secret, &updated)
	if err != nil {
		return RealmWebhook{}, s.noRows(err, "webhook of realm %q", realm)
	}
	w.UpdatedAt = fromMicros(updated)
	return w, nil
}

func (s *sqlStore) DueDeliveries(ctx context.Context, now time.Time, states []string, limit int) ([]Delivery, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	if len(states) == 0 || len(states) > 16 {
		return nil, invalid("1 to 16 states, not %d", len(states))
	}
	args := []any{micros(now), int64(limit)}
	marks := make([]string, len(states))
	for i, st := range states {
		args = append(args, st)
		marks[i] = fmt.Sprintf("$%d", i+3)
	}
	rs, err := s.e.reader().query(ctx, `SELECT `+deliveryColumns+` FROM deliveries WHERE not_after_us <= $1 AND state IN (`+
		strings.Join(marks, ", ")+`) ORDER BY not_after_us, realm, id LIMIT $2`, args...)
	return collect(s, rs, err, scanDelivery)
}
