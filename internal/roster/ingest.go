package roster

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/vouchwire"
)

func parseSPKI(der []byte) (crypto.PublicKey, error) { return x509.ParsePKIXPublicKey(der) }

// SyncEntries takes the vouches among a sync's fresh log entries (those
// the server records for the first time) into the roster, inside the
// sync's transaction tx: the vouch and the acknowledgement of its entry
// commit together, so each vouch is ingested exactly once; a retried or
// replayed upload carries no fresh entries, and the roster's key (staff
// device, sequence number) refuses a second row besides. dev is the
// uploading device as the server registered it (its realm is the vouch's
// realm, whatever the entry says).
//
// It returns the audit entries to append with the sync's, and a function
// to call once the transaction committed (it counts the metrics). It never
// refuses an upload: a vouch it does not believe is an incident, audited,
// and stores nothing.
func (s *Service) SyncEntries(ctx context.Context, tx store.SyncTx, dev store.Device, fresh []eventlog.Entry, now time.Time) ([]eventlog.Entry, func(), error) {
	b := &batch{s: s, rt: tx.Roster(), dev: dev, now: now, known: map[string][]store.Vouch{}}
	for i := range fresh {
		if fresh[i].Kind == vouchwire.Kind {
			v, err := vouchwire.Parse(fresh[i].Data)
			b.items = append(b.items, item{e: &fresh[i], v: v, err: err})
		}
	}
	if len(b.items) == 0 {
		return nil, nil, nil
	}
	if err := b.load(); err != nil {
		return nil, nil, err
	}
	var out []eventlog.Entry
	counts := map[string]int{}
	for i := range b.items {
		as, held := b.ingest(&b.items[i])
		for _, a := range as {
			switch a.Kind {
			case KindIncident:
				counts[CountIncident]++
			case KindVouch:
				counts[CountIngested]++
			}
		}
		if held {
			counts[CountHeld]++
		}
		out = append(out, as...)
	}
	if err := b.store(); err != nil {
		return nil, nil, err
	}
	return out, func() {
		for k, n := range counts {
			s.count(k, n)
		}
	}, nil
}

// batch is one sync's vouches, read from the roster with a few queries.
type batch struct {
	s     *Service
	rt    store.RosterTx
	dev   store.Device
	now   time.Time
	items []item
	// allowed: the device may vouch; anyExpected: the realm expects
	// serials, expected those of the batch's it expects.
	allowed, anyExpected bool
	expected             map[string]bool
	// known are the vouches of the batch's serials, those of this batch included.
	known map[string][]store.Vouch
	// rows are the vouches to store; holds the stored live vouches to hold.
	rows, holds []store.Vouch
}

// reasonRival is the reason of a live vouch held because another key was
// vouched for its serial.
const reasonRival = "another key was vouched for this serial"

// hold holds a live vouch that another key's vouch contests: in the batch's
// rows when it is one of them, else in the store when the batch is stored.
func (b *batch) hold(v *store.Vouch) {
	v.State, v.Reason, v.UpdatedAt = StateHeld, reasonRival, b.now
	for i := range b.rows {
		if b.rows[i].StaffDevice == v.StaffDevice && b.rows[i].DeviceSeq == v.DeviceSeq {
			b.rows[i] = *v
			return
		}
	}
	b.holds = append(b.holds, *v)
}

// store writes the batch's new vouches and holds the contested ones.
func (b *batch) store() error {
	if len(b.rows) > 0 {
		n, err := b.rt.PutVouches(b.rows)
		if err != nil {
			return err
		}
		if n != len(b.rows) {
			// Only a log entry recorded twice could do this, which the sync's
			// acknowledgement rules out: fail, rather than audit what was not stored.
			return fmt.Errorf("roster: %d of %d vouches of device %s were stored already", len(b.rows)-n, len(b.rows), b.dev.ID)
		}
	}
	for _, v := range b.holds {
		// A vouch that enrolled or was withdrawn meanwhile keeps its state.
		if _, err := b.rt.SetVouchState(v.Realm, v.StaffDevice, v.DeviceSeq, StateLive, StateHeld, reasonRival, b.now); err != nil {
			return err
		}
	}
	return nil
}

// item is one vouch entry, parsed (err when it does not parse).
type item struct {
	e   *eventlog.Entry
	v   *vouchwire.Vouch
	err error
}

// load reads what the batch's decisions need: whether the device may
// vouch, whether the realm expects serials, and the serials' vouches.
func (b *batch) load() error {
	var err error
	if b.allowed, err = b.rt.Voucher(b.dev.Realm, b.dev.ID); err != nil || !b.allowed {
		return err
	}
	if b.anyExpected, err = b.rt.AnyExpected(b.dev.Realm); err != nil {
		return err
	}
	b.expected = map[string]bool{}
	var serials []string
	seen := map[string]bool{}
	for _, it := range b.items {
		if it.err == nil && !seen[it.v.Serial] {
			seen[it.v.Serial] = true
			serials = append(serials, it.v.Serial)
		}
	}
	for len(serials) > 0 {
		n := min(len(serials), store.MaxVouchesOf)
		vs, err := b.rt.VouchesOf(b.dev.Realm, serials[:n])
		if err != nil {
			return err
		}
		for _, v := range vs {
			b.known[v.Serial] = append(b.known[v.Serial], v)
		}
		if b.anyExpected {
			exp, err := b.rt.ExpectedOf(b.dev.Realm, serials[:n])
			if err != nil {
				return err
			}
			for _, sn := range exp {
				b.expected[sn] = true
			}
		}
		serials = serials[n:]
	}
	return nil
}

// ingest decides one vouch entry, adding the vouch to the rows to store;
// it returns the audit entries to write (none when the vouch was stored
// before) and whether the vouch is held.
func (b *batch) ingest(it *item) ([]eventlog.Entry, bool) {
	dev, e, now := b.dev, it.e, b.now
	actor := "device:" + dev.ID
	ref := map[string]any{"realm": dev.Realm, "staff_device": dev.ID, "device_seq": e.Seq}
	incident := func(kind, subject string, why error, extra map[string]any) []eventlog.Entry {
		d := map[string]any{"incident": kind, "reason": why.Error()}
		for k, v := range ref {
			d[k] = v
		}
		for k, v := range extra {
			d[k] = v
		}
		return []eventlog.Entry{entry(now, KindIncident, actor, subject, d)}
	}
	if it.err != nil {
		// Signed by a registered device, yet not something its field store
		// writes: the holder made the device sign it.
		return incident(IncidentMalformed, "", fmt.Errorf("the vouch entry does not decode: %w", it.err), nil), false
	}
	v := it.v
	serial := v.Serial
	if !b.allowed {
		return incident(IncidentNotAllowed, serial, fmt.Errorf("device %s is not allowed to vouch in realm %s ('outpost admin roster allow --device %s')", dev.ID, dev.Realm, dev.ID),
			map[string]any{"fingerprint": v.Fingerprint, "site": v.Site}), false
	}
	existing := b.known[serial]
	for _, o := range existing {
		if o.StaffDevice == dev.ID && o.DeviceSeq == e.Seq {
			return nil, false // ingested before
		}
	}
	st, reason := StateLive, ""
	var mismatch, rivals []string
	for i, o := range existing {
		ost := state(o, now)
		if sameKey(o.SPKI, v.SPKI) || (ost != StateLive && ost != StateEnrolled && ost != StateHeld) {
			continue
		}
		mismatch = append(mismatch, vouchID(o.StaffDevice, o.DeviceSeq))
		if ost == StateLive {
			// Not enrolled yet: which key is the serial's is now an
			// administrator's call, so neither may enrol before it.
			rivals = append(rivals, vouchID(o.StaffDevice, o.DeviceSeq))
			b.hold(&existing[i])
		}
	}
	if len(mismatch) > 0 {
		st, reason = StateHeld, "another key is vouched for this serial"
	} else if withdrawnBefore(existing) {
		// An administrator withdrew (or rejected) this serial: a staff
		// device, perhaps the lost one, cannot bring it back on its own word.
		st, reason = StateHeld, "the serial was withdrawn before"
	} else if b.anyExpected && !b.expected[serial] {
		st, reason = StateHeld, "serial not expected"
	}
	// The device's clock counts only when it is earlier than the server's:
	// a clock set ahead must not stretch the vouch's life.
	start := e.Time
	if start.After(now) {
		start = now
	}
	row := store.Vouch{Realm: dev.Realm, StaffDevice: dev.ID, DeviceSeq: e.Seq, Serial: serial, Model: v.Model,
		KeyType: v.Parsed.KeyType().String(), SPKI: v.SPKI, Site: v.Site, Location: v.Location,
		VouchedAt: e.Time, ReceivedAt: now, ExpiresAt: start.Add(b.s.expiry()), State: st, Reason: reason, UpdatedAt: now}
	if err := store.CheckVouch(row); err != nil {
		return incident(IncidentMalformed, serial, fmt.Errorf("the vouch cannot be stored: %w", err), nil), false
	}
	b.rows = append(b.rows, row)
	b.known[serial] = append(b.known[serial], row)
	if len(mismatch) > 0 {
		// Recorded as a held vouch AND an incident: a copied label or a
		// swapped device, for an administrator to look at.
		return append([]eventlog.Entry{entry(now, KindVouch, actor, serial, vouchData(ref, row, v.Fingerprint))},
			incident(IncidentKeyMismatch, serial, fmt.Errorf("serial %s already has vouches for another key (%v): this vouch is held for review, and so are the others not enrolled yet (%v)", serial, mismatch, rivals),
				map[string]any{"fingerprint": v.Fingerprint, "others": mismatch, "held": rivals})...), true
	}
	return []eventlog.Entry{entry(now, KindVouch, actor, serial, vouchData(ref, row, v.Fingerprint))}, st == StateHeld
}

// withdrawnBefore reports whether any of a serial's vouches was withdrawn
// (by a withdrawal or a rejection).
func withdrawnBefore(vs []store.Vouch) bool {
	for _, v := range vs {
		if v.State == StateWithdrawn {
			return true
		}
	}
	return false
}

func vouchData(ref map[string]any, v store.Vouch, fingerprint string) map[string]any {
	d := map[string]any{"model": v.Model, "site": v.Site, "state": v.State, "expires_at": v.ExpiresAt.UTC().Format(time.RFC3339),
		"fingerprint": fingerprint}
	if v.Reason != "" {
		d["reason"] = v.Reason
	}
	if v.Location != "" {
		d["location"] = v.Location
	}
	for k, x := range ref {
		d[k] = x
	}
	return d
}
