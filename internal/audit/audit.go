// Package audit records security-relevant server events (enrolment, verify
// success and failure, lockout, key export, admin changes) in the store's
// hash-chained audit log, and re-verifies that chain.
//
// [Log.Record] returns only once the entry is committed. Event data never
// holds a secret: callers pass ids, counts and outcomes, never codes, PINs,
// seeds or API tokens.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// Event kinds. One constant per kind, so that a search of the code finds every writer.
const (
	UserCreate      = "user.create"
	UserDelete      = "user.delete"
	PINSet          = "user.pin_set"
	TokenCreate     = "token.create"
	TokenConfirm    = "token.confirm"
	TokenDelete     = "token.delete"
	TokenResync     = "token.resync"
	VerifyOK        = "verify.ok"
	VerifyFail      = "verify.fail"
	VerifyReplay    = "verify.replayed"
	Lockout         = "lockout"
	LockoutReset    = "lockout.reset"
	APIClientCreate = "api_client.create"
	APIClientRevoke = "api_client.disable"
	AuthDenied      = "auth.denied"
	KeyExport       = "key.export"
	BundleIssue     = "offline.bundle_issue"
	FloorOverride   = "offline.floor_override"

	// VerifyUnknownUser is one realm's tally of verifications for users that
	// do not exist, written once per interval (online.Service.FlushUnknown).
	VerifyUnknownUser = "verify.unknown_user"
)

// Log writes audit entries to a store.
type Log struct {
	Store store.Store
	// Now is the clock of the entries' times; nil means clock.System.
	Now func() time.Time
}

// Record appends one event. data is encoded as JSON and must hold no secret.
func (l *Log) Record(ctx context.Context, kind, actor, subject string, data any) error {
	var raw json.RawMessage
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return fmt.Errorf("audit: encoding %s: %w", kind, err)
		}
		raw = b
	}
	_, err := l.Store.AppendAudit(ctx, eventlog.Entry{Time: clock.Or(l.Now)(), Kind: kind, Actor: actor, Subject: subject, Data: raw})
	if err != nil {
		return fmt.Errorf("audit: appending %s: %w", kind, err)
	}
	return nil
}

// Accept records that token t accepted the code at step or counter used, as
// one durable step with its verify.ok entry (store.AcceptCode). It returns
// store.ErrReplayed when the value was already used.
func (l *Log) Accept(ctx context.Context, t store.Token, used int64, actor string) error {
	data, _ := json.Marshal(map[string]any{"token": t.ID, "matched": used})
	_, err := l.Store.AcceptCode(ctx, t.Realm, t.UserID, t.ID, used, eventlog.Entry{Time: clock.Or(l.Now)(), Kind: VerifyOK, Actor: actor, Subject: t.UserID, Data: data})
	return err
}

// Report is the result of [VerifyStore].
type Report struct {
	Entries  uint64 `json:"entries"`
	OK       bool   `json:"ok"`
	BrokenAt uint64 `json:"broken_at,omitempty"` // seq of the first bad entry
	Problem  string `json:"problem,omitempty"`
}

// VerifyStore recomputes the whole chain, page by page, and reports the first
// broken link.
func VerifyStore(ctx context.Context, s store.Store) (Report, error) {
	var last *eventlog.Entry
	var r Report
	for {
		page, err := s.ListAudit(ctx, r.Entries, 1000)
		if err != nil {
			return r, err
		}
		if len(page) == 0 {
			r.OK = true
			return r, nil
		}
		if i, err := eventlog.VerifyChain(last, page, nil); err != nil {
			r.BrokenAt = r.Entries + uint64(i) + 1
			r.Problem = err.Error()
			return r, nil
		}
		r.Entries += uint64(len(page))
		last = &page[len(page)-1]
	}
}
