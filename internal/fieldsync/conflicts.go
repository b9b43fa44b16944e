package fieldsync

import (
	"encoding/json"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/otp"
)

// The conflict search runs inside the sync's transaction, with the write
// lock held, so its work is bounded. Each counter is looked up in
// offline_uses (an indexed point lookup; at most syncproto.MaxEntries per
// upload). The online side is the audit log's verify.ok entries of the user
// (indexed by kind, subject, seq), newest first: ONE scan per token and
// upload for all its counters (online acceptances of a token only ever go
// up, so the scan stops at the first one below the lowest counter, or, for
// TOTP, ten steps before that step's time), and all scans of one upload
// together read at most maxConflictScan entries. A search cut short by that
// bound is an incident (conflict_search_bounded, naming the counters left
// unchecked) for a person to look at, never silence.

// maxConflictScan bounds the audit entries the conflict search of one upload reads.
const maxConflictScan = 20000

// conflictPage is the page size of the scan.
const conflictPage = 500

// maxResyncScan bounds the token.resync entries read per token.
const maxResyncScan = 1000

// candidate is a counter this upload accepted at or below the token's
// online state: an earlier acceptance elsewhere may exist.
type candidate struct {
	c     uint64
	entry int // index among the upload's new entries
	seq   uint64
}

// search is the conflict search of one token.
type search struct {
	tx     store.SyncTx
	k      syncproto.TokenKey
	t      store.Token
	device string
	budget *int
	open   map[uint64]candidate // by counter (one per counter: repeats within an upload are conflicts already)
	found  []pendingConflict
}

// searchConflicts looks for an earlier acceptance of each candidate of
// token k: on another device, online, or by a resynchronisation. It returns
// the conflicts found, the candidates with none (in upload order), and
// whether the search was complete (false: the budget ran out first).
func searchConflicts(tx store.SyncTx, k syncproto.TokenKey, t store.Token, cands []candidate, device string, budget *int) ([]pendingConflict, []candidate, bool, error) {
	s := &search{tx: tx, k: k, t: t, device: device, budget: budget, open: map[uint64]candidate{}}
	if err := s.offline(cands); err != nil {
		return nil, nil, false, err
	}
	complete, err := s.online()
	if err == nil && complete {
		complete, err = s.resync()
	}
	if err != nil {
		return nil, nil, false, err
	}
	open := make([]candidate, 0, len(s.open))
	for _, c := range cands {
		if _, ok := s.open[c.c]; ok {
			open = append(open, c)
		}
	}
	return s.found, open, complete, nil
}

// take records a conflict for the open candidate of counter c, if any.
func (s *search) take(c uint64, other string, otherSeq uint64, at time.Time) {
	x, ok := s.open[c]
	if !ok {
		return
	}
	delete(s.open, c)
	s.found = append(s.found, pendingConflict{c: syncproto.Conflict{TokenKey: s.k, Counter: x.c, DeviceSeq: x.seq, Other: other, OtherAuditSeq: otherSeq},
		entry: x.entry, otherEntry: -1, otherTime: at})
}

// offline: an acceptance of the counter by another device (or earlier by this one).
func (s *search) offline(cands []candidate) error {
	for _, c := range cands {
		uses, err := s.tx.OfflineUses(s.k.Realm, s.k.User, s.k.Token, c.c)
		if err != nil {
			return err
		}
		s.open[c.c] = c
		for _, u := range uses {
			if u.Device != s.device || u.DeviceSeq != c.seq {
				s.take(c.c, "device:"+u.Device, u.AuditSeq, u.At)
				break
			}
		}
	}
	return nil
}

// online scans the user's verify.ok entries once for all open counters.
func (s *search) online() (bool, error) {
	if len(s.open) == 0 {
		return true, nil
	}
	lo := uint64(syncproto.MaxCounter)
	for c := range s.open {
		lo = min(lo, c)
	}
	var floor time.Time // TOTP: an online acceptance of step c happened near its time
	if p, err := online.Params(s.t); err == nil && p.Period > 0 {
		floor = otp.StepTime(lo, p.Period, p.T0).Add(-time.Duration(10*p.Period) * time.Second)
	}
	var before uint64
	for len(s.open) > 0 {
		if *s.budget <= 0 {
			return false, nil
		}
		page, err := s.tx.FindAudit(audit.VerifyOK, s.k.User, before, min(conflictPage, *s.budget))
		if err != nil || len(page) == 0 {
			return true, err
		}
		*s.budget -= len(page)
		for _, e := range page {
			if !floor.IsZero() && e.Time.Before(floor) {
				return true, nil
			}
			m, ok := s.used(e, "matched")
			if !ok {
				continue
			}
			s.take(m, "online", e.Seq, e.Time)
			if m < lo {
				return true, nil
			}
		}
		before = page[len(page)-1].Seq
	}
	return true, nil
}

// resync checks HOTP resynchronisations, which consume two counters.
func (s *search) resync() (bool, error) {
	if len(s.open) == 0 {
		return true, nil
	}
	if *s.budget <= 0 {
		return false, nil
	}
	page, err := s.tx.FindAudit(audit.TokenResync, s.k.User, 0, min(maxResyncScan, *s.budget))
	if err != nil {
		return false, err
	}
	*s.budget -= len(page)
	for _, e := range page {
		c, ok := s.used(e, "counter")
		if !ok {
			continue
		}
		s.take(c, "online", e.Seq, e.Time)
		if c > 0 {
			s.take(c-1, "online", e.Seq, e.Time)
		}
	}
	return true, nil
}

// used reads the counter an online audit entry of this token consumed:
// field "matched" of verify.ok, "counter" of token.resync; false for an
// entry of another token or without it.
func (s *search) used(e eventlog.Entry, field string) (uint64, bool) {
	var v struct {
		Token   string  `json:"token"`
		Matched *uint64 `json:"matched"`
		Counter *uint64 `json:"counter"`
	}
	if json.Unmarshal(e.Data, &v) != nil || v.Token != s.k.Token {
		return 0, false
	}
	c := v.Matched
	if field == "counter" {
		c = v.Counter
	}
	if c == nil {
		return 0, false
	}
	return *c, true
}
