package fieldsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/otp"
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
	// incidents are the kinds of the incidents recorded by an applied upload.
	incidents []string
	// sinkAudit and sinkDone are what Service.Entries returned.
	sinkAudit []eventlog.Entry
	sinkDone  func()
	// tokens, device tokens and the issued bundle each device token stands
	// on (the one the device imported last), for refills.
	tokens  map[syncproto.TokenKey]store.Token
	dts     map[syncproto.TokenKey]*store.DeviceToken
	current map[syncproto.TokenKey]*store.IssuedBundle
}

// pendingConflict is a conflict found before the audit entries have their
// sequence numbers.
type pendingConflict struct {
	c syncproto.Conflict
	// entry is the index of this device's event among the new audit entries;
	// otherEntry the index of the other event when it is in the same upload (-1 otherwise).
	entry, otherEntry int
	otherTime         time.Time
}

// maxUploadKeys bounds the distinct tokens one upload's states and events
// name: each costs a few statements inside the transaction.
const maxUploadKeys = syncproto.MaxTokens

// parseEvents reads what the server interprets of each entry of u (before
// the transaction: the lock is not held for it) and checks the bound on
// the tokens they and the states name.
func parseEvents(u *syncproto.Upload) ([]eventData, error) {
	keys := map[syncproto.TokenKey]bool{}
	for i := range u.Tokens {
		keys[u.Tokens[i].Key()] = true
	}
	datas := make([]eventData, len(u.Entries))
	for i := range u.Entries {
		if json.Unmarshal(u.Entries[i].Data, &datas[i]) != nil {
			datas[i] = eventData{}
			continue
		}
		if datas[i].Token != "" && u.Entries[i].Subject != "" {
			keys[keyOf(datas[i].Realm, u.Entries[i].Subject, datas[i].Token)] = true
		}
	}
	if len(keys) > maxUploadKeys {
		return nil, fmt.Errorf("%w: the upload names %d tokens, at most %d: upload fewer entries at a time", ErrMalformed, len(keys), maxUploadKeys)
	}
	return datas, nil
}

// apply runs step 3 of Receive in one transaction.
func (s *Service) apply(ctx context.Context, dev store.Device, h artifact.Header, u *syncproto.Upload, datas []eventData, hash []byte, via string, now time.Time) (*outcome, error) {
	var out *outcome
	// The transaction runs to its end even if the caller goes away: the
	// device will retry, and the server must know whether this one committed.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	err := s.Sync.SyncDevice(tctx, dev.Realm, dev.ID, now, func(tx store.SyncTx) error {
		out = &outcome{}
		a := &applier{ctx: tctx, s: s, tx: tx, d: tx.Device(), h: h, u: u, hash: hash, via: via, now: now, out: out}
		return a.run(datas)
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w: device %s", ErrUnknownDevice, dev.ID)
		}
		return nil, err
	}
	if out.sinkDone != nil {
		out.sinkDone()
	}
	return out, nil
}

// applier is one run of the sync transaction.
type applier struct {
	ctx  context.Context
	s    *Service
	tx   store.SyncTx
	d    store.Device
	h    artifact.Header
	u    *syncproto.Upload
	hash []byte
	via  string
	now  time.Time
	out  *outcome

	fresh []eventlog.Entry // the entries the server has not recorded yet
	datas []eventData      // what the server reads of each of fresh
	g     *grants
	cl    claims
	// states are the upload's token states; keys the tokens issued to the
	// device that the upload names, locked, in lock order; unissued those
	// of the device's realm never issued to it.
	states   map[syncproto.TokenKey]*syncproto.TokenState
	keys     []syncproto.TokenKey
	unissued map[syncproto.TokenKey]bool
	// ignored[i] is the incident that made fresh[i] change nothing.
	ignored []string
	uses    []store.OfflineUse // entry index in DeviceSeq until recorded
	useAt   []int
	pend    []pendingConflict
	cands   map[syncproto.TokenKey][]candidate
	maxOK   map[syncproto.TokenKey]int64
	// claimed is the last used counter of each token state that may be applied.
	claimed map[syncproto.TokenKey]int64
}

func (a *applier) run(datas []eventData) error {
	a.out.device = a.d
	if done, err := a.checkLog(datas); done || err != nil {
		return err
	}
	if err := a.lockTokens(); err != nil {
		return err
	}
	if err := a.events(); err != nil {
		return err
	}
	if err := a.searchConflicts(); err != nil {
		return err
	}
	if done, err := a.checkStates(); done || err != nil {
		return err
	}
	if a.s.Entries != nil && len(a.fresh) > 0 {
		var err error
		if a.out.sinkAudit, a.out.sinkDone, err = a.s.Entries.SyncEntries(a.ctx, a.tx, a.d, a.fresh, a.now); err != nil {
			return err
		}
	}
	return a.record()
}

// refuse records a refusal's incident; the transaction then commits only that.
func (a *applier) refuse(kind string, err error, extra map[string]any) error {
	a.out.refusal, a.out.incident = err, kind
	data := map[string]any{"incident": kind, "realm": a.d.Realm, "serial": a.h.Serial, "reason": err.Error(), "via": a.via}
	for k, v := range extra {
		data[k] = v
	}
	raw, _ := json.Marshal(data)
	_, aerr := a.tx.AppendAudit([]eventlog.Entry{{Time: a.now, Kind: KindIncident, Actor: "device:" + a.d.ID, Subject: a.d.ID, Data: raw}})
	return aerr
}

// checkLog places the upload against the server's copy of the device log
// and finds the fresh entries; done reports a refusal.
func (a *applier) checkLog(datas []eventData) (bool, error) {
	d, u, h := a.d, a.u, a.h
	if d.Status != store.DeviceActive {
		return true, a.refuse(IncidentRevoked, fmt.Errorf("%w: device %s", ErrRevoked, d.ID), nil)
	}
	if h.Serial < d.UploadSerial || (h.Serial == d.UploadSerial && !bytes.Equal(a.hash, d.UploadHash)) {
		return true, a.refuse(IncidentReplay, fmt.Errorf("%w: serial %d, the server applied serial %d already", ErrReplay, h.Serial, d.UploadSerial), nil)
	}
	last := u.After + uint64(len(u.Entries))
	var anchor *eventlog.Entry
	if u.After > 0 && len(u.Entries) > 0 {
		anchor = &eventlog.Entry{Seq: u.After, Hash: u.Entries[0].Prev}
	}
	switch {
	case u.After > d.AckedSeq:
		gap := &GapError{Acked: d.AckedSeq, Err: fmt.Errorf("%w: it starts after entry %d but the server holds entries up to %d: upload from entry %d",
			ErrGap, u.After, d.AckedSeq, d.AckedSeq+1)}
		return true, a.refuse(IncidentGap, gap, map[string]any{"after": u.After, "acked": d.AckedSeq})
	case u.Head < d.AckedSeq:
		return true, a.refuse(IncidentTruncated, fmt.Errorf("%w: the device's log ends at entry %d, the server recorded entries up to %d (was the device's store restored or altered?)",
			ErrTruncated, u.Head, d.AckedSeq), map[string]any{"head": u.Head, "acked": d.AckedSeq})
	case d.AckedSeq > 0 && d.AckedSeq <= last && (anchor != nil || d.AckedSeq > u.After):
		if _, err := eventlog.VerifyHead(anchor, u.Entries, d.AckedSeq, d.AckedHash); err != nil {
			return true, a.refuse(IncidentRewritten, fmt.Errorf("%w: %v", ErrRewritten, err), map[string]any{"acked": d.AckedSeq})
		}
	}
	if kind, err := checkHead(u, d); err != nil {
		return true, a.refuse(kind, err, map[string]any{"head": u.Head, "acked": d.AckedSeq})
	}
	if last > d.AckedSeq {
		a.fresh, a.datas = u.Entries[d.AckedSeq-u.After:], datas[d.AckedSeq-u.After:]
	}
	return false, nil
}

// lockTokens finds the tokens this upload concerns in the device's realm
// and, for those issued to the device, locks them in a fixed order and
// reads the device's record of them. Other realms' events are recorded,
// never applied; tokens never issued to the device are not even locked.
func (a *applier) lockTokens() error {
	a.states = map[syncproto.TokenKey]*syncproto.TokenState{}
	named := map[syncproto.TokenKey]bool{}
	for i := range a.u.Tokens {
		a.states[a.u.Tokens[i].Key()] = &a.u.Tokens[i]
		named[a.u.Tokens[i].Key()] = true
	}
	for i := range a.fresh {
		if ev := &a.datas[i]; ev.Token != "" && a.fresh[i].Subject != "" {
			named[keyOf(ev.Realm, a.fresh[i].Subject, ev.Token)] = true
		}
	}
	a.g = newGrants(a.tx)
	a.unissued = map[syncproto.TokenKey]bool{}
	a.out.tokens = map[syncproto.TokenKey]store.Token{}
	a.out.dts = map[syncproto.TokenKey]*store.DeviceToken{}
	for _, k := range sortedKeys(named) {
		if k.Realm != a.d.Realm {
			continue
		}
		issued, err := a.g.load(k)
		if err != nil {
			return err
		}
		if !issued {
			a.unissued[k] = true
			continue
		}
		if err := a.lock(k); err != nil {
			return err
		}
		a.keys = append(a.keys, k)
	}
	return nil
}

func (a *applier) lock(k syncproto.TokenKey) error {
	t, err := a.tx.LockToken(k.Realm, k.User, k.Token)
	switch {
	case err == nil:
		a.out.tokens[k] = t
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	dt, _, err := a.tx.DeviceToken(k.Realm, k.User, k.Token)
	if err != nil {
		return err
	}
	a.out.dts[k] = &dt
	return nil
}

// claim records a claim beyond what was issued, made by fresh entry i.
func (a *applier) claim(kind string, k syncproto.TokenKey, i int, what map[string]any) {
	if what == nil {
		what = map[string]any{}
	}
	what["device_seq"], what["kind"] = a.fresh[i].Seq, a.fresh[i].Kind
	a.cl.add(kind, k, what)
	a.ignored[i] = kind
}

// events reads the fresh entries: bundles imported, wipes, and counters
// accepted, each checked against what was issued to the device.
func (a *applier) events() error {
	a.ignored = make([]string, len(a.fresh))
	a.cands = map[syncproto.TokenKey][]candidate{}
	a.maxOK = map[syncproto.TokenKey]int64{}
	seenHere := map[syncproto.TokenKey]map[uint64]int{} // counter → entry index, within this upload
	for i := range a.fresh {
		e, ev := &a.fresh[i], &a.datas[i]
		if ev.Realm != a.d.Realm || ev.Token == "" || e.Subject == "" {
			continue
		}
		k := keyOf(ev.Realm, e.Subject, ev.Token)
		dt := a.out.dts[k]
		if dt == nil {
			a.claim(IncidentUnissued, k, i, nil)
			continue
		}
		var err error
		switch e.Kind {
		case "import":
			err = a.imported(i, k, dt)
		case "wipe":
			dt.Wiped = true
		case "verify.ok":
			if seenHere[k] == nil {
				seenHere[k] = map[uint64]int{}
			}
			err = a.accepted(i, k, dt, seenHere[k])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// imported moves the device's record to the bundle an "import" entry names,
// if the server issued exactly that bundle to the device.
func (a *applier) imported(i int, k syncproto.TokenKey, dt *store.DeviceToken) error {
	ev := &a.datas[i]
	b, err := a.g.matchImport(k, ev)
	if err != nil {
		return err
	}
	if b == nil {
		a.claim(IncidentUnissuedBundle, k, i, map[string]any{"serial": ev.Serial, "type": ev.Type, "first": ev.First, "last": ev.Last})
		return nil
	}
	if b.Serial > dt.Serial {
		dt.Serial, dt.Type, dt.First, dt.Last, dt.NotAfter = b.Serial, b.Type, b.First, b.Last, b.NotAfter
		dt.Wiped = false
	}
	return nil
}

// accepted takes a verify.ok entry: an offline use, if the counter lies
// inside the issued bundle the entry names; a conflict if this upload
// accepted the counter before; a candidate for the conflict search if the
// counter is not above the token's online state.
func (a *applier) accepted(i int, k syncproto.TokenKey, dt *store.DeviceToken, seen map[uint64]int) error {
	e, ev := &a.fresh[i], &a.datas[i]
	if ev.Counter == nil || *ev.Counter > syncproto.MaxCounter {
		return nil
	}
	c := *ev.Counter
	kind, err := a.g.checkUse(k, ev.Serial, c, a.horizon(k))
	if err != nil || kind != "" {
		if kind != "" {
			a.claim(kind, k, i, map[string]any{"serial": ev.Serial, "counter": c})
		}
		return err
	}
	a.uses = append(a.uses, store.OfflineUse{Realm: k.Realm, UserID: k.User, TokenID: k.Token, Counter: c, Device: a.d.ID, DeviceSeq: e.Seq, At: e.Time})
	a.useAt = append(a.useAt, i)
	if int64(c) > dt.OfflineUsed {
		dt.OfflineUsed, dt.UsedSerial = int64(c), *ev.Serial
	}
	if v, ok := a.maxOK[k]; !ok || int64(c) > v {
		a.maxOK[k] = int64(c)
	}
	if j, ok := seen[c]; ok {
		a.pend = append(a.pend, pendingConflict{c: syncproto.Conflict{TokenKey: k, Counter: c, DeviceSeq: e.Seq, Other: "device:" + a.d.ID},
			entry: i, otherEntry: j, otherTime: a.fresh[j].Time})
		return nil
	}
	seen[c] = i
	if t, ok := a.out.tokens[k]; ok && c < otp.NextCounter(t.Used, uint64(t.LastUsed)) {
		a.cands[k] = append(a.cands[k], candidate{c: c, entry: i, seq: e.Seq})
	}
	return nil
}

// searchConflicts looks for earlier acceptances of the candidates, within
// one budget for the whole upload (conflicts.go).
func (a *applier) searchConflicts() error {
	budget := maxConflictScan
	for _, k := range sortedKeys(a.cands) {
		t, dt := a.out.tokens[k], a.out.dts[k]
		found, open, complete, err := searchConflicts(a.tx, k, t, a.cands[k], a.d.ID, &budget)
		if err != nil {
			return err
		}
		a.pend = append(a.pend, found...)
		var unchecked []uint64
		for _, c := range open {
			if int64(c.c) == t.LastUsed && dt.ReportedUsed < int64(c.c) {
				// The token stands exactly at c, yet no acceptance of c is
				// recorded and this device never reported reaching it: an
				// acceptance whose audit entry is still on its way (an online
				// verification between its two writes), or one in a part of
				// another device's log not uploaded yet. Never silent.
				a.pend = append(a.pend, pendingConflict{c: syncproto.Conflict{TokenKey: k, Counter: c.c, DeviceSeq: c.seq, Other: OtherUnrecorded},
					entry: c.entry, otherEntry: -1})
			} else if !complete {
				unchecked = append(unchecked, c.c)
			}
		}
		if len(unchecked) > 0 {
			a.cl.add(IncidentSearchBounded, k, map[string]any{"unchecked": len(unchecked), "counters": unchecked[:min(len(unchecked), maxExamples)],
				"scan_limit": maxConflictScan})
		}
	}
	return nil
}

// checkStates refuses state going backwards (done), and decides which
// reported last used counters may be applied: those of tokens issued to
// the device, up to the highest counter issued (for TOTP, up to the step
// that has begun: see [StepTolerance]). A higher one is applied
// only if the server's state already stands there (the device learnt it
// from an answer); otherwise it is an incident and changes nothing.
func (a *applier) checkStates() (bool, error) {
	a.claimed = map[syncproto.TokenKey]int64{}
	// The very same upload again (a retry after a lost answer) was judged
	// the first time: its claims are not recorded twice.
	retry := a.h.Serial == a.d.UploadSerial
	for _, k := range a.keys {
		st, dt := a.states[k], a.out.dts[k]
		if st == nil {
			continue
		}
		floor := max(dt.ReportedUsed, dt.OfflineUsed)
		if v, ok := a.maxOK[k]; ok {
			floor = max(floor, v)
		}
		if st.LastUsed < floor {
			return true, a.refuse(IncidentBackwards, fmt.Errorf("%w: token %s: last used %d, but %d was reported or used before (was the device's store restored or altered?)",
				ErrBackwards, k, st.LastUsed, floor), map[string]any{"token": k.Token, "user": k.User, "reported": st.LastUsed, "known": floor})
		}
		cur := int64(-1)
		if t, ok := a.out.tokens[k]; ok && t.Used {
			cur = t.LastUsed
		}
		if horizon := a.horizon(k); (st.LastUsed > int64(a.g.last[k]) || st.LastUsed > int64(horizon)) && st.LastUsed > cur {
			if !retry {
				what := map[string]any{"state": "last_used", "last_used": st.LastUsed, "issued_last": a.g.last[k]}
				if horizon < syncproto.MaxCounter {
					what["step_horizon"] = horizon // the last step begun by the server's clock
				}
				a.cl.add(IncidentOutOfRange, k, what)
			}
			continue
		}
		a.claimed[k] = st.LastUsed
	}
	for _, k := range sortedKeys(a.unissued) {
		if st := a.states[k]; st != nil && !retry {
			a.cl.add(IncidentUnissued, k, map[string]any{"state": "last_used", "last_used": st.LastUsed, "bundle_serial": st.Serial})
		}
	}
	return false, nil
}

// record writes everything the upload established, in one transaction.
func (a *applier) record() error {
	entries := make([]eventlog.Entry, len(a.fresh))
	for i := range a.fresh {
		entries[i] = auditOf(a.d, &a.fresh[i], a.now, a.ignored[i])
	}
	stored, err := a.tx.AppendAudit(entries)
	if err != nil {
		return err
	}
	a.out.added = len(stored)
	for j, i := range a.useAt {
		a.uses[j].AuditSeq = stored[i].Seq
	}
	if len(a.uses) > 0 {
		if err := a.tx.AddOfflineUses(a.uses); err != nil {
			return err
		}
	}
	extra := a.conflictEntries(stored)
	extra = append(extra, a.cl.entries(a.d, a.h.Serial, a.via, a.now)...)
	extra = append(extra, a.out.sinkAudit...)
	a.out.incidents = a.cl.kinds()
	raised, final, err := a.raise()
	if err != nil {
		return err
	}
	if err := a.saveDeviceTokens(); err != nil {
		return err
	}
	a.respond(final)
	return a.acknowledge(extra, raised)
}

// conflictEntries are the audit entries of the conflicts found, each naming both events.
func (a *applier) conflictEntries(stored []eventlog.Entry) []eventlog.Entry {
	var extra []eventlog.Entry
	for _, p := range a.pend {
		c := p.c
		if p.otherEntry >= 0 {
			c.OtherAuditSeq = stored[p.otherEntry].Seq
		}
		raw, _ := json.Marshal(map[string]any{"incident": IncidentConflict, "realm": c.Realm, "token": c.Token, "counter": c.Counter,
			"device": a.d.ID, "device_seq": c.DeviceSeq, "device_time": a.fresh[p.entry].Time, "audit_seq": stored[p.entry].Seq,
			"other": c.Other, "other_audit_seq": c.OtherAuditSeq, "other_time": p.otherTime})
		extra = append(extra, eventlog.Entry{Time: a.now, Kind: KindConflict, Actor: "device:" + a.d.ID, Subject: c.User, Data: raw})
		a.out.conflicts = append(a.out.conflicts, c)
	}
	return extra
}

// raise makes each issued token's online last used the maximum of both
// sides: its own, the counters accepted from issued bundles, and the
// state the device may claim.
func (a *applier) raise() (int, map[syncproto.TokenKey]int64, error) {
	raised := 0
	final := map[syncproto.TokenKey]int64{}
	for _, k := range a.keys {
		t, ok := a.out.tokens[k]
		if !ok {
			continue
		}
		cur := int64(-1)
		if t.Used {
			cur = t.LastUsed
		}
		target := int64(-1)
		if v, ok := a.maxOK[k]; ok {
			target = v
		}
		if v, ok := a.claimed[k]; ok {
			target = max(target, v)
		}
		if target > cur {
			ok, err := a.tx.RaiseToken(k.Realm, k.User, k.Token, target)
			if err != nil {
				return 0, nil, err
			}
			if !ok {
				return 0, nil, fmt.Errorf("fieldsync: token %s changed under its lock", k)
			}
			cur = target
			raised++
			t.LastUsed, t.Used = target, true
			a.out.tokens[k] = t
		}
		final[k] = cur
	}
	return raised, final, nil
}

// saveDeviceTokens stores what the server now knows of each issued token
// on the device, and notes the issued bundle each stands on.
func (a *applier) saveDeviceTokens() error {
	a.out.current = map[syncproto.TokenKey]*store.IssuedBundle{}
	for _, k := range a.keys {
		dt := a.out.dts[k]
		if st := a.states[k]; st != nil {
			if v, ok := a.claimed[k]; ok {
				dt.ReportedUsed = max(dt.ReportedUsed, v)
			}
			dt.Failures, dt.Wiped = st.Failures, st.Wiped
		}
		dt.UpdatedAt = a.now
		if err := a.tx.PutDeviceToken(*dt); err != nil {
			return err
		}
		if dt.Serial == 0 {
			continue
		}
		b, err := a.g.bundle(k, dt.Serial)
		if err != nil {
			return err
		}
		a.out.current[k] = b
	}
	return nil
}

// respond builds the answer's token states. A token of another realm, or
// never issued to the device, is "foreign": the device learns nothing of it.
func (a *applier) respond(final map[syncproto.TokenKey]int64) {
	resp := syncproto.Response{Device: a.d.ID, UploadSerial: a.h.Serial, Tokens: []syncproto.ServerToken{}, Conflicts: a.out.conflicts,
		Ignored: a.cl.ignored()}
	for i := range a.u.Tokens {
		k := a.u.Tokens[i].Key()
		st := syncproto.ServerToken{TokenKey: k, Status: syncproto.StatusDeleted, LastUsed: -1}
		switch t, ok := a.out.tokens[k]; {
		case k.Realm != a.d.Realm || a.unissued[k]:
			st.Status = syncproto.StatusForeign
		case ok:
			st.Status, st.LastUsed = t.Status, final[k]
		}
		resp.Tokens = append(resp.Tokens, st)
	}
	a.out.resp = resp
}

// acknowledge moves the acknowledgement, remembers the upload, and appends
// the conflicts, incidents and the sync.apply summary.
func (a *applier) acknowledge(extra []eventlog.Entry, raised int) error {
	d := a.d
	acked, ackedHash := d.AckedSeq, d.AckedHash
	if n := len(a.fresh); n > 0 {
		acked, ackedHash = a.fresh[n-1].Seq, a.fresh[n-1].Hash
	}
	if err := a.tx.SaveDevice(acked, ackedHash, a.h.Serial, a.hash); err != nil {
		return err
	}
	a.out.resp.Acked, a.out.resp.AckedHash = acked, ackedHash
	if len(a.fresh) > 0 || raised > 0 || len(a.pend) > 0 || len(a.cl.order) > 0 {
		from := uint64(0)
		if len(a.fresh) > 0 {
			from = a.fresh[0].Seq
		}
		raw, _ := json.Marshal(map[string]any{"realm": d.Realm, "serial": a.h.Serial, "via": a.via, "from": from, "to": acked,
			"events": len(a.fresh), "tokens_raised": raised, "conflicts": len(a.pend), "incidents": len(a.cl.order)})
		extra = append(extra, eventlog.Entry{Time: a.now, Kind: KindSyncApply, Actor: "device:" + d.ID, Subject: d.ID, Data: raw})
	}
	if _, err := a.tx.AppendAudit(extra); err != nil {
		return err
	}
	d.AckedSeq, d.AckedHash, d.UploadSerial, d.UploadHash = acked, ackedHash, a.h.Serial, a.hash
	a.out.device = d
	return nil
}
