// Package audit records security-relevant server events (enrolment, verify
// success and failure, lockout, key export, admin changes) in the store's
// hash-chained audit log, and re-verifies that chain.
//
// [Log.Record] returns only once the entry is committed. Event data never
// holds a secret: callers pass ids, counts and outcomes, never codes, PINs,
// seeds or API tokens.
package audit

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
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
	// Checkpoint: an admin had the server sign a checkpoint of the log's head
	// (internal/auditcheck); data holds its seq and hash.
	Checkpoint = "audit.checkpoint"
	// Export: entries were written to a signed segment file
	// (internal/auditcheck.Archive); data holds its range, file and SHA-256.
	Export = "audit.export"
	// Prune: exported entries were deleted from the database, in the same
	// transaction as this entry; data holds "from", "through" (the last seq
	// deleted), "hash" (its hash, hex) and the segment file.
	Prune = "audit.prune"

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
// store.ErrReplayed when the value was already used, and store.ErrStale
// when version (the user's, as read; < 0 for no check) is no longer the
// user's.
func (l *Log) Accept(ctx context.Context, t store.Token, used, version int64, actor string) error {
	data, _ := json.Marshal(map[string]any{"token": t.ID, "matched": used})
	_, err := l.Store.AcceptCode(ctx, t.Realm, t.UserID, t.ID, used, version, eventlog.Entry{Time: clock.Or(l.Now)(), Kind: VerifyOK, Actor: actor, Subject: t.UserID, Data: data})
	return err
}

// Head is an entry of the log that a verifier holds from elsewhere (a signed
// checkpoint, internal/auditcheck): its sequence number and hash.
type Head struct {
	Seq  uint64
	Hash []byte
}

// Report is the result of [VerifyStore].
type Report struct {
	Entries  uint64 `json:"entries"`
	OK       bool   `json:"ok"`
	BrokenAt uint64 `json:"broken_at,omitempty"` // seq of the first bad entry
	Problem  string `json:"problem,omitempty"`
	// Anchored is the highest seq that a given head (checkpoint) vouches for.
	Anchored uint64 `json:"anchored,omitempty"`
	// Read is how many entries were read from the store.
	Read uint64 `json:"read"`
	// Pruned is the seq of the last entry pruned from the database (0:
	// none); entries 1..Pruned are only in exported segments. Heads at or
	// before it were not checked against the database.
	Pruned uint64 `json:"pruned,omitempty"`
}

// VerifyStore recomputes the whole chain, page by page, and reports the first
// broken link. Each of heads must be in the log exactly as given: that
// catches what the chain alone cannot, a tail rewritten with every later hash
// recomputed (the entry at the head's seq differs) or cut short (the log
// ends before it).
//
// A log whose oldest entries were pruned (store.AuditPruner) starts from its
// first entry kept, whose Prev anchors it; Report.Pruned says where. The
// prune must then be on record: an audit.prune entry in the log must name
// exactly that anchor (seq and hash), or the report is broken at the first
// entry kept — rows deleted behind the server's back. Heads before the
// anchor are not checked here (they are the segments' business,
// auditcheck.VerifySegments).
func VerifyStore(ctx context.Context, s store.Store, heads ...Head) (Report, error) {
	r, _, err := verifyFrom(ctx, s, 0, heads)
	return r, err
}

// VerifySince checks the log from h on: that h's entry is still there,
// unchanged, and that every later entry chains on from it. It reads only
// those entries, so that a notary can sign the next head without rereading
// the log; a nil h checks the whole log. It returns the report (Entries
// counts from the log's start) and, when the log is intact and not empty,
// its last entry. When h's entry itself was the last one pruned, the first
// entry kept must chain on from h's hash; when later entries were pruned
// too, the log cannot be checked from h (broken, at h.Seq+1).
func VerifySince(ctx context.Context, s store.Store, h *Head) (Report, *eventlog.Entry, error) {
	if h == nil || h.Seq == 0 {
		return verifyFrom(ctx, s, 0, nil)
	}
	return verifyFrom(ctx, s, h.Seq-1, []Head{*h})
}

// verifyFrom checks the entries after seq start (0: the whole log) and heads.
func verifyFrom(ctx context.Context, s store.Store, start uint64, heads []Head) (Report, *eventlog.Entry, error) {
	heads = slices.SortedFunc(slices.Values(heads), func(a, b Head) int { return cmp.Compare(a.Seq, b.Seq) })
	r := Report{Entries: start}
	var last *eventlog.Entry
	var prunes []PruneData // audit.prune entries seen (whole-log checks only)
	var anchorHash []byte  // the Prev of the first entry kept, when pruned
	for {
		page, err := s.ListAudit(ctx, r.Entries, store.MaxListLimit)
		if err != nil {
			return r, nil, err
		}
		if len(page) == 0 {
			break
		}
		r.Read += uint64(len(page))
		if last == nil && page[0].Seq > 1 {
			// The entry before the first one read is not read (start > 0),
			// or was pruned: the first entry's hash, checked against a head
			// or a prune record, commits to its Prev.
			anchor := page[0].Seq - 1
			switch {
			case start == 0:
				r.Pruned, anchorHash = anchor, page[0].Prev
			case anchor > start+1:
				r.Entries = start + 1
				return r.broken(0, fmt.Errorf("%w: the log now starts at seq %d, after seq %d it was checked from: entries were pruned past it (run the retention on one replica only) or deleted", eventlog.ErrBroken, page[0].Seq, start+1)), nil, nil
			case anchor == start+1:
				// Checked from the head at anchor, which was the last entry
				// pruned: its hash (the head's) anchors the first entry kept.
				r.Pruned = anchor
			}
			r.Entries = anchor
			last = &eventlog.Entry{Seq: anchor, Hash: page[0].Prev}
			heads = slices.DeleteFunc(heads, func(h Head) bool { return h.Seq < anchor })
		}
		if i, err := eventlog.VerifyChain(last, page, nil); err != nil {
			return r.broken(i, err), nil, nil
		}
		for len(heads) > 0 && heads[0].Seq <= page[len(page)-1].Seq {
			if i, err := eventlog.VerifyHead(last, page, heads[0].Seq, heads[0].Hash); err != nil {
				return r.broken(i, err), nil, nil
			}
			r.Anchored, heads = heads[0].Seq, heads[1:]
		}
		if start == 0 {
			prunes = appendPrunes(prunes, page)
		}
		r.Entries += uint64(len(page))
		last = &page[len(page)-1]
	}
	if len(heads) > 0 {
		h := heads[len(heads)-1].Seq
		return r.broken(0, fmt.Errorf("%w: the log ends before seq %d, which a checkpoint holds: entries were cut from its end", eventlog.ErrBroken, h)), nil, nil
	}
	if start == 0 && r.Pruned > 0 && !slices.ContainsFunc(prunes, func(p PruneData) bool { return p.matches(r.Pruned, anchorHash) }) {
		r.Entries = r.Pruned
		return r.broken(0, fmt.Errorf("%w at seq %d: the log starts after seq %d but no audit.prune entry records pruning exactly that far: entries were deleted behind the server's back", eventlog.ErrBroken, r.Pruned+1, r.Pruned)), nil, nil
	}
	r.OK = true
	return r, last, nil
}

// PruneData is the data of an audit.prune entry: the range deleted, the
// hash of its last entry (hex) and the segment file that holds them.
type PruneData struct {
	From    uint64 `json:"from"`
	Through uint64 `json:"through"`
	Hash    string `json:"hash"`
	Segment string `json:"segment"`
}

// appendPrunes adds the prune records of page's audit.prune entries.
func appendPrunes(out []PruneData, page []eventlog.Entry) []PruneData {
	for _, e := range page {
		var p PruneData
		if e.Kind == Prune && json.Unmarshal(e.Data, &p) == nil {
			out = append(out, p)
		}
	}
	return out
}

// matches reports whether p pruned exactly through the anchor seq with hash hash.
func (p PruneData) matches(seq uint64, hash []byte) bool {
	h, err := hex.DecodeString(p.Hash)
	return err == nil && p.Through == seq && subtle.ConstantTimeCompare(h, hash) == 1
}

// broken reports the problem err at index i of the page after r.Entries.
func (r Report) broken(i int, err error) Report {
	r.BrokenAt = r.Entries + uint64(i) + 1
	r.Problem = err.Error()
	return r
}

// List returns up to limit entries with Seq > after, in order.
func (l *Log) List(ctx context.Context, after uint64, limit int) ([]eventlog.Entry, error) {
	return l.Store.ListAudit(ctx, after, limit)
}
