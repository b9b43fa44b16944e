// Package roster holds the rules of the device roster (issue 12,
// docs/onboarding.md): which devices field staff vouched for, with which
// key, and whether that vouch is still good for enrolment.
//
// Service is the one place the rules live. Vouches arrive by sync, inside
// the sync's transaction (fieldsync calls [Service.SyncEntries]), so a
// vouch is stored exactly once with the acknowledgement of the log entry
// that carries it; administrators act through the API (and the CLI that
// mirrors it); the enrolment service (internal/enrol) asks [Service.Live]
// and reports [Service.Enrolled]:
//
//	svc := &roster.Service{Store: st.(store.RosterStore), Now: now}
//	err := svc.Allow(ctx, realm, "phone-7", true, actor)  // phone-7 may vouch
//	err = svc.Live(ctx, realm, "SN-0042", spki)          // nil: enrol it
//	_, err = svc.Withdraw(ctx, realm, "SN-0042", "stolen", actor)
//
// The rules:
//
//   - A vouch is a staff member's word, signed by their field device's key,
//     which its holder can make sign anything. It is believed only from an
//     active field device of the realm (sync checks that) that an
//     administrator allowed to vouch ([Service.Allow]); from any other
//     device it is an incident and stores nothing.
//   - The server decodes the label in the entry itself (internal/vouchwire)
//     and believes nothing else the entry says about the device.
//   - A vouch for a serial that has a live, enrolled or held vouch with
//     another key is an incident: it is held for review and audited, never
//     a replacement; the other keys' live vouches (not enrolled yet) are
//     held too, so that whichever vouch came first, no key enrols the
//     serial before an administrator decides which is the device's. A vouch for a serial the realm does not expect, when
//     the realm expects any ([Service.Expect]), is held too. An
//     administrator approves or rejects held vouches.
//   - A vouch expires Expiry (default 90 days) after it was made, counted
//     from the earlier of the staff device's clock and the server's (a
//     device clock set ahead buys no time); a vouch whose device enrolled
//     stays live until withdrawn. Expiry is read with the injected clock:
//     no job is needed.
//   - Withdrawing a serial withdraws every vouch of it and calls OnWithdraw
//     (the server revokes the device's certificates there). A later vouch
//     for a serial that has a withdrawn (or rejected) vouch is held: a
//     withdrawal is undone only by an administrator's approval.
//
// Every change is audited in the same transaction as the change.
package roster

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/store"
)

// States of a vouch. Expired is never stored: a live or held vouch past
// its expiry reads as expired.
const (
	StateLive      = "live"
	StateHeld      = "held"
	StateWithdrawn = "withdrawn"
	StateExpired   = "expired"
	StateEnrolled  = "enrolled"
)

// DefaultExpiry is how long a vouch waits for its device to enrol.
const DefaultExpiry = 90 * 24 * time.Hour

// MaxExpiry bounds Service.Expiry.
const MaxExpiry = 5 * 365 * 24 * time.Hour

// Audit kinds written by this package. Their subject is the serial (the
// device id for Allow); data holds the realm and what changed.
const (
	KindVouch    = "roster.vouch"
	KindIncident = "roster.incident"
	KindApprove  = "roster.approve"
	KindReject   = "roster.reject"
	KindWithdraw = "roster.withdraw"
	KindEnrolled = "roster.enrolled"
	KindExpect   = "roster.expect"
	KindVoucher  = "roster.voucher"
)

// Incident kinds (audit data "incident", metric label).
const (
	IncidentKeyMismatch = "key_mismatch"
	IncidentNotAllowed  = "not_allowed"
	IncidentMalformed   = "malformed_vouch"
)

// Errors. Live returns the first five; test with errors.Is.
var (
	ErrNoVouch     = errors.New("roster: no vouch for this device")
	ErrWithdrawn   = errors.New("roster: the vouch for this device was withdrawn")
	ErrExpired     = errors.New("roster: the vouch for this device expired before it enrolled")
	ErrHeld        = errors.New("roster: the vouch for this device is held for review")
	ErrKeyMismatch = errors.New("roster: the device's key is not the key vouched for this serial")
	// ErrInvalid: a request field is wrong; the message says which.
	ErrInvalid = errors.New("roster: invalid request")
	// ErrState: the vouches' states do not allow the change (the message says why).
	ErrState = errors.New("roster: the vouch's state does not allow this change")
	// ErrUnknownDevice: Allow was asked to let a device vouch that is not
	// a registered field device of the realm.
	ErrUnknownDevice = errors.New("roster: no such field device in this realm")
)

// Metric events passed to Service.Count.
const (
	CountIngested  = "ingested"
	CountHeld      = "held"
	CountWithdrawn = "withdrawn"
	CountIncident  = "incident"
)

// Service is the roster.
type Service struct {
	Store store.RosterStore
	// Now is the clock; nil means the system clock.
	Now func() time.Time
	// Expiry is how long a vouch stays live without its device enrolling;
	// 0 means DefaultExpiry.
	Expiry time.Duration
	// OnWithdraw, when set, is called after a withdrawal commits (the
	// server revokes the device's certificates). Its error is returned;
	// withdrawing again calls it again.
	OnWithdraw func(ctx context.Context, realm, serial string) error
	// Count, when set, is called once per event after it commits
	// (CountIngested, CountHeld, CountWithdrawn, CountIncident).
	Count func(event string)
	// Device, when set, says whether a field device is registered in a
	// realm (nil error); Allow refuses to grant others (the server's asks
	// the device registry).
	Device func(ctx context.Context, realm, id string) error
}

func (s *Service) now() time.Time { return clock.Or(s.Now)() }

func (s *Service) expiry() time.Duration {
	if s.Expiry <= 0 {
		return DefaultExpiry
	}
	return min(s.Expiry, MaxExpiry)
}

func (s *Service) count(event string, n int) {
	if s.Count != nil {
		for range n {
			s.Count(event)
		}
	}
}

// Vouch is a vouch as the API shows it.
type Vouch struct {
	// ID names the vouch: "<staff device>:<log sequence number>".
	ID          string    `json:"id"`
	Serial      string    `json:"serial"`
	Model       string    `json:"model"`
	KeyType     string    `json:"key_type"`
	Fingerprint string    `json:"fingerprint"`
	SPKI        []byte    `json:"spki"`
	StaffDevice string    `json:"staff_device"`
	DeviceSeq   uint64    `json:"device_seq"`
	Site        string    `json:"site"`
	Location    string    `json:"location,omitempty"`
	VouchedAt   time.Time `json:"vouched_at"`
	ReceivedAt  time.Time `json:"received_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	// State is the state now: StateExpired for a live or held vouch past ExpiresAt.
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Entry is one serial of the roster with its vouches.
type Entry struct {
	Serial string `json:"serial"`
	// State is the serial's best state: enrolled, live, held, expired,
	// withdrawn, in that order.
	State   string  `json:"state"`
	Vouches []Vouch `json:"vouches"`
}

// state is v's state at now.
func state(v store.Vouch, now time.Time) string {
	if (v.State == StateLive || v.State == StateHeld) && !now.Before(v.ExpiresAt) {
		return StateExpired
	}
	return v.State
}

func vouchID(staff string, seq uint64) string { return staff + ":" + strconv.FormatUint(seq, 10) }

func view(v store.Vouch, now time.Time) Vouch {
	fp := ""
	if pub, err := parseSPKI(v.SPKI); err == nil {
		fp, _ = device.Fingerprint(pub)
	}
	return Vouch{ID: vouchID(v.StaffDevice, v.DeviceSeq), Serial: v.Serial, Model: v.Model, KeyType: v.KeyType, Fingerprint: fp,
		SPKI: v.SPKI, StaffDevice: v.StaffDevice, DeviceSeq: v.DeviceSeq, Site: v.Site, Location: v.Location,
		VouchedAt: v.VouchedAt, ReceivedAt: v.ReceivedAt, ExpiresAt: v.ExpiresAt, State: state(v, now), Reason: v.Reason, UpdatedAt: v.UpdatedAt}
}

var rank = map[string]int{StateEnrolled: 5, StateLive: 4, StateHeld: 3, StateExpired: 2, StateWithdrawn: 1}

func entryOf(serial string, vs []store.Vouch, now time.Time) Entry {
	e := Entry{Serial: serial, Vouches: make([]Vouch, 0, len(vs))}
	for _, v := range vs {
		w := view(v, now)
		if rank[w.State] > rank[e.State] {
			e.State = w.State
		}
		e.Vouches = append(e.Vouches, w)
	}
	return e
}

func checkSerial(serial string) error {
	if err := ident.CheckName("serial", serial); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Get returns realm's roster entry for serial (ErrNoVouch when there is none).
func (s *Service) Get(ctx context.Context, realm, serial string) (Entry, error) {
	if err := checkSerial(serial); err != nil {
		return Entry{}, err
	}
	vs, err := s.Store.GetVouches(ctx, realm, serial)
	if err != nil {
		return Entry{}, err
	}
	if len(vs) == 0 {
		return Entry{}, fmt.Errorf("%w: serial %s in realm %s", ErrNoVouch, serial, realm)
	}
	return entryOf(serial, vs, s.now()), nil
}

// List returns up to limit (1..store.MaxListLimit) serials of realm's
// roster after the serial after, in serial order.
func (s *Service) List(ctx context.Context, realm, after string, limit int) ([]Entry, error) {
	vs, err := s.Store.ListVouches(ctx, realm, after, limit)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := []Entry{}
	for i := 0; i < len(vs); {
		j := i
		for j < len(vs) && vs[j].Serial == vs[i].Serial {
			j++
		}
		out = append(out, entryOf(vs[i].Serial, vs[i:j], now))
		i = j
	}
	return out, nil
}

func sameKey(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// Live says whether realm's serial may enrol with the key spki (PKIX
// SubjectPublicKeyInfo DER): nil when a vouch for exactly this key is live
// (not withdrawn, not expired, not held) or its device already enrolled.
// Otherwise ErrKeyMismatch when other keys are vouched for the serial (and
// none for this one) — an incident, audited here — or ErrHeld,
// ErrExpired, ErrWithdrawn (the best state among this key's vouches), or
// ErrNoVouch.
func (s *Service) Live(ctx context.Context, realm, serial string, spki []byte) error {
	if err := checkSerial(serial); err != nil {
		return err
	}
	vs, err := s.Store.GetVouches(ctx, realm, serial)
	if err != nil {
		return err
	}
	now := s.now()
	best, others := "", 0
	for _, v := range vs {
		if !sameKey(v.SPKI, spki) {
			if st := state(v, now); st == StateLive || st == StateEnrolled || st == StateHeld {
				others++
			}
			continue
		}
		if st := state(v, now); rank[st] > rank[best] {
			best = st
		}
	}
	switch best {
	case StateLive, StateEnrolled:
		return nil
	case StateHeld:
		return fmt.Errorf("%w: serial %s: an administrator must approve it ('outpost admin roster approve %s')", ErrHeld, serial, serial)
	case StateExpired:
		return fmt.Errorf("%w: serial %s: staff must vouch for it again", ErrExpired, serial)
	case StateWithdrawn:
		return fmt.Errorf("%w: serial %s", ErrWithdrawn, serial)
	}
	if others > 0 {
		err := fmt.Errorf("%w: serial %s has %d vouch(es) for another key: a copied label or a swapped device", ErrKeyMismatch, serial, others)
		if aerr := s.incident(ctx, realm, serial, IncidentKeyMismatch, "enrol", spki, err); aerr != nil {
			return errors.Join(err, aerr)
		}
		return err
	}
	return fmt.Errorf("%w: serial %s in realm %s: field staff must vouch for it ('outpost field vouch') and sync", ErrNoVouch, serial, realm)
}

// incident audits an incident outside a sync, in its own transaction.
func (s *Service) incident(ctx context.Context, realm, serial, kind, actor string, spki []byte, why error) error {
	fp := ""
	if pub, err := parseSPKI(spki); err == nil {
		fp, _ = device.Fingerprint(pub)
	}
	e := entry(s.now(), KindIncident, actor, serial, map[string]any{"realm": realm, "incident": kind, "fingerprint": fp, "reason": why.Error()})
	err := s.Store.RosterTx(ctx, func(tx store.RosterTx) error {
		_, err := tx.AppendAudit(e)
		return err
	})
	if err == nil {
		s.count(CountIncident, 1)
	}
	return err
}

func entry(now time.Time, kind, actor, subject string, data map[string]any) eventlog.Entry {
	raw, _ := json.Marshal(data)
	return eventlog.Entry{Time: now, Kind: kind, Actor: actor, Subject: subject, Data: raw}
}

// Enrolled records that the device with serial and key spki got its first
// certificate: its live vouches for that key become enrolled (they no
// longer expire). It returns Live's error when there is no such live vouch.
func (s *Service) Enrolled(ctx context.Context, realm, serial string, spki []byte) error {
	if err := checkSerial(serial); err != nil {
		return err
	}
	now := s.now()
	var refused error
	err := s.Store.RosterTx(ctx, func(tx store.RosterTx) error {
		refused = nil
		vs, err := tx.Vouches(realm, serial)
		if err != nil {
			return err
		}
		n, already := 0, false
		for _, v := range vs {
			if !sameKey(v.SPKI, spki) {
				continue
			}
			switch state(v, now) {
			case StateEnrolled:
				already = true
			case StateLive:
				ok, err := tx.SetVouchState(realm, v.StaffDevice, v.DeviceSeq, StateLive, StateEnrolled, "", now)
				if err != nil {
					return err
				}
				if ok {
					n++
				}
			}
		}
		if n == 0 {
			if !already {
				refused = errors.New("no live vouch")
			}
			return nil
		}
		_, err = tx.AppendAudit(entry(now, KindEnrolled, "enrol", serial, map[string]any{"realm": realm, "vouches": n}))
		return err
	})
	if err != nil {
		return err
	}
	if refused != nil {
		if err := s.Live(ctx, realm, serial, spki); err != nil {
			return err
		}
		return fmt.Errorf("%w: serial %s changed while it enrolled: try again", ErrState, serial)
	}
	return nil
}

// Withdraw withdraws every vouch of realm's serial that is live, held or
// enrolled, audited with reason, then calls OnWithdraw (also when nothing
// was left to withdraw, so a failed revocation is retried by withdrawing
// again). It returns the entry as it now stands; ErrNoVouch when the
// serial has no vouch.
func (s *Service) Withdraw(ctx context.Context, realm, serial, reason, actor string) (Entry, error) {
	if err := checkSerial(serial); err != nil {
		return Entry{}, err
	}
	if err := checkReason(reason); err != nil {
		return Entry{}, err
	}
	now := s.now()
	n, err := s.change(ctx, realm, serial, func(v store.Vouch) bool {
		return v.State == StateLive || v.State == StateHeld || v.State == StateEnrolled
	}, StateWithdrawn, reason, func(n int) eventlog.Entry {
		return entry(now, KindWithdraw, actor, serial, map[string]any{"realm": realm, "vouches": n, "reason": reason})
	})
	if err != nil {
		return Entry{}, err
	}
	s.count(CountWithdrawn, n)
	if s.OnWithdraw != nil {
		if err := s.OnWithdraw(ctx, realm, serial); err != nil {
			return Entry{}, fmt.Errorf("roster: serial %s is withdrawn, but revoking its certificates failed (withdraw it again to retry): %w", serial, err)
		}
	}
	return s.Get(ctx, realm, serial)
}

func checkReason(reason string) error {
	if len(reason) > 256 {
		return fmt.Errorf("%w: the reason is longer than 256 bytes", ErrInvalid)
	}
	if err := ident.CheckText("reason", reason); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// change moves the vouches of serial that pick selects to state to, with
// the audit entry audit(n) in the same transaction, and returns n. No vouch
// at all is ErrNoVouch.
func (s *Service) change(ctx context.Context, realm, serial string, pick func(store.Vouch) bool, to, reason string, audit func(n int) eventlog.Entry) (int, error) {
	now := s.now()
	var n int
	err := s.Store.RosterTx(ctx, func(tx store.RosterTx) error {
		n = 0
		vs, err := tx.Vouches(realm, serial)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return fmt.Errorf("%w: serial %s in realm %s", ErrNoVouch, serial, realm)
		}
		for _, v := range vs {
			if !pick(v) {
				continue
			}
			ok, err := tx.SetVouchState(realm, v.StaffDevice, v.DeviceSeq, v.State, to, reason, now)
			if err != nil {
				return err
			}
			if ok {
				n++
			}
		}
		if n == 0 {
			return nil
		}
		_, err = tx.AppendAudit(audit(n))
		return err
	})
	return n, err
}

// pickHeld finds the held vouch to approve or reject: the one named id
// ("" when serial has exactly one held vouch).
func pickHeld(vs []store.Vouch, serial, id string, now time.Time) (store.Vouch, error) {
	var held []store.Vouch
	for _, v := range vs {
		if v.State == StateHeld && (id == "" || vouchID(v.StaffDevice, v.DeviceSeq) == id) {
			held = append(held, v)
		}
	}
	switch {
	case len(held) == 0 && id != "":
		return store.Vouch{}, fmt.Errorf("%w: serial %s has no held vouch %s", ErrState, serial, ident.Clip(id))
	case len(held) == 0:
		return store.Vouch{}, fmt.Errorf("%w: serial %s has no held vouch", ErrState, serial)
	case len(held) > 1:
		ids := make([]string, len(held))
		for i, v := range held {
			ids[i] = vouchID(v.StaffDevice, v.DeviceSeq)
		}
		return store.Vouch{}, fmt.Errorf("%w: serial %s has %d held vouches (%s): name one with --vouch", ErrState, serial, len(held), strings.Join(ids, ", "))
	}
	return held[0], nil
}

// Approve makes a held vouch of realm's serial live: the one named id, or
// the only held one when id is "". It refuses (ErrState) while another key
// has a live or enrolled vouch for the serial — withdraw that first — and
// a held vouch past its expiry (ErrExpired).
func (s *Service) Approve(ctx context.Context, realm, serial, id, actor string) (Entry, error) {
	return s.review(ctx, realm, serial, id, actor, true)
}

// Reject withdraws a held vouch of realm's serial (id as for Approve).
func (s *Service) Reject(ctx context.Context, realm, serial, id, actor string) (Entry, error) {
	return s.review(ctx, realm, serial, id, actor, false)
}

func (s *Service) review(ctx context.Context, realm, serial, id, actor string, approve bool) (Entry, error) {
	if err := checkSerial(serial); err != nil {
		return Entry{}, err
	}
	now := s.now()
	err := s.Store.RosterTx(ctx, func(tx store.RosterTx) error {
		vs, err := tx.Vouches(realm, serial)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return fmt.Errorf("%w: serial %s in realm %s", ErrNoVouch, serial, realm)
		}
		v, err := pickHeld(vs, serial, id, now)
		if err != nil {
			return err
		}
		to, kind, reason := StateWithdrawn, KindReject, "rejected"
		if approve {
			if !now.Before(v.ExpiresAt) {
				return fmt.Errorf("%w: vouch %s expired at %s: staff must vouch for the device again", ErrExpired,
					vouchID(v.StaffDevice, v.DeviceSeq), v.ExpiresAt.UTC().Format(time.RFC3339))
			}
			for _, o := range vs {
				if st := state(o, now); !sameKey(o.SPKI, v.SPKI) && (st == StateLive || st == StateEnrolled) {
					return fmt.Errorf("%w: another key is %s for serial %s (vouch %s): withdraw the serial first if this one is the real device",
						ErrState, st, serial, vouchID(o.StaffDevice, o.DeviceSeq))
				}
			}
			to, kind, reason = StateLive, KindApprove, "approved"
		}
		ok, err := tx.SetVouchState(realm, v.StaffDevice, v.DeviceSeq, StateHeld, to, reason, now)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: vouch %s changed meanwhile: look again", ErrState, vouchID(v.StaffDevice, v.DeviceSeq))
		}
		_, err = tx.AppendAudit(entry(now, kind, actor, serial, map[string]any{"realm": realm, "vouch": vouchID(v.StaffDevice, v.DeviceSeq)}))
		return err
	})
	if err != nil {
		return Entry{}, err
	}
	return s.Get(ctx, realm, serial)
}

// ExpectResult is what Expect did.
type ExpectResult struct {
	Submitted int `json:"submitted"`
	Added     int `json:"added"`
}

// MaxExpect bounds the serials of one Expect call.
const MaxExpect = 10000

// Expect adds serials (a purchase order's, named by orderRef) to realm's
// expected serials. From then on a vouch for a serial the realm does not
// expect is held for review. Serials already expected are left as they are.
func (s *Service) Expect(ctx context.Context, realm string, serials []string, orderRef, actor string) (ExpectResult, error) {
	if len(serials) == 0 || len(serials) > MaxExpect {
		return ExpectResult{}, fmt.Errorf("%w: give 1 to %d serials per request", ErrInvalid, MaxExpect)
	}
	for _, sn := range serials {
		if err := checkSerial(sn); err != nil {
			return ExpectResult{}, err
		}
	}
	if orderRef != "" {
		if err := ident.CheckName("order reference", orderRef); err != nil {
			return ExpectResult{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	now := s.now()
	var res ExpectResult
	err := s.Store.RosterTx(ctx, func(tx store.RosterTx) error {
		n, err := tx.PutExpected(realm, serials, orderRef, now)
		if err != nil {
			return err
		}
		res = ExpectResult{Submitted: len(serials), Added: n}
		_, err = tx.AppendAudit(entry(now, KindExpect, actor, orderRef, map[string]any{"realm": realm, "submitted": len(serials), "added": n}))
		return err
	})
	return res, err
}

// Allow lets a registered field device of realm vouch (allowed true;
// ErrUnknownDevice when Service.Device says there is no such device), or
// stops it (false). Vouches from a device not allowed are incidents.
// It reports whether anything changed.
func (s *Service) Allow(ctx context.Context, realm, device string, allowed bool, actor string) (bool, error) {
	if err := ident.Check("device id", device); err != nil {
		return false, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if allowed && s.Device != nil {
		if err := s.Device(ctx, realm, device); err != nil {
			return false, fmt.Errorf("%w: %s (%v): register it first ('outpost admin device register')", ErrUnknownDevice, device, err)
		}
	}
	now := s.now()
	var changed bool
	err := s.Store.RosterTx(ctx, func(tx store.RosterTx) error {
		var err error
		if changed, err = tx.SetVoucher(realm, device, allowed, now); err != nil || !changed {
			return err
		}
		_, err = tx.AppendAudit(entry(now, KindVoucher, actor, device, map[string]any{"realm": realm, "allowed": allowed}))
		return err
	})
	return changed, err
}
