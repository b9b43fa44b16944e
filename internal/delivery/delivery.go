// Package delivery holds the rules of deliveries (issue 11,
// docs/deliveries.md): a parcel whose recipient is given a one-time code
// that the courier checks at the door, on the one device the delivery is
// assigned to, once, before it expires.
//
// Service is the one place the rules live; the HTTP handlers and the CLI
// (through the API) call it:
//
//	svc := &delivery.Service{Store: st.(store.DeliveryStore), Master: master, Now: now}
//	d, code, err := svc.Create(ctx, realm, delivery.Request{ID: "parcel-1", Device: "dev-7",
//		Recipient: delivery.Recipient{Email: "ana@example.org"}, NotAfter: due, Mode: delivery.ModeHash}, actor)
//	d, code, err = svc.Reassign(ctx, realm, "parcel-1", "dev-9", actor) // the old code is dead
//	d, err = svc.Cancel(ctx, realm, "parcel-1", actor)
//
// The states and the transitions between them are one table (states.go).
// The service keeps no code in the clear: it stores an HMAC of the current
// code under a master-derived key, bound to the delivery and code version,
// and the recipient's contact sealed with internal/secretbox. Every change
// is audited in the same transaction as the change, and neither audit
// entries nor errors carry the recipient or a code.
//
// With an Outbox (internal/outbox), every change also writes, in the same
// transaction, the shipper's event and, for Create and Reassign, the
// recipient's message with the code sealed; Create and Reassign then return
// no code (""), and the worker calls Notified once the message is sent.
// Without one, the code is returned once by Create and Reassign and the
// caller hands it to the recipient.
package delivery

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/secretbox"
	"github.com/outpost-auth/outpost/internal/store"
)

// Mode is how the courier's device will check the code offline (the modes
// themselves come with the route manifest, a later step).
type Mode string

// The three modes of issue 11.
const (
	ModeHash        Mode = "hash"
	ModeFingerprint Mode = "fingerprint"
	ModeToken       Mode = "token"
)

// Limits.
const (
	// MaxLifetime bounds not_after after the creation or reassignment.
	MaxLifetime = 30 * 24 * time.Hour
	// MaxEmailLen and the phone rule (E.164: "+" and 8 to 15 digits) bound a contact.
	MaxEmailLen = 254
)

var (
	// ErrInvalid: a request field is wrong; the message says which (never its value).
	ErrInvalid = errors.New("invalid delivery request")
	// ErrState: the delivery's state does not allow the change (the message
	// names the state).
	ErrState = errors.New("delivery state does not allow this change")
)

// Recipient is who receives the code: exactly one of Email and Phone.
type Recipient struct {
	Email string `json:"email,omitempty"`
	Phone string `json:"phone,omitempty"`
}

// Request creates a delivery.
type Request struct {
	ID        string
	Recipient Recipient
	Device    string
	NotAfter  time.Time
	Mode      Mode
}

// Delivery is what callers see of a delivery: no recipient, no code.
type Delivery struct {
	Realm, ID, Device    string
	Mode                 Mode
	State                State
	CreatedAt, UpdatedAt time.Time
	NotAfter             time.Time
	CodeVersion          uint32
	// Token is set by Create and Reassign for a delivery in token mode:
	// the signed token the recipient's message carries (token.go).
	Token *Token
}

// Service keeps deliveries.
type Service struct {
	Store  store.DeliveryStore
	Master *keys.Master
	// Now is the clock; nil means clock.System.
	Now func() time.Time
	// Digits is the random length of codes; 0 means deliverycode.DefaultDigits.
	Digits int
	// Outbox, when set, gives the messages each change writes with it.
	Outbox Outbox
	// Courier, when set, is the courier's side (courier.go): registered
	// devices, mode data, manifests, receipts and proofs.
	Courier *Courier
	// AttemptLimit bounds the codes tried against one code version (online
	// confirms and sealed codes together, confirm.go); 0 means
	// DefaultAttemptLimit.
	AttemptLimit int

	seen seenConfirms // signed confirms received (signedconfirm.go)
}

// Outbox is what the service asks for the messages of a change
// (internal/outbox implements it).
type Outbox interface {
	// Messages returns the outbox messages to write with d's change to its
	// (new) state d.State at now: the shipper's event, and when code is not
	// "", the recipient's message carrying it. kept reports that the code
	// travels in a message, so that the caller must not return it.
	Messages(ctx context.Context, d store.Delivery, code string, now time.Time) (msgs []store.OutboxMessage, kept bool, err error)
}

// messages asks the outbox, if any, for the messages of d's change, and
// returns the code the caller may still see ("" once a message carries it).
func (s *Service) messages(ctx context.Context, d store.Delivery, code string, now time.Time) ([]store.OutboxMessage, string, error) {
	if s.Outbox == nil {
		return nil, code, nil
	}
	msgs, kept, err := s.Outbox.Messages(ctx, d, code, now)
	if err != nil {
		return nil, "", err
	}
	if kept {
		code = ""
	}
	return msgs, code, nil
}

func (s *Service) now() time.Time { return clock.Or(s.Now)() }

// Create stores a new delivery in state created with a fresh code, audited
// (delivery.create), and returns it with the code, which is not kept, and
// in token mode the signed token (Delivery.Token); neither when the
// recipient's message carries them (an Outbox with a notifier).
// store.ErrExists when the realm already has the id.
func (s *Service) Create(ctx context.Context, realm string, r Request, actor string) (Delivery, string, error) {
	now := s.now()
	if err := checkRequest(r, now); err != nil {
		return Delivery{}, "", err
	}
	if err := s.checkDevice(ctx, realm, r.Device); err != nil {
		return Delivery{}, "", err
	}
	contact, _ := json.Marshal(r.Recipient)
	sealed, err := s.box().Seal(contact, recipientAD(realm, r.ID))
	if err != nil {
		return Delivery{}, "", err
	}
	code, err := deliverycode.New(s.digits())
	if err != nil {
		return Delivery{}, "", err
	}
	d := store.Delivery{Realm: realm, ID: r.ID, Device: r.Device, Mode: string(r.Mode), State: string(Created),
		CreatedAt: now, UpdatedAt: now, NotAfter: r.NotAfter, CodeVersion: 1, Recipient: sealed}
	d.CodeMAC = s.mac(realm, r.ID, 1, code)
	if d.Check, err = s.sealedCheck(d, code); err != nil {
		return Delivery{}, "", err
	}
	v := view(d, now)
	if v.Token, err = s.tokenFor(v); err != nil {
		return Delivery{}, "", err
	}
	msgs, code, err := s.messages(ctx, d, code, now)
	if err != nil {
		return Delivery{}, "", err
	}
	if code == "" {
		v.Token = nil // the recipient's message carries it: it is their credential
	}
	if err := s.Store.CreateDelivery(ctx, d, s.entry(audit.DeliveryCreate, actor, d, now), msgs...); err != nil {
		return Delivery{}, "", err
	}
	return v, code, nil
}

// Get returns realm's delivery id (store.ErrNotFound).
func (s *Service) Get(ctx context.Context, realm, id string) (Delivery, error) {
	d, err := s.Store.GetDelivery(ctx, realm, id)
	if err != nil {
		return Delivery{}, err
	}
	return view(d, s.now()), nil
}

// List returns up to limit of realm's deliveries with id > after, by id.
func (s *Service) List(ctx context.Context, realm, after string, limit int) ([]Delivery, error) {
	ds, err := s.Store.ListDeliveries(ctx, realm, after, limit)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]Delivery, len(ds))
	for i, d := range ds {
		out[i] = view(d, now)
	}
	return out, nil
}

// Cancel cancels the delivery, audited (delivery.cancel); its code is
// dead from then on. ErrState when its state does not allow it.
func (s *Service) Cancel(ctx context.Context, realm, id, actor string) (Delivery, error) {
	d, _, err := s.change(ctx, realm, id, Cancelled, actor, func(*store.Delivery) (string, error) { return "", nil })
	return d, err
}

// Reassign moves the delivery to device with a new code version, audited
// (delivery.reassign), and returns the new code (not kept), and in token
// mode a new token (Delivery.Token). The old code no longer matches and an
// old token names the old version and device, which devices refuse
// (deliverytoken.Claims.For). ErrState when the delivery's state does not
// allow it.
func (s *Service) Reassign(ctx context.Context, realm, id, device, actor string) (Delivery, string, error) {
	if err := ident.Check("device", device); err != nil {
		return Delivery{}, "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := s.checkDevice(ctx, realm, device); err != nil {
		return Delivery{}, "", err
	}
	var tok *Token
	d, code, err := s.change(ctx, realm, id, Reassigned, actor, func(d *store.Delivery) (string, error) {
		code, err := deliverycode.New(s.digits())
		if err != nil {
			return "", err
		}
		d.Device, d.CodeVersion = device, d.CodeVersion+1
		d.CodeMAC = s.mac(realm, id, d.CodeVersion, code)
		if d.Check, err = s.sealedCheck(*d, code); err != nil {
			return "", err
		}
		tok, err = s.tokenFor(view(*d, s.now()))
		return code, err
	})
	if err == nil && code != "" { // else the recipient's message carries it
		d.Token = tok
	}
	return d, code, err
}

// ErrSuperseded: the message is about a code version that is no longer
// the delivery's, or a delivery that takes no change any more (cancelled,
// expired, delivered): it must not be sent.
var ErrSuperseded = errors.New("delivery has moved on: the message is no longer current")

// Notified records that the recipient's message of code version version
// was sent: created or reassigned → notified, audited (delivery.notify),
// with its shipper event. A delivery out for delivery at that version
// stays so, unchanged (its device fetched its manifest before the message
// went out), with no error. ErrSuperseded when the delivery has moved on
// (another version, or a state that cannot become notified).
func (s *Service) Notified(ctx context.Context, realm, id string, version uint32, actor string) (Delivery, error) {
	if d, err := s.Store.GetDelivery(ctx, realm, id); err == nil && d.CodeVersion == version && current(d, s.now()) == OutForDelivery {
		// The courier's device fetched its manifest before the message went
		// out: the message is still the recipient's, and the state stays.
		return view(d, s.now()), nil
	}
	d, _, err := s.change(ctx, realm, id, Notified, actor, func(d *store.Delivery) (string, error) {
		if d.CodeVersion != version {
			return "", fmt.Errorf("%w: delivery %q is at code version %d, not %d", ErrSuperseded, ident.Clip(id), d.CodeVersion, version)
		}
		return "", nil
	})
	if errors.Is(err, ErrState) {
		err = fmt.Errorf("%w: %w", ErrSuperseded, err)
	}
	return d, err
}

// Current returns realm's delivery id and its recipient when version is
// still its code version and its state may still take a change (the
// recipient's message is still worth sending); ErrSuperseded otherwise.
// Only the outbox worker calls it: it is the one reader of the sealed
// recipient.
func (s *Service) Current(ctx context.Context, realm, id string, version uint32) (Delivery, Recipient, error) {
	d, err := s.Store.GetDelivery(ctx, realm, id)
	if err != nil {
		return Delivery{}, Recipient{}, err
	}
	v := view(d, s.now())
	if d.CodeVersion != version || len(transitions[v.State]) == 0 || v.State == Failed {
		return Delivery{}, Recipient{}, fmt.Errorf("%w: delivery %q is %s at code version %d", ErrSuperseded, ident.Clip(id), v.State, d.CodeVersion)
	}
	r, err := s.openRecipient(d)
	return v, r, err
}

// change moves realm's delivery id to state to after edit, if the table
// allows it from its current state, and stores it with its audit entry on
// the condition that nobody changed it meanwhile (store.ErrConflict).
func (s *Service) change(ctx context.Context, realm, id string, to State, actor string, edit func(*store.Delivery) (string, error)) (Delivery, string, error) {
	d, err := s.Store.GetDelivery(ctx, realm, id)
	if err != nil {
		return Delivery{}, "", err
	}
	now := s.now()
	from := current(d, now)
	if !Allowed(from, to) {
		return Delivery{}, "", fmt.Errorf("%w: delivery %q is %s and cannot become %s", ErrState, ident.Clip(id), from, to)
	}
	fromState, fromVersion := d.State, d.CodeVersion
	code, err := edit(&d)
	if err != nil {
		return Delivery{}, "", err
	}
	return s.commit(ctx, d, fromState, fromVersion, to, actor, code, now)
}

// changeKinds are the audit kinds of the changes.
var changeKinds = map[State]string{Cancelled: audit.DeliveryCancel, Reassigned: audit.DeliveryReassign,
	Notified: audit.DeliveryNotify, Expired: audit.DeliveryExpire}

// commit stores d, read in state fromState at version fromVersion and
// edited, as now in state to, with its audit entry and its outbox messages
// (code, if any, in the recipient's), on the condition that nobody changed
// it meanwhile (store.ErrConflict). It returns the code the caller may see.
func (s *Service) commit(ctx context.Context, d store.Delivery, fromState string, fromVersion uint32, to State, actor, code string, now time.Time) (Delivery, string, error) {
	d.State, d.UpdatedAt = string(to), now
	msgs, code, err := s.messages(ctx, d, code, now)
	if err != nil {
		return Delivery{}, "", err
	}
	if err := s.Store.UpdateDelivery(ctx, d, fromState, fromVersion, s.entry(changeKinds[to], actor, d, now), msgs...); err != nil {
		return Delivery{}, "", err
	}
	return view(d, now), code, nil
}

// ExpireDue stores the expiry of up to limit (1..store.MaxListLimit)
// deliveries whose not_after has passed and whose stored state may still
// become expired: each becomes expired, audited (delivery.expire), with its
// shipper event, and returns how many changed. Reading a delivery shows it
// expired from not_after on anyway; this makes the change stored and
// announced. A delivery changed meanwhile is left for the next call.
func (s *Service) ExpireDue(ctx context.Context, limit int, actor string) (int, error) {
	now := s.now()
	var from []string
	for st, tos := range transitions {
		if slices.Contains(tos, Expired) {
			from = append(from, string(st))
		}
	}
	ds, err := s.Store.DueDeliveries(ctx, now, from, limit)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range ds {
		_, _, err := s.commit(ctx, d, d.State, d.CodeVersion, Expired, actor, "", now)
		switch {
		case errors.Is(err, store.ErrConflict):
		case err != nil:
			return n, err
		default:
			n++
		}
	}
	return n, nil
}

// current is the delivery's state at now: a delivery that is not yet
// finished is expired once now reaches its not_after, whatever is stored.
func current(d store.Delivery, now time.Time) State {
	st := State(d.State)
	if !now.Before(d.NotAfter) && Allowed(st, Expired) {
		return Expired
	}
	return st
}

func view(d store.Delivery, now time.Time) Delivery {
	return Delivery{Realm: d.Realm, ID: d.ID, Device: d.Device, Mode: Mode(d.Mode), State: current(d, now),
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, NotAfter: d.NotAfter, CodeVersion: d.CodeVersion}
}

// codeMatches reports, in constant time, whether code is the delivery's
// current code (verification itself comes with the next steps).
func (s *Service) codeMatches(d store.Delivery, code string) bool {
	return hmac.Equal(s.mac(d.Realm, d.ID, d.CodeVersion, code), d.CodeMAC)
}

// mac is HMAC-SHA256 under the realm's delivery-code key of the delivery
// id, the code version and the code: a MAC moved to another delivery or
// version matches nothing.
func (s *Service) mac(realm, id string, version uint32, code string) []byte {
	h := hmac.New(sha256.New, s.Master.Derive(32, keys.PurposeDeliveryCodeMAC, 0, realm))
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], version)
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(id))))
	h.Write([]byte(id))
	h.Write(v[:])
	h.Write([]byte(code))
	return h.Sum(nil)
}

func (s *Service) box() *secretbox.Box { return secretbox.New(s.Master, 0, "deliveries.recipient") }

func recipientAD(realm, id string) []byte { return []byte(realm + "\x00" + id) }

// Recipient opens the delivery's sealed contact (for the notifier).
func (s *Service) Recipient(ctx context.Context, realm, id string) (Recipient, error) {
	d, err := s.Store.GetDelivery(ctx, realm, id)
	if err != nil {
		return Recipient{}, err
	}
	return s.openRecipient(d)
}

func (s *Service) openRecipient(d store.Delivery) (Recipient, error) {
	b, err := s.box().Open(d.Recipient, recipientAD(d.Realm, d.ID))
	if err != nil {
		return Recipient{}, err
	}
	var r Recipient
	return r, json.Unmarshal(b, &r)
}

func (s *Service) digits() int {
	if s.Digits == 0 {
		return deliverycode.DefaultDigits
	}
	return s.Digits
}

// entry is the audit entry of a change: ids, device, mode, state, expiry
// and code version only.
func (s *Service) entry(kind, actor string, d store.Delivery, now time.Time) eventlog.Entry {
	data, _ := json.Marshal(map[string]any{"realm": d.Realm, "device": d.Device, "mode": d.Mode, "state": d.State,
		"not_after": d.NotAfter.UTC().Format(time.RFC3339), "code_version": d.CodeVersion})
	return eventlog.Entry{Time: now, Kind: kind, Actor: actor, Subject: d.ID, Data: data}
}

func checkRequest(r Request, now time.Time) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	if err := ident.Check("delivery id", r.ID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := ident.Check("device", r.Device); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	switch r.Mode {
	case ModeHash, ModeFingerprint, ModeToken:
	default:
		return bad("mode must be hash, fingerprint or token")
	}
	if !r.NotAfter.After(now) || r.NotAfter.Sub(now) > MaxLifetime {
		return bad("not_after must be in the future and at most %v ahead", MaxLifetime)
	}
	switch e, p := r.Recipient.Email, r.Recipient.Phone; {
	case (e == "") == (p == ""):
		return bad("recipient needs exactly one of email and phone")
	case e != "" && !validEmail(e):
		return bad("recipient email is not an address (local@domain, at most %d bytes)", MaxEmailLen)
	case p != "" && !validPhone(p):
		return bad("recipient phone must be in E.164 form: + and 8 to 15 digits")
	}
	return nil
}

func validEmail(e string) bool {
	at := strings.LastIndexByte(e, '@')
	if len(e) > MaxEmailLen || at < 1 || at == len(e)-1 || !strings.Contains(e[at:], ".") {
		return false
	}
	for _, c := range e {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

func validPhone(p string) bool {
	if len(p) < 9 || len(p) > 16 || p[0] != '+' || p[1] == '0' {
		return false
	}
	for i := 1; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}
