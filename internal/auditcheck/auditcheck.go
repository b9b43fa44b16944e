// Package auditcheck anchors the server's audit log: it signs checkpoints of
// the log's head and checks a log against them.
//
// The audit log is a hash chain (internal/eventlog), so altering one entry
// breaks every later link — unless whoever alters it recomputes every later
// hash, which anyone with write access to the database can do, or simply
// deletes the last rows. A [Checkpoint] closes that gap: the seq and hash of
// the entry at the head, signed as an artifact (internal/artifact) of type
// [Type] with the server's artifact signing key, the key field devices pin.
// Kept off the server, it proves what the log held when it was signed: a
// log rewritten at or before that entry, or cut short before it, no longer
// matches.
//
//   - [Notary.Checkpoint] signs the current head; it first checks that the log
//     still holds the last checkpoint it signed and chains on from it, so the
//     server never signs over a rewrite of what it already vouched for.
//     [Notary.Requested] is the same for an admin who asks, audited.
//   - [Exporter] writes checkpoints to a directory on a schedule
//     (`outpost serve --audit-checkpoint-every`).
//   - [Open] verifies a checkpoint file and returns it; [VerifyStore] checks
//     a store's log against checkpoints (`outpost audit verify --checkpoint`).
//
// A checkpoint is evidence, not a credential: it has no useful expiry
// (not-after is a century after signing) and verifiers do not check one.
package auditcheck

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
)

// The artifact header of every checkpoint.
const (
	Type    = "outpost-audit-checkpoint"
	Version = 1
	// Subject binds a checkpoint to the audit log, not to a device or site.
	Subject = "audit-log"
	// MaxSize bounds a checkpoint file; a real one is under 1 KiB.
	MaxSize = 4 << 10
)

// lifetime is a checkpoint's not-after, counted from its signing: evidence does not expire.
const lifetime = 100 * 365 * 24 * time.Hour

// Checkpoint is the signed body: the log's entry at Seq has hash Hash.
type Checkpoint struct {
	Seq  uint64 `json:"seq"`
	Hash []byte `json:"hash"`
	// EntryTime is the time of the entry at Seq.
	EntryTime time.Time `json:"entry_time"`
	// Count is the number of entries up to and including Seq (= Seq: the
	// log numbers its entries from 1 without gaps).
	Count uint64 `json:"count"`
}

// Head is the log entry the checkpoint vouches for.
func (c Checkpoint) Head() audit.Head { return audit.Head{Seq: c.Seq, Hash: c.Hash} }

// Signed is a verified (or freshly signed) checkpoint with its file bytes.
type Signed struct {
	Checkpoint
	Header artifact.Header
	Bytes  []byte
}

// Errors callers branch on.
var (
	// ErrInvalid: the file is not a checkpoint signed by a trusted key, or
	// its body is malformed. It wraps artifact's errors (ErrBadSig, ErrUnknownKey, ...).
	ErrInvalid = errors.New("auditcheck: not a valid audit checkpoint")
	// ErrBroken: the log does not match a checkpoint, or its chain is broken.
	ErrBroken = errors.New("auditcheck: the audit log does not match")
	// ErrEmpty: there is no entry to anchor yet.
	ErrEmpty = errors.New("auditcheck: the audit log is empty")
)

// Sign signs c with s at time now.
func Sign(s *keys.Signer, c Checkpoint, now time.Time) ([]byte, error) {
	h := artifact.Header{Type: Type, Version: Version, Subject: Subject, NotBefore: now, NotAfter: now.Add(lifetime), Serial: c.Seq}
	return artifact.Sign(s, h, c)
}

// Open verifies data (signature by a key of ring, type, size) and then its body.
func Open(data []byte, ring artifact.Keyring) (Signed, error) {
	h, body, err := artifact.Verify(data, ring, artifact.Expect{Type: Type, Subject: Subject, MaxSize: MaxSize})
	if err != nil {
		return Signed{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var c Checkpoint
	if err := artifact.DecodeBody(body, &c); err != nil {
		return Signed{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if h.Version != Version || c.Seq == 0 || c.Count != c.Seq || h.Serial != c.Seq || len(c.Hash) != sha256.Size {
		return Signed{}, fmt.Errorf("%w: version %d, seq %d, count %d, serial %d, %d-byte hash: expected version %d, seq = count = serial > 0, a %d-byte hash",
			ErrInvalid, h.Version, c.Seq, c.Count, h.Serial, len(c.Hash), Version, sha256.Size)
	}
	return Signed{Checkpoint: c, Header: h, Bytes: data}, nil
}

// VerifyStore checks the whole log of s and that it holds every checkpoint.
// The report says where it breaks (audit.Report.BrokenAt) and how far the
// checkpoints reach (Anchored).
func VerifyStore(ctx context.Context, s store.Store, cps ...Checkpoint) (audit.Report, error) {
	heads := make([]audit.Head, len(cps))
	for i, c := range cps {
		heads[i] = c.Head()
	}
	return audit.VerifyStore(ctx, s, heads...)
}

// Notary signs checkpoints of one store's log and remembers the last one it
// signed (or was given with [Notary.Resume]). It is safe for concurrent use.
type Notary struct {
	Store  store.Store
	Signer *keys.Signer
	// Audit records the checkpoints someone asked for ([Notary.Requested]).
	Audit *audit.Log
	// Now is the clock of the checkpoints' signing times; nil means clock.System.
	Now func() time.Time

	mu   sync.Mutex
	last *Signed
}

// Checkpoint checks the log since the last checkpoint (the whole log when
// there is none) and signs its head. When the head has not moved it returns
// the last checkpoint again. It returns an error wrapping ErrBroken, and
// signs nothing, when the log no longer holds the last checkpoint or its
// chain is broken; ErrEmpty when the log has no entry.
func (n *Notary) Checkpoint(ctx context.Context) (Signed, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var since *audit.Head
	if n.last != nil {
		h := n.last.Head()
		since = &h
	}
	rep, head, err := audit.VerifySince(ctx, n.Store, since)
	switch {
	case err != nil:
		return Signed{}, err
	case !rep.OK:
		return Signed{}, fmt.Errorf("%w at seq %d (refusing to sign a checkpoint; run 'outpost audit verify'): %s", ErrBroken, rep.BrokenAt, rep.Problem)
	case head == nil:
		return Signed{}, ErrEmpty
	case n.last != nil && head.Seq == n.last.Seq:
		return *n.last, nil
	}
	return n.sign(*head)
}

// Requested is Checkpoint asked for by actor (an admin, over the API),
// recorded in the audit log (audit.checkpoint, with the seq and hash it
// signed). Scheduled exports call Checkpoint: they are the server's own
// housekeeping, unaudited, so that an idle log does not grow by itself.
func (n *Notary) Requested(ctx context.Context, actor string) (Signed, error) {
	cp, err := n.Checkpoint(ctx)
	if err != nil {
		return Signed{}, err
	}
	data := map[string]any{"seq": cp.Seq, "hash": hex.EncodeToString(cp.Hash), "kid": cp.Header.KeyID}
	if err := n.Audit.Record(ctx, audit.Checkpoint, actor, "", data); err != nil {
		return Signed{}, err
	}
	return cp, nil
}

func (n *Notary) sign(head eventlog.Entry) (Signed, error) {
	c := Checkpoint{Seq: head.Seq, Hash: head.Hash, EntryTime: head.Time.UTC(), Count: head.Seq}
	data, err := Sign(n.Signer, c, clock.Or(n.Now)())
	if err != nil {
		return Signed{}, err
	}
	s, err := Open(data, artifact.Keys{n.Signer.Public})
	if err != nil {
		return Signed{}, err
	}
	n.last = &s
	return s, nil
}

// Latest returns the last checkpoint signed or resumed, if any.
func (n *Notary) Latest() (Signed, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.last == nil {
		return Signed{}, false
	}
	return *n.last, true
}

// Resume makes s (a checkpoint this server signed before, e.g. the newest
// exported file) the one the next Checkpoint must chain on from, unless the
// notary already holds a later one.
func (n *Notary) Resume(s Signed) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.last == nil || s.Seq > n.last.Seq {
		n.last = &s
	}
}
