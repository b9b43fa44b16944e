package delivery

// The courier's side (issue 11 parts 4 to 6, docs/deliveries.md): the mode
// data computed when a code is issued, the route manifest of a courier
// device, and the receipts a device uploads at sync, each turned into
// "delivered" exactly once with a countersigned proof.
//
// The device's holder is the attacker: its key signs whatever they like.
// So a receipt is believed only for a delivery, code version and device
// that the server itself put in that device's manifest
// (store.CourierStore.GetManifested), while the delivery is still at that
// version on that device and not cancelled; anything else is an incident
// (audited) and changes nothing.

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/codecheck"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/secretbox"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

// Incidents of receipts (audit data "incident"; Service.Incident's kind).
const (
	IncidentBadReceipt    = "receipt_invalid"
	IncidentUnissued      = "receipt_unissued"
	IncidentReassigned    = "receipt_after_reassign"
	IncidentCancelled     = "receipt_after_cancel"
	IncidentTwice         = "delivered_twice"
	IncidentFraud         = "fingerprint_fraud"
	IncidentReceiptState  = "receipt_refused_state"
	IncidentReceiptTiming = "receipt_out_of_window"
)

// Defaults of the courier's side.
const (
	// DefaultManifestMaxAge is how long after a manifest's issue (its sync)
	// a device may check codes with it.
	DefaultManifestMaxAge = 24 * time.Hour
	// ManifestValidity is the manifest artifact's signature window.
	ManifestValidity = MaxLifetime
)

// ErrNoDevice: the delivery's device is not a registered, active field
// device of the realm.
var ErrNoDevice = fmt.Errorf("%w: device", ErrInvalid)

// Devices finds registered field devices (store.SyncStore does).
type Devices interface {
	GetDevice(ctx context.Context, id string) (store.Device, error)
}

// Courier holds what the courier's side needs beside the Service's store;
// the server sets it. Store, Devices and Signer are required for manifests
// and receipts.
type Courier struct {
	Store   store.CourierStore
	Devices Devices
	// Signer is the server's artifact key: it signs manifests and countersignatures.
	Signer *keys.Signer
	// Audit appends incidents to the audit log.
	Audit func(ctx context.Context, e eventlog.Entry) error
	// Incident, when set, counts each incident by kind (a metric).
	Incident func(kind string)
	// MaxAge is the manifest max age; 0 means DefaultManifestMaxAge.
	MaxAge time.Duration
	// Attempts is the attempt limit per delivery on the device; 0 means the
	// Service's attempt limit (Service.AttemptLimit, DefaultAttemptLimit).
	Attempts int
	// Costs are the hash and fingerprint modes' argon2id parameters and
	// floor; the zero value is codecheck's defaults and cost.DeliveryFloor.
	Costs courierproto.Costs
}

// checkDevice refuses a device that is not a registered, active field
// device of realm (nothing is checked when the service has no registry).
func (s *Service) checkDevice(ctx context.Context, realm, device string) error {
	if s.Courier == nil || s.Courier.Devices == nil {
		return nil
	}
	dev, err := s.Courier.Devices.GetDevice(ctx, device)
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && dev.Realm != realm):
		return fmt.Errorf("%w %q is not a registered field device of realm %q: register it first ('outpost admin device register')", ErrNoDevice, ident.Clip(device), realm)
	case err != nil:
		return err
	case dev.Status != store.DeviceActive:
		return fmt.Errorf("%w %q is %s: assign the delivery to an active device", ErrNoDevice, ident.Clip(device), dev.Status)
	}
	return nil
}

func (s *Service) checkBox() *secretbox.Box {
	return secretbox.New(s.Master, 0, "delivery_checks.data")
}

func checkAD(realm, id string, version uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte(realm+"\x00"+id+"\x00"), version)
}

// sealedCheck computes the mode data of code for d (at its code version and
// device) and seals it; empty for the token mode.
func (s *Service) sealedCheck(d store.Delivery, code string) ([]byte, error) {
	b := courierproto.Binding{Realm: d.Realm, Delivery: d.ID, Version: int(d.CodeVersion), Device: d.Device}
	var costs courierproto.Costs
	if s.Courier != nil {
		costs = s.Courier.Costs
	}
	data, err := courierproto.MakeCheck(d.Mode, code, b, costs)
	if errors.Is(err, codecheck.ErrBelowFloor) {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err != nil || len(data) == 0 {
		return nil, err
	}
	return s.checkBox().Seal(data, checkAD(d.Realm, d.ID, d.CodeVersion))
}

func (s *Service) courier() (*Courier, error) {
	c := s.Courier
	if c == nil || c.Store == nil || c.Signer == nil || c.Audit == nil {
		return nil, errors.New("delivery: the courier side is not configured (store, signer, audit)")
	}
	return c, nil
}

// liveStates are the states a delivery is listed in its device's manifest in.
var liveStates = []string{string(Created), string(Notified), string(OutForDelivery), string(Reassigned)}

// RouteManifest is Manifest for a device that syncs: nil, and nothing
// recorded, for a device that never had a delivery (a technician's), so
// that its sync is as before; a courier device gets a fresh manifest at
// every sync, an empty one once it has no live delivery left.
func (s *Service) RouteManifest(ctx context.Context, realm, device string) ([]byte, error) {
	c, err := s.courier()
	if err != nil {
		return nil, err
	}
	last, err := c.Store.LastManifest(ctx, realm, device)
	if err != nil {
		return nil, err
	}
	return s.manifest(ctx, realm, device, last > 0)
}

// Manifest issues the route manifest of realm's device: every live
// delivery assigned to it (id, version, expiry, mode, mode data, attempt
// limit), the pinned public keys, and no recipient data; it records what
// it listed (the only deliveries the server will believe this device
// about) and moves them to out_for_delivery, audited, in one transaction.
// It returns the signed artifact.
func (s *Service) Manifest(ctx context.Context, realm, device string) ([]byte, error) {
	return s.manifest(ctx, realm, device, true)
}

// manifest is Manifest; unless always, a device without deliveries gets none.
func (s *Service) manifest(ctx context.Context, realm, device string, always bool) ([]byte, error) {
	c, err := s.courier()
	if err != nil {
		return nil, err
	}
	now := s.now()
	var ds []store.Delivery
	after := ""
	for len(ds) < courierproto.MaxDeliveries { // the first MaxDeliveries by id; the rest wait for the next manifest
		limit := min(store.MaxListLimit, courierproto.MaxDeliveries-len(ds))
		page, err := c.Store.ListDeviceDeliveries(ctx, realm, device, liveStates, now, after, limit)
		if err != nil {
			return nil, err
		}
		ds = append(ds, page...)
		if len(page) < limit {
			break
		}
		after = page[len(page)-1].ID
	}
	if len(ds) == 0 && !always {
		return nil, nil
	}
	pk, err := s.PublicKeys(realm)
	if err != nil {
		return nil, err
	}
	keys := courierproto.Keys{Token: pk.Token, Seal: pk.Seal}
	maxAge := c.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultManifestMaxAge
	}
	attempts := c.Attempts
	if attempts <= 0 {
		attempts = s.attemptLimit()
	}
	m := courierproto.Manifest{Realm: realm, Device: device, IssuedAt: now.UTC(), MaxAge: int64(maxAge / time.Second), Keys: keys,
		Deliveries: make([]courierproto.ManifestDelivery, 0, len(ds))}
	var items []store.ManifestItem
	var moves []store.StateMove
	for _, d := range ds {
		md := courierproto.ManifestDelivery{ID: d.ID, Version: int(d.CodeVersion), NotAfter: d.NotAfter.UTC(), Mode: d.Mode, Attempts: attempts}
		if d.Mode != string(ModeToken) {
			chk, err := c.Store.GetDeliveryCheck(ctx, realm, d.ID)
			if errors.Is(err, store.ErrNotFound) || (err == nil && chk.CodeVersion != d.CodeVersion) {
				continue // issued before this server computed mode data: reassign it to issue a code the device can check
			}
			if err != nil {
				return nil, err
			}
			if md.Check, err = s.checkBox().Open(chk.Data, checkAD(realm, d.ID, d.CodeVersion)); err != nil {
				return nil, fmt.Errorf("delivery %s: opening its mode data: %w", d.ID, err)
			}
		}
		m.Deliveries = append(m.Deliveries, md)
		items = append(items, store.ManifestItem{ID: d.ID, CodeVersion: d.CodeVersion})
		if d.State != string(OutForDelivery) && Allowed(State(d.State), OutForDelivery) {
			moved := d
			moved.State, moved.UpdatedAt = string(OutForDelivery), now
			msgs, _, err := s.messages(ctx, moved, "", now)
			if err != nil {
				return nil, err
			}
			moves = append(moves, store.StateMove{ID: d.ID, From: d.State, To: string(OutForDelivery), CodeVersion: d.CodeVersion,
				Entry: s.entry(audit.DeliveryOutForDelivery, "device:"+device, moved, now), Msgs: msgs})
		}
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	serial, _, err := c.Store.RecordManifest(ctx, realm, device, now, items, moves)
	if err != nil {
		return nil, err
	}
	return artifact.Sign(c.Signer, artifact.Header{Type: courierproto.ManifestType, Version: courierproto.ManifestVersion,
		Subject: device, Serial: serial, IssuedAt: now, NotBefore: now.Add(-syncproto.Skew), NotAfter: now.Add(ManifestValidity)}, m)
}

// Receipts applies the receipts a device uploaded at sync (dev is the
// device whose signature the upload carried; acked the newest entry of
// its log the server holds) and answers each. A receipt becomes
// "delivered" exactly once; the very same receipt again is a duplicate
// (a retried upload); any claim beyond what the server issued to dev is
// an incident, audited, and refused. A receipt whose delivery changed
// while it was applied, or whose decision (its device log entry) the
// server's copy of the log does not hold yet, gets no answer: the device
// sends it again.
func (s *Service) Receipts(ctx context.Context, dev store.Device, receipts [][]byte) ([]courierproto.ReceiptAck, error) {
	c, err := s.courier()
	if err != nil {
		return nil, err
	}
	run := &receiptRun{Courier: c, capped: map[string]int{}}
	acks := make([]courierproto.ReceiptAck, 0, len(receipts))
	var pending []pendingReceipt
	for _, data := range receipts {
		ack, p, err := s.receipt(ctx, run, dev, data)
		switch {
		case errors.Is(err, errNotLogged):
		case err != nil:
			return acks, err
		case p != nil:
			pending = append(pending, *p)
		default:
			acks = append(acks, ack)
		}
	}
	// The believed receipts, in one transaction: each delivered exactly
	// once, on its own conditions.
	ws := make([]store.ProofWrite, len(pending))
	for i, p := range pending {
		ws[i] = p.write
	}
	results, err := c.Store.DeliverWithProofs(ctx, ws)
	if err != nil {
		return acks, err
	}
	for i, p := range pending {
		switch err := results[i]; {
		case err == nil:
			acks = append(acks, courierproto.ReceiptAck{Delivery: p.r.Delivery, Version: p.r.Version, Status: courierproto.AckDelivered})
		case errors.Is(err, store.ErrExists): // another receipt came first (in this upload or meanwhile)
			proof, err := c.Store.GetDeliveryProof(ctx, p.r.Realm, p.r.Delivery)
			if err != nil {
				return acks, err
			}
			ack, err := s.proven(ctx, run, dev, p.r, proof, p.hash)
			if err != nil {
				return acks, err
			}
			acks = append(acks, ack)
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			// changed while it was applied: no answer, the device sends it again
		default:
			return acks, err
		}
	}
	if len(run.capped) > 0 {
		data, _ := json.Marshal(map[string]any{"incident": IncidentCapped, "realm": dev.Realm, "device": dev.ID, "kinds": run.capped,
			"reason": fmt.Sprintf("more than %d refused receipts in one upload: the rest are counted here", MaxIncidentsPerUpload)})
		if err := c.Audit(ctx, eventlog.Entry{Time: s.now(), Kind: audit.DeliveryIncident, Actor: "device:" + dev.ID, Subject: dev.ID, Data: data}); err != nil {
			return acks, err
		}
	}
	return acks, nil
}

// MaxIncidentsPerUpload bounds the incidents one upload's receipts record
// one by one; the rest are counted in one IncidentCapped entry, so that a
// device cannot flood the audit log (it remains an incident, and counted).
const MaxIncidentsPerUpload = 32

// IncidentCapped sums up the refused receipts of an upload beyond MaxIncidentsPerUpload.
const IncidentCapped = "receipt_incidents_capped"

// pendingReceipt is a believed receipt waiting for its write.
type pendingReceipt struct {
	r     courierproto.Receipt
	hash  []byte
	write store.ProofWrite
}

// receiptRun is one upload's receipts being applied.
type receiptRun struct {
	*Courier
	audited int
	capped  map[string]int
}

// receipt checks one receipt: it answers it (refused, duplicate), or
// returns the write that makes its delivery delivered.
func (s *Service) receipt(ctx context.Context, c *receiptRun, dev store.Device, data []byte) (courierproto.ReceiptAck, *pendingReceipt, error) {
	refuse := func(r courierproto.Receipt, kind, reason string) (courierproto.ReceiptAck, *pendingReceipt, error) {
		ack, err := s.refuseReceipt(ctx, c, dev, r, kind, reason)
		return ack, nil, err
	}
	now := s.now()
	r, err := courierproto.VerifyReceipt(data, ed25519.PublicKey(dev.PublicKey), dev.ID)
	if err != nil {
		return refuse(courierproto.Receipt{Delivery: "unreadable"}, IncidentBadReceipt, err.Error())
	}
	hash := courierproto.ReceiptHash(data)
	if r.Realm != dev.Realm {
		return refuse(r, IncidentUnissued, "the receipt names another realm than the device's")
	}
	if r.LogSeq > dev.AckedSeq {
		return courierproto.ReceiptAck{}, nil, errNotLogged // the device sends it again with its log entry
	}
	if p, err := c.Store.GetDeliveryProof(ctx, r.Realm, r.Delivery); err == nil {
		ack, err := s.proven(ctx, c, dev, r, p, hash)
		return ack, nil, err
	} else if !errors.Is(err, store.ErrNotFound) {
		return courierproto.ReceiptAck{}, nil, err
	}
	serial, issued, err := c.Store.GetManifested(ctx, r.Realm, r.Delivery, uint32(r.Version), dev.ID)
	if errors.Is(err, store.ErrNotFound) {
		return refuse(r, IncidentUnissued, fmt.Sprintf("the server never put delivery %s version %d in this device's manifest", r.Delivery, r.Version))
	}
	if err != nil {
		return courierproto.ReceiptAck{}, nil, err
	}
	d, err := s.Store.GetDelivery(ctx, r.Realm, r.Delivery)
	if err != nil {
		return courierproto.ReceiptAck{}, nil, err
	}
	switch st := State(d.State); {
	case d.CodeVersion != uint32(r.Version) || d.Device != dev.ID:
		return refuse(r, IncidentReassigned, fmt.Sprintf("the delivery was reassigned (now version %d on another device or a new code)", d.CodeVersion))
	case st == Cancelled:
		return refuse(r, IncidentCancelled, "the delivery was cancelled")
	case d.Mode != r.Mode:
		return refuse(r, IncidentBadReceipt, fmt.Sprintf("the receipt says mode %s, the delivery's is %s", r.Mode, d.Mode))
	case !Allowed(st, Delivered):
		return refuse(r, IncidentReceiptState, fmt.Sprintf("the delivery is %s", st))
	case !r.Time.Before(d.NotAfter) || r.Time.Before(issued.Add(-syncproto.Skew)) || r.Time.After(now.Add(syncproto.Skew)):
		return refuse(r, IncidentReceiptTiming, "the receipt's time is outside the delivery's window (after expiry, before the manifest, or ahead of the server)")
	}
	if r.Mode == string(ModeToken) {
		// The recipient's token, signed by the server for this delivery,
		// version and device: the device's word alone delivers nothing.
		pk, err := s.PublicKeys(r.Realm)
		if err != nil {
			return courierproto.ReceiptAck{}, nil, err
		}
		if err := courierproto.VerifyToken(pk.Token, r.Token, r.Time, r.Binding()); err != nil {
			return refuse(r, IncidentFraud, "the receipt carries no valid token for this delivery, version and device")
		}
	} else {
		// The sealed code is checked as Confirm checks a code: one
		// attempt of the code version's limit is taken first, so that a
		// courier holding the device key cannot sign receipts with guess
		// after guess (the fingerprint leaves tens of thousands of
		// candidates) until one delivers; the attempt that uses up the
		// limit fails the delivery.
		as, ok := s.Store.(store.DeliveryAttemptStore)
		if !ok {
			return courierproto.ReceiptAck{}, nil, errors.New("delivery: the store does not count attempts")
		}
		limit := s.attemptLimit()
		n, taken, err := as.TakeDeliveryAttempt(ctx, d.Realm, d.ID, d.CodeVersion, limit,
			s.confirmEntry(audit.DeliveryAttempt, "device:"+dev.ID, d, dev.ID, "receipt", now, nil))
		if err != nil {
			return courierproto.ReceiptAck{}, nil, err
		}
		if !taken {
			return refuse(r, IncidentFraud, fmt.Sprintf("all %d attempts at the delivery's code are used", limit))
		}
		if _, err := s.openSealed(d, r.Binding(), r.Sealed); err != nil {
			if n >= limit {
				s.fail(ctx, d, "device:"+dev.ID, dev.ID, now)
			}
			return refuse(r, IncidentFraud, fmt.Sprintf("the code entered at the door passed the fingerprint but is not the delivery's code (attempt %d of %d)", n, limit))
		}
	}
	cs := courierproto.Countersign{Realm: r.Realm, Delivery: r.Delivery, Version: r.Version, Device: dev.ID, DeviceKey: dev.PublicKey,
		ReceiptHash: hash, Manifest: serial, DeliveredAt: now.UTC()}
	signed, err := artifact.Sign(c.Signer, artifact.Header{Type: courierproto.CountersignType, Version: courierproto.CountersignVersion,
		Subject: r.Delivery, Serial: serial, IssuedAt: now, NotBefore: now, NotAfter: now.Add(courierproto.CountersignValidity)}, cs)
	if err != nil {
		return courierproto.ReceiptAck{}, nil, err
	}
	from := d.State
	d.State, d.UpdatedAt = string(Delivered), now
	entry := s.entry(audit.DeliveryDeliver, "device:"+dev.ID, d, now)
	var extra map[string]any
	_ = json.Unmarshal(entry.Data, &extra)
	extra["log_seq"], extra["receipt_hash"], extra["manifest"] = r.LogSeq, hash, serial
	entry.Data, _ = json.Marshal(extra)
	msgs, _, err := s.messages(ctx, d, "", now)
	if err != nil {
		return courierproto.ReceiptAck{}, nil, err
	}
	return courierproto.ReceiptAck{}, &pendingReceipt{r: r, hash: hash, write: store.ProofWrite{Delivery: d, FromState: from, FromVersion: d.CodeVersion,
		Proof: store.DeliveryProof{Realm: r.Realm, ID: r.Delivery, CodeVersion: d.CodeVersion, Device: dev.ID, Receipt: data, Countersign: signed, DeliveredAt: now},
		Entry: entry, Msgs: msgs}}, nil
}

// errSealedWrong: the sealed code does not open, or is not the delivery's code.
var errSealedWrong = errors.New("the sealed code is not the delivery's code")

// openSealed is the one check of a sealed code (in a hash- or fingerprint-mode
// receipt): it opens sealed, bound to b, with the
// realm's seal key and returns the code; errSealedWrong (wrapping the
// reason) when it does not open or is not d's current code.
func (s *Service) openSealed(d store.Delivery, b codecheck.Binding, sealed []byte) (string, error) {
	priv, _, err := s.sealKeys(d.Realm)
	if err != nil {
		return "", err
	}
	code, err := codecheck.Open(priv, b, sealed)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errSealedWrong, err)
	}
	if !s.codeMatches(d, code) {
		return code, errSealedWrong
	}
	return code, nil
}

// errNotLogged: the receipt's log entry is not in the server's copy of
// the device's log yet; the receipt gets no answer until it is.
var errNotLogged = errors.New("the receipt's log entry has not reached the server")

// proven answers a receipt for a delivery that has a proof already: the
// very same receipt is a duplicate; any other is an incident.
func (s *Service) proven(ctx context.Context, c *receiptRun, dev store.Device, r courierproto.Receipt, p store.DeliveryProof, hash []byte) (courierproto.ReceiptAck, error) {
	if p.Device == dev.ID && subtle.ConstantTimeCompare(courierproto.ReceiptHash(p.Receipt), hash) == 1 {
		return courierproto.ReceiptAck{Delivery: r.Delivery, Version: r.Version, Status: courierproto.AckDuplicate}, nil
	}
	return s.refuseReceipt(ctx, c, dev, r, IncidentTwice, fmt.Sprintf("the delivery was confirmed already (version %d, by device %s)", p.CodeVersion, p.Device))
}

// refuse records an incident about a receipt and answers it refused.
func (s *Service) refuseReceipt(ctx context.Context, c *receiptRun, dev store.Device, r courierproto.Receipt, kind, reason string) (courierproto.ReceiptAck, error) {
	if c.Incident != nil {
		c.Incident(kind)
	}
	data, _ := json.Marshal(map[string]any{"incident": kind, "realm": dev.Realm, "device": dev.ID, "delivery": ident.Clip(r.Delivery),
		"version": r.Version, "reason": reason})
	subject := r.Delivery
	if ident.Check("delivery", subject) != nil {
		subject = "unreadable"
	}
	if c.audited < MaxIncidentsPerUpload {
		c.audited++
		if err := c.Audit(ctx, eventlog.Entry{Time: s.now(), Kind: audit.DeliveryIncident, Actor: "device:" + dev.ID, Subject: subject, Data: data}); err != nil {
			return courierproto.ReceiptAck{}, err
		}
	} else {
		c.capped[kind]++
	}
	if len(reason) > courierproto.MaxReason {
		reason = reason[:courierproto.MaxReason]
	}
	return courierproto.ReceiptAck{Delivery: subject, Version: r.Version, Status: courierproto.AckRefused, Reason: kind + ": " + reason}, nil
}

// Proof returns realm's delivery's proof of delivery (courierproto.Proof,
// JSON): the device-signed receipt and the server's countersignature.
// store.ErrNotFound when it has none.
func (s *Service) Proof(ctx context.Context, realm, id string) ([]byte, error) {
	c, err := s.courier()
	if err != nil {
		return nil, err
	}
	p, err := c.Store.GetDeliveryProof(ctx, realm, id)
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(courierproto.Proof{Receipt: p.Receipt, Countersign: p.Countersign}, "", "  ")
}
