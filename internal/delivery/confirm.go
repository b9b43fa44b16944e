package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/store"
)

// Confirming a code at the server (docs/deliveries.md, "Online confirm"):
// Confirm when the courier is online (an issuer's call, or the device's
// signed confirm). A code the courier's device sealed offline comes back in
// a receipt at sync and is checked by the receipt path (courier.go,
// openSealed) with the same attempt counter. The rules, in this order:
//
//  1. a typo (deliverycode.ErrTypo) or a malformed code costs nothing;
//  2. the delivery must be assigned to the device, in a state that may
//     become delivered;
//  3. one attempt is counted (store.DeliveryAttemptStore), at most
//     AttemptLimit per code version, BEFORE the code is compared, so that
//     guesses sent in parallel cannot outrun the limit;
//  4. the code is compared with the stored MAC in constant time: a match
//     makes the delivery delivered exactly once (a conditional update,
//     audited); a wrong code is audited, and the attempt that reaches the
//     limit makes the delivery failed (reassign it: a new code version
//     starts a new count).

// DefaultAttemptLimit is the codes one code version may be tried with,
// online and on the courier's device alike (the manifest's attempt limit).
const DefaultAttemptLimit = courierproto.DefaultAttempts

// The outcomes of Confirm, for callers to branch on. The
// state errors wrap ErrState too.
var (
	// ErrWrongCode: the code is well-formed but not the delivery's; one
	// attempt was used (the message says how many are left).
	ErrWrongCode = errors.New("wrong delivery code")
	// ErrAttempts: the attempt limit of this code version is used up; the
	// delivery is failed.
	ErrAttempts = errors.New("no attempts left for this delivery code")
	// ErrWrongDevice: the delivery is not assigned to this device, or not
	// at this code version on it (it was reassigned).
	ErrWrongDevice = errors.New("delivery is not assigned to this device")
	// ErrDelivered: the delivery is delivered already (a used code).
	ErrDelivered = fmt.Errorf("%w: the delivery is delivered already", ErrState)
	// ErrExpired: the delivery expired before the code was confirmed.
	ErrExpired = fmt.Errorf("%w: the delivery has expired", ErrState)
)

// Outcome is what a successful confirm did.
type Outcome struct {
	Delivery Delivery
	// Attempt is which attempt of the code version this was (1-based).
	Attempt int
}

func (s *Service) attemptLimit() int {
	if s.AttemptLimit > 0 {
		return s.AttemptLimit
	}
	return DefaultAttemptLimit
}

// Confirm checks code, entered on device, against realm's delivery id at
// the server (online confirm), by the rules above, and on a match makes the
// delivery delivered. Errors: deliverycode.ErrTypo (ask again; no attempt
// used), ErrInvalid (not a code), store.ErrNotFound, ErrWrongDevice,
// ErrDelivered, ErrExpired, ErrState, ErrWrongCode, ErrAttempts,
// store.ErrConflict (changed meanwhile: try again).
func (s *Service) Confirm(ctx context.Context, realm, id, code, device, actor string) (Outcome, error) {
	code, err := deliverycode.Parse(code)
	if errors.Is(err, deliverycode.ErrTypo) {
		return Outcome{}, err
	}
	if err != nil {
		return Outcome{}, fmt.Errorf("%w: the code must be the %d digits the recipient was given", ErrInvalid, s.digits()+1)
	}
	d, err := s.Store.GetDelivery(ctx, realm, id)
	if err != nil {
		return Outcome{}, err
	}
	now := s.now()
	if d.Device != device {
		return Outcome{}, s.refuse(ctx, audit.DeliveryRefused, "wrong_device", actor, d, device, now,
			fmt.Errorf("%w: delivery %q is assigned to another device", ErrWrongDevice, ident.Clip(id)))
	}
	return s.confirm(ctx, d, code, device, "online", actor, now, now)
}

// confirm is rules 2 to 4 for d, assigned to device, and canonical code;
// the state is judged at at (now for online confirms).
func (s *Service) confirm(ctx context.Context, d store.Delivery, code, device, via, actor string, at, now time.Time) (Outcome, error) {
	as, ok := s.Store.(store.DeliveryAttemptStore)
	if !ok {
		return Outcome{}, errors.New("delivery: the store does not count attempts")
	}
	switch st := current(d, at); {
	case st == Delivered:
		return Outcome{}, fmt.Errorf("%w (delivery %q): the code was used", ErrDelivered, ident.Clip(d.ID))
	case st == Expired:
		return Outcome{}, fmt.Errorf("%w: delivery %q expired at %s", ErrExpired, ident.Clip(d.ID), d.NotAfter.UTC().Format(time.RFC3339))
	case st == Failed:
		return Outcome{}, fmt.Errorf("%w: delivery %q is failed (%d wrong codes, or a courier gave up): reassign it to issue a new code",
			ErrAttempts, ident.Clip(d.ID), s.attemptLimit())
	case !Allowed(st, Delivered):
		return Outcome{}, fmt.Errorf("%w: delivery %q is %s and cannot become delivered", ErrState, ident.Clip(d.ID), st)
	}
	limit := s.attemptLimit()
	n, taken, err := as.TakeDeliveryAttempt(ctx, d.Realm, d.ID, d.CodeVersion, limit, s.confirmEntry(audit.DeliveryAttempt, actor, d, device, via, now, nil))
	if err != nil {
		return Outcome{}, err
	}
	if !taken {
		// The attempt that reached the limit failed the delivery if it was
		// wrong; this one must not (a right code may be committing).
		if out, ok, err := s.deliveredMeanwhile(ctx, d); ok {
			return out, err
		}
		return Outcome{}, fmt.Errorf("%w: all %d attempts at delivery %q's code are used: reassign it to issue a new code", ErrAttempts, limit, ident.Clip(d.ID))
	}
	if !s.codeMatches(d, code) {
		return Outcome{}, s.wrong(ctx, d, actor, device, via, n, limit, now)
	}
	from := d.State
	d.State, d.UpdatedAt = string(Delivered), now
	msgs, _, err := s.messages(ctx, d, "", now)
	if err != nil {
		return Outcome{}, err
	}
	if err := s.Store.UpdateDelivery(ctx, d, from, d.CodeVersion, s.confirmEntry(audit.DeliveryDeliver, actor, d, device, via, now,
		map[string]any{"attempt": n, "at": at.UTC().Format(time.RFC3339Nano)}), msgs...); err != nil {
		if errors.Is(err, store.ErrConflict) {
			if out, ok, err := s.deliveredMeanwhile(ctx, d); ok {
				return out, err
			}
		}
		return Outcome{}, err
	}
	return Outcome{Delivery: view(d, now), Attempt: n}, nil
}

// deliveredMeanwhile reports (ok) whether another request delivered d at
// its code version since it was read: the answer is then ErrDelivered.
func (s *Service) deliveredMeanwhile(ctx context.Context, d store.Delivery) (Outcome, bool, error) {
	cur, err := s.Store.GetDelivery(ctx, d.Realm, d.ID)
	if err != nil || State(cur.State) != Delivered || cur.CodeVersion != d.CodeVersion {
		return Outcome{}, false, nil
	}
	return Outcome{}, true, fmt.Errorf("%w (delivery %q): the code was used", ErrDelivered, ident.Clip(d.ID))
}

// wrong records the wrong code of attempt n, fails the delivery at the
// limit, and returns the error to answer.
func (s *Service) wrong(ctx context.Context, d store.Delivery, actor, device, via string, n, limit int, now time.Time) error {
	kind, extra, base := audit.DeliveryWrongCode, map[string]any{"attempt": n, "limit": limit}, ErrWrongCode
	if err := s.appendAudit(ctx, s.confirmEntry(kind, actor, d, device, via, now, extra)); err != nil {
		return err
	}
	if n >= limit {
		s.fail(ctx, d, actor, device, now)
		return fmt.Errorf("%w; that was the last of %d attempts: delivery %q is failed (%w): reassign it to issue a new code", base, limit, ident.Clip(d.ID), ErrAttempts)
	}
	return fmt.Errorf("%w: %d of %d attempts used", base, n, limit)
}

// fail moves d to failed once its attempts are used up, audited. A lost
// race (someone changed it meanwhile) is not an error: the attempts stay
// used, and the caller's answer is the same.
func (s *Service) fail(ctx context.Context, d store.Delivery, actor, device string, now time.Time) {
	from := d.State
	if !Allowed(State(from), Failed) {
		return
	}
	d.State, d.UpdatedAt = string(Failed), now
	msgs, _, err := s.messages(ctx, d, "", now)
	if err != nil {
		return
	}
	_ = s.Store.UpdateDelivery(ctx, d, from, d.CodeVersion, s.confirmEntry(audit.DeliveryFail, actor, d, device, "", now,
		map[string]any{"reason": "attempt limit"}), msgs...)
}

// refuse audits a confirm refused before any attempt (kind
// audit.DeliveryRefused, or audit.DeliveryIncident for what only an attack
// or a broken device sends) and returns err.
func (s *Service) refuse(ctx context.Context, kind, reason, actor string, d store.Delivery, device string, now time.Time, err error) error {
	extra := map[string]any{"reason": reason}
	if kind == audit.DeliveryIncident {
		extra = map[string]any{"incident": reason}
	}
	if aerr := s.appendAudit(ctx, s.confirmEntry(kind, actor, d, device, "", now, extra)); aerr != nil {
		return errors.Join(err, aerr)
	}
	return err
}

func (s *Service) appendAudit(ctx context.Context, e eventlog.Entry) error {
	a, ok := s.Store.(interface {
		AppendAudit(context.Context, eventlog.Entry) (eventlog.Entry, error)
	})
	if !ok {
		return errors.New("delivery: the store keeps no audit log")
	}
	_, err := a.AppendAudit(ctx, e)
	return err
}

// confirmEntry is the audit entry of a confirm step: entry's fields, the
// device that confirmed (the delivery's own is d.Device), how (online or
// sealed) and extra. Never a code.
func (s *Service) confirmEntry(kind, actor string, d store.Delivery, device, via string, now time.Time, extra map[string]any) eventlog.Entry {
	data := map[string]any{"realm": d.Realm, "device": d.Device, "mode": d.Mode, "state": d.State,
		"code_version": d.CodeVersion, "by_device": device}
	if via != "" {
		data["via"] = via
	}
	for k, v := range extra {
		data[k] = v
	}
	raw, _ := json.Marshal(data)
	return eventlog.Entry{Time: now, Kind: kind, Actor: actor, Subject: d.ID, Data: raw}
}
