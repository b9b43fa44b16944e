package online

import (
	"context"
	"encoding/json"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/otp"
)

// FirstUse is where and when a token's step or counter was accepted before.
type FirstUse struct {
	// Where is "online" (a verification, confirmation or resync on the
	// server) or "device:ID" (a field device's offline acceptance, synced).
	Where string `json:"where"`
	// At is the acceptance's time: the server's for an online use, the
	// device's own claim for an offline one.
	At time.Time `json:"at"`
	// AuditSeq is the audit entry that records it.
	AuditSeq uint64 `json:"audit_seq"`
}

// UseLog is where earlier acceptances are recorded: a store.SyncTx inside a
// sync, or a store.SyncStore outside one (see useLogOf).
type UseLog interface {
	// OfflineUses returns the synced offline acceptances of counter.
	OfflineUses(realm, user, token string, counter uint64) ([]store.OfflineUse, error)
	// FindAudit is store.SyncStore.FindAudit.
	FindAudit(kind, subject string, before uint64, limit int) ([]eventlog.Entry, error)
}

// MaxOnlineScan bounds the verify.ok entries a Verify's replay lookup
// reads (the sync's conflict check passes its own, larger bound).
const MaxOnlineScan = 1000

// FindFirstUse looks for an earlier acceptance of step or counter c of
// token t: first a synced offline one (an indexed lookup; skip, when set,
// passes over the caller's own), then an online one among the user's
// verify.ok entries, newest first, reading at most maxScan of them. Online
// acceptances of a token only go up (the replay rule), so the scan stops at
// the first one below c, and for TOTP at entries older than ten periods
// before step c's time: an acceptance of c happened near it. Resyncs and
// confirmations, which consume codes too, are checked last. found is false
// when none is known within those bounds.
func FindFirstUse(log UseLog, t store.Token, c uint64, skip func(store.OfflineUse) bool, maxScan int) (FirstUse, bool, error) {
	uses, err := log.OfflineUses(t.Realm, t.UserID, t.ID, c)
	if err != nil {
		return FirstUse{}, false, err
	}
	for _, u := range uses {
		if skip == nil || !skip(u) {
			return FirstUse{Where: "device:" + u.Device, At: u.At, AuditSeq: u.AuditSeq}, true, nil
		}
	}
	if fu, found, err := findVerified(log, t, c, maxScan); err != nil || found {
		return fu, found, err
	}
	return findConsumed(log, t, c)
}

// usedValue is the part of an online acceptance's audit data FindFirstUse reads.
type usedValue struct {
	Token   string  `json:"token"`
	Matched *uint64 `json:"matched"` // verify.ok, token.confirm
	Counter *uint64 `json:"counter"` // token.resync
}

func findVerified(log UseLog, t store.Token, c uint64, maxScan int) (FirstUse, bool, error) {
	var floor time.Time // TOTP: an online acceptance of step c happened near its time
	if p, err := Params(t); err == nil && p.Period > 0 {
		floor = otp.StepTime(c, p.Period, p.T0).Add(-time.Duration(10*p.Period) * time.Second)
	}
	var before uint64
	for scanned := 0; scanned < maxScan; {
		page, err := log.FindAudit(audit.VerifyOK, t.UserID, before, min(500, maxScan-scanned))
		if err != nil || len(page) == 0 {
			return FirstUse{}, false, err
		}
		scanned += len(page)
		for _, e := range page {
			var v usedValue
			switch {
			case !floor.IsZero() && e.Time.Before(floor):
				return FirstUse{}, false, nil
			case json.Unmarshal(e.Data, &v) != nil || v.Token != t.ID || v.Matched == nil:
			case *v.Matched == c:
				return FirstUse{Where: "online", At: e.Time, AuditSeq: e.Seq}, true, nil
			case *v.Matched < c:
				return FirstUse{}, false, nil
			}
		}
		before = page[len(page)-1].Seq
	}
	return FirstUse{}, false, nil
}

// findConsumed checks HOTP resynchronisations, which consume two counters,
// and confirmations, which consume the first code.
func findConsumed(log UseLog, t store.Token, c uint64) (FirstUse, bool, error) {
	for _, kind := range []string{audit.TokenResync, audit.TokenConfirm} {
		page, err := log.FindAudit(kind, t.UserID, 0, store.MaxListLimit)
		if err != nil {
			return FirstUse{}, false, err
		}
		for _, e := range page {
			var v usedValue
			if json.Unmarshal(e.Data, &v) != nil || v.Token != t.ID {
				continue
			}
			if (v.Counter != nil && (*v.Counter == c || *v.Counter == c+1)) || (v.Matched != nil && *v.Matched == c) {
				return FirstUse{Where: "online", At: e.Time, AuditSeq: e.Seq}, true, nil
			}
		}
	}
	return FirstUse{}, false, nil
}

// useLog reads a SyncStore outside a transaction.
type useLog struct {
	ctx context.Context
	ss  store.SyncStore
}

func (l useLog) OfflineUses(realm, user, token string, counter uint64) ([]store.OfflineUse, error) {
	return l.ss.OfflineUses(l.ctx, realm, user, token, counter)
}

func (l useLog) FindAudit(kind, subject string, before uint64, limit int) ([]eventlog.Entry, error) {
	return l.ss.FindAudit(l.ctx, kind, subject, before, limit)
}

// replayFailure is the counted failure of presenting step or counter m of
// t again, during op ("verify", "confirm", "resync"). Its audit entry names
// the first use when the store knows it within FindFirstUse's bounds
// (where "unknown" otherwise); the caller's answer stays ErrReplayed.
func (s *Service) replayFailure(ctx context.Context, t store.Token, m uint64, op string) *failure {
	first := any(map[string]string{"where": "unknown"})
	if ss, ok := s.Store.(store.SyncStore); ok {
		fu, found, err := FindFirstUse(useLog{ctx, ss}, t, m, nil, MaxOnlineScan)
		if err == nil && found {
			first = fu
		}
	}
	return &failure{reason: "replayed", data: map[string]any{"op": op, "token": t.ID, "matched": m, "first_used": first}}
}
