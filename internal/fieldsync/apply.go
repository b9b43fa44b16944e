package fieldsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

// outcome is what the transaction decided.
type outcome struct {
	device    store.Device
	resp      syncproto.Response
	added     int
	conflicts []syncproto.Conflict
	// refusal, when set, is the error of a refused upload; incident its kind.
	refusal  error
	incident string
	// tokens, device tokens and state of the upload, for refills.
	tokens map[syncproto.TokenKey]store.Token
	dts    map[syncproto.TokenKey]*store.DeviceToken
}

// maxOnlineScan bounds the audit entries one conflict check reads.
const maxOnlineScan = 100000

// pendingConflict is a conflict found before the audit entries have their
// sequence numbers.
type pendingConflict struct {
	c syncproto.Conflict
	// entry is the index of this device's event among the new audit entries;
	// otherEntry the index of the other event when it is in the same upload (-1 otherwise).
	entry, otherEntry int
	otherTime         time.Time
}

// apply runs step 3 of Receive in one transaction.
func (s *Service) apply(ctx context.Context, dev store.Device, h artifact.Header, u *syncproto.Upload, hash []byte, via string, now time.Time) (*outcome, error) {
	var out *outcome
	// The transaction runs to its end even if the caller goes away: the
	// device will retry, and the server must know whether this one committed.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	err := s.Sync.SyncDevice(tctx, dev.Realm, dev.ID, now, func(tx store.SyncTx) error {
		out = &outcome{}
		return s.applyTx(tx, h, u, hash, via, now, out)
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w: device %s", ErrUnknownDevice, dev.ID)
		}
		return nil, err
	}
	return out, nil
}

func (s *Service) applyTx(tx store.SyncTx, h artifact.Header, u *syncproto.Upload, hash []byte, via string, now time.Time, out *outcome) error {
	d := tx.Device()
	out.device = d
	actor := "device:" + d.ID
	refuse := func(kind string, err error, extra map[string]any) error {
		out.refusal, out.incident = err, kind
		data := map[string]any{"incident": kind, "realm": d.Realm, "serial": h.Serial, "reason": err.Error(), "via": via}
		for k, v := range extra {
			data[k] = v
		}
		raw, _ := json.Marshal(data)
		_, aerr := tx.AppendAudit([]eventlog.Entry{{Time: now, Kind: KindIncident, Actor: actor, Subject: d.ID, Data: raw}})
		return aerr
	}
	if d.Status != store.DeviceActive {
		return refuse(IncidentRevoked, fmt.Errorf("%w: device %s", ErrRevoked, d.ID), nil)
	}
	if h.Serial < d.UploadSerial || (h.Serial == d.UploadSerial && !bytes.Equal(hash, d.UploadHash)) {
		return refuse(IncidentReplay, fmt.Errorf("%w: serial %d, the server applied serial %d already", ErrReplay, h.Serial, d.UploadSerial), nil)
	}

	// Where the upload stands against the server's copy of the log.
	last := u.After + uint64(len(u.Entries))
	var anchor *eventlog.Entry
	if u.After > 0 && len(u.Entries) > 0 {
		anchor = &eventlog.Entry{Seq: u.After, Hash: u.Entries[0].Prev}
	}
	switch {
	case u.After > d.AckedSeq:
		gap := &GapError{Acked: d.AckedSeq, Err: fmt.Errorf("%w: it starts after entry %d but the server holds entries up to %d: upload from entry %d",
			ErrGap, u.After, d.AckedSeq, d.AckedSeq+1)}
		return refuse(IncidentGap, gap, map[string]any{"after": u.After, "acked": d.AckedSeq})
	case u.Head < d.AckedSeq:
		return refuse(IncidentTruncated, fmt.Errorf("%w: the device's log ends at entry %d, the server recorded entries up to %d (was the device's store restored or altered?)",
			ErrTruncated, u.Head, d.AckedSeq), map[string]any{"head": u.Head, "acked": d.AckedSeq})
	case d.AckedSeq > 0 && d.AckedSeq <= last && (anchor != nil || d.AckedSeq > u.After):
		if _, err := eventlog.VerifyHead(anchor, u.Entries, d.AckedSeq, d.AckedHash); err != nil {
			return refuse(IncidentRewritten, fmt.Errorf("%w: %v", ErrRewritten, err), map[string]any{"acked": d.AckedSeq})
		}
	}
	var fresh []eventlog.Entry
	if last > d.AckedSeq {
		fresh = u.Entries[d.AckedSeq-u.After:]
	}

	// The tokens this upload concerns, in the device's realm, locked in a
	// fixed order. Other realms' events are recorded, never applied.
	states := map[syncproto.TokenKey]*syncproto.TokenState{}
	var keys []syncproto.TokenKey
	add := func(k syncproto.TokenKey) {
		if k.Realm == d.Realm && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	for i := range u.Tokens {
		states[u.Tokens[i].Key()] = &u.Tokens[i]
		add(u.Tokens[i].Key())
	}
	datas := make([]eventData, len(fresh))
	for i := range fresh {
		if json.Unmarshal(fresh[i].Data, &datas[i]) == nil && datas[i].Token != "" && fresh[i].Subject != "" {
			add(keyOf(datas[i].Realm, fresh[i].Subject, datas[i].Token))
		}
	}
	slices.SortFunc(keys, cmpKey)
	out.tokens = map[syncproto.TokenKey]store.Token{}
	out.dts = map[syncproto.TokenKey]*store.DeviceToken{}
	for _, k := range keys {
		t, err := tx.LockToken(k.Realm, k.User, k.Token)
		switch {
		case err == nil:
			out.tokens[k] = t
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		dt, _, err := tx.DeviceToken(k.Realm, k.User, k.Token)
		if err != nil {
			return err
		}
		out.dts[k] = &dt
	}

	// Events: audit entries, offline uses, conflicts.
	entries := make([]eventlog.Entry, len(fresh))
	type use struct {
		k       syncproto.TokenKey
		counter uint64
		entry   int
		serial  uint64
	}
	var uses []use
	var pend []pendingConflict
	seenHere := map[syncproto.TokenKey]map[uint64]int{} // counter → entry index, within this upload
	maxOK := map[syncproto.TokenKey]int64{}
	for i := range fresh {
		e := &fresh[i]
		entries[i] = auditOf(d, e, now)
		ev := &datas[i]
		k := keyOf(ev.Realm, e.Subject, ev.Token)
		dt := out.dts[k]
		if ev.Realm != d.Realm || dt == nil {
			continue
		}
		switch e.Kind {
		case "import":
			if ev.Serial != nil && ev.First != nil && ev.Last != nil && *ev.Serial > dt.Serial && *ev.Serial <= syncproto.MaxCounter &&
				*ev.Last <= syncproto.MaxCounter && *ev.First <= *ev.Last && (ev.Type == "hotp" || ev.Type == "totp") {
				dt.Serial, dt.Type, dt.First, dt.Last, dt.NotAfter = *ev.Serial, ev.Type, *ev.First, *ev.Last, ev.NotAfter
				dt.Wiped = false
			}
		case "wipe":
			dt.Wiped = true
		case "verify.ok":
			if ev.Counter == nil || *ev.Counter > syncproto.MaxCounter {
				continue
			}
			c := *ev.Counter
			serial := uint64(0)
			if ev.Serial != nil {
				serial = *ev.Serial
			}
			uses = append(uses, use{k: k, counter: c, entry: i, serial: serial})
			if int64(c) > dt.OfflineUsed {
				dt.OfflineUsed, dt.UsedSerial = int64(c), serial
			}
			maxOK[k] = max(maxOK[k], int64(c))
			if seenHere[k] == nil {
				seenHere[k] = map[uint64]int{}
			}
			if j, ok := seenHere[k][c]; ok {
				pend = append(pend, pendingConflict{c: syncproto.Conflict{TokenKey: k, Counter: c, DeviceSeq: e.Seq, Other: actor},
					entry: i, otherEntry: j, otherTime: fresh[j].Time})
				continue
			}
			seenHere[k][c] = i
			if t, ok := out.tokens[k]; ok && t.Used && int64(c) <= t.LastUsed {
				pc, found, err := s.findOther(tx, k, t, c, d.ID, e.Seq)
				if err != nil {
					return err
				}
				if !found && int64(c) == t.LastUsed && dt.ReportedUsed < int64(c) {
					// The token stands exactly at c, yet no acceptance of c is
					// recorded and this device never reported reaching it: an
					// acceptance whose audit entry is still on its way (an online
					// verification between its two writes), or one in a part of
					// another device's log not uploaded yet. Never silent.
					pc.c.Other, found = OtherUnrecorded, true
				}
				if found {
					pc.entry, pc.otherEntry = i, -1
					pend = append(pend, pc)
				}
			}
		}
	}

	// State that goes backwards: a device's last used counter never falls.
	for _, k := range keys {
		st, dt := states[k], out.dts[k]
		if st == nil {
			continue
		}
		floor := max(dt.ReportedUsed, dt.OfflineUsed)
		if v, ok := maxOK[k]; ok {
			floor = max(floor, v)
		}
		if st.LastUsed < floor {
			return refuse(IncidentBackwards, fmt.Errorf("%w: token %s: last used %d, but %d was reported or used before (was the device's store restored or altered?)",
				ErrBackwards, k, st.LastUsed, floor), map[string]any{"token": k.Token, "user": k.User, "reported": st.LastUsed, "known": floor})
		}
	}

	// Record: the events, then the offline uses and conflicts that refer to them.
	stored, err := tx.AppendAudit(entries)
	if err != nil {
		return err
	}
	out.added = len(stored)
	if len(uses) > 0 {
		rows := make([]store.OfflineUse, len(uses))
		for i, x := range uses {
			rows[i] = store.OfflineUse{Realm: x.k.Realm, UserID: x.k.User, TokenID: x.k.Token, Counter: x.counter, Device: d.ID,
				DeviceSeq: fresh[x.entry].Seq, AuditSeq: stored[x.entry].Seq, At: fresh[x.entry].Time}
		}
		if err := tx.AddOfflineUses(rows); err != nil {
			return err
		}
	}
	var extra []eventlog.Entry
	for _, p := range pend {
		c := p.c
		if p.otherEntry >= 0 {
			c.OtherAuditSeq = stored[p.otherEntry].Seq
		}
		raw, _ := json.Marshal(map[string]any{"incident": IncidentConflict, "realm": c.Realm, "token": c.Token, "counter": c.Counter,
			"device": d.ID, "device_seq": c.DeviceSeq, "device_time": fresh[p.entry].Time, "audit_seq": stored[p.entry].Seq,
			"other": c.Other, "other_audit_seq": c.OtherAuditSeq, "other_time": p.otherTime})
		extra = append(extra, eventlog.Entry{Time: now, Kind: KindConflict, Actor: actor, Subject: c.User, Data: raw})
		out.conflicts = append(out.conflicts, c)
	}

	// State: each token's online last used becomes the maximum of both sides.
	resp := syncproto.Response{Device: d.ID, UploadSerial: h.Serial, Tokens: []syncproto.ServerToken{}, Conflicts: out.conflicts}
	raised := 0
	final := map[syncproto.TokenKey]int64{}
	for _, k := range keys {
		t, ok := out.tokens[k]
		if !ok {
			continue
		}
		cur := int64(-1)
		if t.Used {
			cur = t.LastUsed
		}
		target := int64(-1)
		if v, ok := maxOK[k]; ok {
			target = v
		}
		if st := states[k]; st != nil {
			target = max(target, st.LastUsed)
		}
		if target > cur {
			ok, err := tx.RaiseToken(k.Realm, k.User, k.Token, target)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("fieldsync: token %s changed under its lock", k)
			}
			cur = target
			raised++
			t.LastUsed, t.Used = target, true
			out.tokens[k] = t
		}
		final[k] = cur
	}
	for _, k := range keys {
		dt := out.dts[k]
		if st := states[k]; st != nil {
			dt.ReportedUsed = max(dt.ReportedUsed, st.LastUsed)
			dt.Failures, dt.Wiped = st.Failures, st.Wiped
		}
		dt.UpdatedAt = now
		if err := tx.PutDeviceToken(*dt); err != nil {
			return err
		}
	}
	for i := range u.Tokens {
		k := u.Tokens[i].Key()
		st := syncproto.ServerToken{TokenKey: k, Status: syncproto.StatusDeleted, LastUsed: -1}
		switch t, ok := out.tokens[k]; {
		case k.Realm != d.Realm:
			st.Status = syncproto.StatusForeign
		case ok:
			st.Status, st.LastUsed = t.Status, final[k]
		}
		resp.Tokens = append(resp.Tokens, st)
	}

	// Acknowledge and remember the upload.
	acked, ackedHash := d.AckedSeq, d.AckedHash
	if len(fresh) > 0 {
		acked, ackedHash = fresh[len(fresh)-1].Seq, fresh[len(fresh)-1].Hash
	}
	if err := tx.SaveDevice(acked, ackedHash, h.Serial, hash); err != nil {
		return err
	}
	resp.Acked, resp.AckedHash = acked, ackedHash
	if len(fresh) > 0 || raised > 0 || len(pend) > 0 {
		from := uint64(0)
		if len(fresh) > 0 {
			from = fresh[0].Seq
		}
		raw, _ := json.Marshal(map[string]any{"realm": d.Realm, "serial": h.Serial, "via": via, "from": from, "to": acked,
			"events": len(fresh), "tokens_raised": raised, "conflicts": len(pend)})
		extra = append(extra, eventlog.Entry{Time: now, Kind: KindSyncApply, Actor: actor, Subject: d.ID, Data: raw})
	}
	if _, err := tx.AppendAudit(extra); err != nil {
		return err
	}
	out.resp = resp
	d.AckedSeq, d.AckedHash, d.UploadSerial, d.UploadHash = acked, ackedHash, h.Serial, hash
	out.device = d
	return nil
}

// findOther looks for an earlier acceptance of counter c of token t: on
// another device (or earlier on this one), or online (online.FindFirstUse,
// the one lookup Verify's replay entries use too).
func (s *Service) findOther(tx store.SyncTx, k syncproto.TokenKey, t store.Token, c uint64, device string, seq uint64) (pendingConflict, bool, error) {
	pc := pendingConflict{c: syncproto.Conflict{TokenKey: k, Counter: c, DeviceSeq: seq}}
	own := func(u store.OfflineUse) bool { return u.Device == device && u.DeviceSeq == seq }
	fu, found, err := online.FindFirstUse(tx, t, c, own, maxOnlineScan)
	if found {
		pc.c.Other, pc.c.OtherAuditSeq, pc.otherTime = fu.Where, fu.AuditSeq, fu.At
	}
	return pc, found, err
}
