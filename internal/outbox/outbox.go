// Package outbox is the transactional outbox of deliveries (issue 11,
// docs/deliveries.md "The outbox"): the messages a delivery change causes
// are written in the transaction of the change, and a worker sends them
// later, with retries, until they are sent or dead.
//
// Two kinds of message:
//
//   - the recipient's message (kind "recipient"), written by Create and
//     Reassign: the code, sealed with a master-derived key
//     (internal/secretbox, bound to the message id), goes to the recipient
//     through a notifier (internal/notify: SMTP for email, an SMS gateway
//     webhook for phones). Once sent the code is erased, and the delivery
//     becomes notified (delivery.Service.Notified);
//   - the shipper's event (kind "event.<state>"), written by every state
//     change when the realm has a webhook: a JSON webhook.Event signed with
//     the realm's secret (the public package webhook verifies it).
//
// One Service is the delivery service's Outbox (Messages) and the worker
// (Run, RunOnce); the admin calls List, Resend, SetWebhook and Webhook:
//
//	ob := &outbox.Service{Store: st.(store.OutboxStore), Deliveries: dsvc, Master: m, Channels: ch, Now: now}
//	dsvc.Outbox = ob
//	go ob.Run(ctx, 2*time.Second) // in every `outpost serve` process
//
// Guarantees. A message is written once per delivery, code version and
// kind (its id is derived from them, and the store writes an id once), in
// the transaction of the change: nothing is lost if a gateway is down or
// the process dies. A worker claims a message with a lease before sending,
// so several processes on one database never send it at once, and marks it
// sent after (a recipient's message: after the delivery became notified);
// the one window is a crash (or a lost lease) between the gateway taking a
// message and the mark, after which the message is sent
// again when the lease runs out. Its id is the mail's Message-ID, the SMS
// request's id and the event's id, so receivers drop the repeat.
// A failed attempt is retried after backoff.Delay(BaseDelay, MaxDelay,
// attempts); a message is dead after MaxAttempts attempts, after MaxAge,
// when a recipient's code has expired, or at once when the gateway refused
// it for good (SMTP 5xx, HTTP 4xx). A dead recipient message keeps its
// sealed code until the delivery's expiry so an admin can resend it, then
// the code is erased.
package outbox

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/backoff"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/delivery"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/notify"
	"github.com/outpost-auth/outpost/internal/secretbox"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/webhook"
)

// Kinds of messages.
const (
	KindRecipient = "recipient"
	// KindEventPrefix + the delivery's new state is an event's kind.
	KindEventPrefix = "event."
)

// Policy is how the worker retries. The zero value of a field is its
// default (DefaultPolicy).
type Policy struct {
	// MaxAttempts: a message is dead after this many attempts.
	MaxAttempts int
	// MaxAge: a message first written (or resent) longer ago is dead.
	MaxAge time.Duration
	// BaseDelay and MaxDelay bound the wait after a failed attempt.
	BaseDelay, MaxDelay time.Duration
	// Lease is how long a claimed message is the worker's alone; it must
	// outlast one send (the notifiers' timeouts).
	Lease time.Duration
	// Batch is how many messages one round claims.
	Batch int
}

// DefaultPolicy retries for about a day.
var DefaultPolicy = Policy{MaxAttempts: 12, MaxAge: 24 * time.Hour, BaseDelay: 10 * time.Second, MaxDelay: time.Hour,
	Lease: 2 * time.Minute, Batch: 32}

func (p Policy) orDefault() Policy {
	d := DefaultPolicy
	if p.MaxAttempts > 0 {
		d.MaxAttempts = p.MaxAttempts
	}
	if p.MaxAge > 0 {
		d.MaxAge = p.MaxAge
	}
	if p.BaseDelay > 0 {
		d.BaseDelay = p.BaseDelay
	}
	if p.MaxDelay > 0 {
		d.MaxDelay = p.MaxDelay
	}
	if p.Lease > 0 {
		d.Lease = p.Lease
	}
	if p.Batch > 0 {
		d.Batch = min(p.Batch, store.MaxListLimit)
	}
	return d
}

var (
	// ErrNotDead: only a dead message can be resent.
	ErrNotDead = errors.New("outbox: only a dead message can be resent")
	// ErrCodeErased: the dead recipient message's code was erased (the
	// delivery expired); reassign the delivery to issue a new code.
	ErrCodeErased = errors.New("outbox: the code of this message was erased; reassign the delivery to issue a new one")
	// ErrInvalid: a request field is wrong; the message says which.
	ErrInvalid = errors.New("invalid outbox request")
)

// Service is the outbox: what a change writes, the worker, the admin calls.
type Service struct {
	Store      store.OutboxStore
	Deliveries *delivery.Service
	Master     *keys.Master
	// Channels are the recipients' notifiers; with none, the recipient's
	// message is not written and delivery codes are returned by the API.
	Channels notify.Channels
	// Client posts shipper events; nil is a default client.
	Client *http.Client
	// WebhookTimeout bounds one event POST; 0 is 10 seconds.
	WebhookTimeout time.Duration
	Policy         Policy
	Now            func() time.Time
	// Owner names this worker in leases; "" is a random name.
	Owner string
	// Log receives the worker's outcomes (ids, kinds, errors: no code, no
	// contact); nil is slog.Default.
	Log *slog.Logger
	// Token, when set, gives the server-signed token a token-mode
	// delivery's message carries (notify.Message.Token: text, link and QR
	// code) for the delivery's code version; nil sends the code alone.
	Token func(ctx context.Context, d delivery.Delivery) (string, error)
	// Observe, when set, is told each attempt's outcome: kind is
	// "recipient" or "event", result "sent", "retry", "dead" or "skipped".
	Observe func(kind, result string)
}

func (s *Service) now() time.Time { return clock.Or(s.Now)() }

func (s *Service) codeBox() *secretbox.Box { return secretbox.New(s.Master, 0, "outbox.code") }

func (s *Service) webhookBox() *secretbox.Box {
	return secretbox.New(s.Master, 0, "realm_webhooks.secret")
}

// MessageID is the id of realm's delivery's message of kind for code
// version version: its idempotency key, the same whoever computes it.
func MessageID(realm, delivery string, version uint32, kind string) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d\x00%s", realm, delivery, version, kind)))
	return "ob-" + hex.EncodeToString(h[:15])
}

// Notifies reports whether recipients' messages are sent (a notifier is
// configured): then the API no longer returns codes.
func (s *Service) Notifies() bool { return s.Channels.Email != nil || s.Channels.Phone != nil }

// Messages implements delivery.Outbox: the event of d's change when d's
// realm has a webhook, and with code, the recipient's message when a
// notifier is configured (kept is then true).
func (s *Service) Messages(ctx context.Context, d store.Delivery, code string, now time.Time) ([]store.OutboxMessage, bool, error) {
	var msgs []store.OutboxMessage
	kept := false
	if code != "" && s.Notifies() {
		m := s.message(d, KindRecipient, now)
		sealed, err := s.codeBox().Seal([]byte(code), []byte(m.ID))
		if err != nil {
			return nil, false, err
		}
		m.Secret, kept = sealed, true
		msgs = append(msgs, m)
	}
	switch _, err := s.Store.GetRealmWebhook(ctx, d.Realm); {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, false, err
	default:
		m := s.message(d, KindEventPrefix+d.State, now)
		m.Payload, _ = json.Marshal(webhook.Event{ID: m.ID, Type: d.State, Realm: d.Realm, Delivery: d.ID,
			Version: d.CodeVersion, State: d.State, Device: d.Device, Time: now.UTC()})
		msgs = append(msgs, m)
	}
	return msgs, kept, nil
}

func (s *Service) message(d store.Delivery, kind string, now time.Time) store.OutboxMessage {
	return store.OutboxMessage{ID: MessageID(d.Realm, d.ID, d.CodeVersion, kind), Realm: d.Realm, Delivery: d.ID,
		Version: d.CodeVersion, Kind: kind, CreatedAt: now, NextAt: now, ExpiresAt: d.NotAfter}
}

// Run sends due messages every interval until ctx ends. Errors of a round
// are logged, and the next round tries again.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	for {
		if _, err := s.RunOnce(ctx); err != nil && ctx.Err() == nil {
			s.log().Warn("outbox round failed", "error", err.Error())
		}
		if clock.Sleep(ctx, interval) != nil {
			return
		}
	}
}

// RunOnce claims the due messages (one batch), attempts each, stores the
// expiry of deliveries past their not_after (delivery.Service.ExpireDue,
// one batch: their expired events are then sent by the next rounds),
// erases the codes of dead messages past their expiry, and returns how
// many messages it attempted.
func (s *Service) RunOnce(ctx context.Context) (int, error) {
	p := s.Policy.orDefault()
	owner := s.owner()
	now := s.now()
	ms, err := s.Store.ClaimOutbox(ctx, owner, now, p.Lease, p.Batch)
	if err != nil {
		return 0, err
	}
	for _, m := range ms {
		if err := s.attempt(ctx, p, owner, m); err != nil {
			s.log().Warn("outbox: finishing an attempt", "id", m.ID, "error", err.Error())
		}
	}
	if _, err := s.Deliveries.ExpireDue(ctx, p.Batch, "outbox"); err != nil {
		return len(ms), err
	}
	if _, err := s.Store.EraseOutboxSecrets(ctx, s.now()); err != nil {
		return len(ms), err
	}
	return len(ms), nil
}

func (s *Service) owner() string {
	if s.Owner == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		s.Owner = "w-" + hex.EncodeToString(b[:])
	}
	return s.Owner
}

func (s *Service) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// errSkip: there is nothing to send any more (superseded, no webhook).
var errSkip = errors.New("nothing to send")

// attempt sends m once and records the outcome.
func (s *Service) attempt(ctx context.Context, p Policy, owner string, m store.OutboxMessage) error {
	var err error
	kind := "event"
	if m.Kind == KindRecipient {
		kind = "recipient"
		err = s.sendRecipient(ctx, m)
	} else {
		err = s.sendEvent(ctx, m)
	}
	if err == nil && m.Kind == KindRecipient {
		err = s.notified(ctx, m)
	}
	now := s.now()
	f := store.OutboxFinish{ID: m.ID, Owner: owner, Now: now}
	result := ""
	switch {
	case err == nil:
		f.State, f.EraseSecret, result = store.OutboxSent, true, "sent"
	case errors.Is(err, errSkip):
		f.State, f.EraseSecret, f.LastError, result = store.OutboxSkipped, true, err.Error(), "skipped"
	case errors.Is(err, notify.ErrPermanent) || errors.Is(err, notify.ErrNoChannel) || errors.Is(err, secretbox.ErrOpen) ||
		m.Attempts >= p.MaxAttempts || !now.Before(m.CreatedAt.Add(p.MaxAge)) ||
		(m.Kind == KindRecipient && !now.Before(m.ExpiresAt)):
		f.State, f.LastError, result = store.OutboxDead, err.Error(), "dead"
		e := s.entry(audit.OutboxDead, "outbox", m, now, err.Error())
		f.Audit = &e
	default:
		f.State, f.LastError, result = store.OutboxPending, err.Error(), "retry"
		f.NextAt = now.Add(backoff.Delay(p.BaseDelay, p.MaxDelay, m.Attempts))
	}
	if ferr := s.Store.FinishOutbox(ctx, f); ferr != nil {
		return ferr
	}
	if s.Observe != nil {
		s.Observe(kind, result)
	}
	lg := s.log().With("id", m.ID, "realm", m.Realm, "delivery", m.Delivery, "version", m.Version, "kind", m.Kind, "attempt", m.Attempts)
	if err != nil && result != "skipped" {
		lg.Warn("outbox: "+result, "error", err.Error())
	} else {
		lg.Info("outbox: " + result)
	}
	return nil
}

// notified moves the delivery of the sent recipient message m to notified
// (created/reassigned → notified), before m is marked sent: a crash in
// between sends m again (the one window, same id) rather than leaving the
// delivery unnotified. A delivery that moved on meanwhile is not an error;
// a lost race is read again, a few times.
func (s *Service) notified(ctx context.Context, m store.OutboxMessage) error {
	var err error
	for range 3 {
		_, err = s.Deliveries.Notified(ctx, m.Realm, m.Delivery, m.Version, "outbox")
		if err == nil || errors.Is(err, delivery.ErrSuperseded) {
			return nil
		}
		if !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	return fmt.Errorf("outbox: sent, but marking the delivery notified failed (it will be sent again, with the same id): %w", err)
}

func (s *Service) sendRecipient(ctx context.Context, m store.OutboxMessage) error {
	d, r, err := s.Deliveries.Current(ctx, m.Realm, m.Delivery, m.Version)
	if errors.Is(err, delivery.ErrSuperseded) || errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", errSkip, err)
	}
	if err != nil {
		return err
	}
	if m.Secret == nil {
		return fmt.Errorf("%w: %w", notify.ErrPermanent, ErrCodeErased)
	}
	code, err := s.codeBox().Open(m.Secret, []byte(m.ID))
	if err != nil {
		return err
	}
	msg := notify.Message{ID: m.ID, Email: r.Email, Phone: r.Phone, Delivery: d.ID, Code: string(code), NotAfter: d.NotAfter, Time: s.now()}
	if s.Token != nil && d.Mode == delivery.ModeToken {
		if msg.Token, err = s.Token(ctx, d); err != nil {
			return fmt.Errorf("outbox: the delivery's token: %w", err)
		}
	}
	return s.Channels.Notify(ctx, msg)
}

func (s *Service) sendEvent(ctx context.Context, m store.OutboxMessage) error {
	w, err := s.Store.GetRealmWebhook(ctx, m.Realm)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: realm %q has no webhook any more", errSkip, m.Realm)
	}
	if err != nil {
		return err
	}
	secret, err := s.webhookBox().Open(w.Secret, []byte(w.Realm))
	if err != nil {
		return err
	}
	return notify.PostSigned(ctx, s.Client, s.WebhookTimeout, w.URL, secret, m.Payload, s.now(), m.ID)
}

// entry is an audit entry about m: ids, kind, attempts and an error, never
// a code or a contact (the notifiers' errors carry neither).
func (s *Service) entry(kind, actor string, m store.OutboxMessage, now time.Time, lastErr string) eventlog.Entry {
	data, _ := json.Marshal(map[string]any{"realm": m.Realm, "delivery": m.Delivery, "version": m.Version,
		"kind": m.Kind, "attempts": m.Attempts, "error": lastErr})
	return eventlog.Entry{Time: now, Kind: kind, Actor: actor, Subject: m.ID, Data: data}
}

// Message is what the admin sees of an outbox message: no code, no
// contact, no payload.
type Message struct {
	ID, Realm, Delivery string
	Version             uint32
	Kind, State         string
	Attempts            int
	NextAt, CreatedAt   time.Time
	UpdatedAt           time.Time
	LastError           string
	// HasCode reports whether a recipient message still holds its sealed code.
	HasCode bool
}

func view(m store.OutboxMessage) Message {
	return Message{ID: m.ID, Realm: m.Realm, Delivery: m.Delivery, Version: m.Version, Kind: m.Kind, State: m.State,
		Attempts: m.Attempts, NextAt: m.NextAt, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt, LastError: m.LastError,
		HasCode: m.Secret != nil}
}

// States are the message states List accepts.
var States = []string{store.OutboxPending, store.OutboxSent, store.OutboxDead, store.OutboxSkipped}

// List returns up to limit of realm's messages in state ("" for any),
// with id > after, by id.
func (s *Service) List(ctx context.Context, realm, state, after string, limit int) ([]Message, error) {
	if state != "" && !contains(States, state) {
		return nil, fmt.Errorf("%w: state must be one of %s", ErrInvalid, strings.Join(States, ", "))
	}
	ms, err := s.Store.ListOutbox(ctx, realm, state, after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Message, len(ms))
	for i, m := range ms {
		out[i] = view(m)
	}
	return out, nil
}

// Resend makes realm's dead message id pending again (attempts and age
// start over), audited (outbox.resend). ErrNotDead when it is not dead,
// ErrCodeErased when its code is gone, store.ErrNotFound.
func (s *Service) Resend(ctx context.Context, realm, id, actor string) (Message, error) {
	m, err := s.Store.GetOutbox(ctx, realm, id)
	if err != nil {
		return Message{}, err
	}
	if m.State != store.OutboxDead {
		return Message{}, fmt.Errorf("%w: message %q is %s", ErrNotDead, ident.Clip(id), m.State)
	}
	if m.Kind == KindRecipient && m.Secret == nil {
		return Message{}, ErrCodeErased
	}
	now := s.now()
	if err := s.Store.ResendOutbox(ctx, realm, id, store.OutboxDead, now, s.entry(audit.OutboxResend, actor, m, now, m.LastError)); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return Message{}, fmt.Errorf("%w: message %q changed meanwhile: %w", ErrNotDead, ident.Clip(id), err)
		}
		return Message{}, err
	}
	m.State, m.Attempts, m.NextAt, m.UpdatedAt = store.OutboxPending, 0, now, now
	return view(m), nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
