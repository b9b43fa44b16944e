package auditcheck

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// Errors of an Archive callers branch on.
var (
	// ErrNoCheckpoint: no signed checkpoint at or before the seq asked
	// for, so nothing can be exported up to it yet.
	ErrNoCheckpoint = errors.New("auditcheck: no signed checkpoint to end the export at")
	// ErrNotExported: a prune was refused because the entries it would
	// delete are not in a segment file that verifies.
	ErrNotExported = errors.New("auditcheck: the entries are not exported")
)

// RetentionActor is the actor of the audit entries of scheduled retention.
const RetentionActor = "retention"

// Archive moves the oldest audit entries out of the database into signed
// segment files in Dir (a local directory or mounted object storage), and
// prunes them from the database once they are verified back from the file:
//
//   - [Archive.Export] writes the entries not exported yet, up to a signed
//     checkpoint, into segments of at most SegmentEntries entries, each
//     written to a temporary file, synced and linked into place (never
//     overwriting), each recorded (audit.export).
//   - [Archive.Prune] deletes whole segments' worth of entries from the
//     database, each after reading its file back and checking it (signature,
//     SHA-256, chain, link to the entries kept), each in one transaction with
//     its audit.prune entry. It refuses ([ErrNotExported]) to delete what no
//     verified segment holds.
//   - [Archive.Retain] is the retention policy (`outpost serve
//     --audit-retain`): it marks the head with a checkpoint, then exports and
//     prunes the entries older than the retention that a checkpoint covers.
//
// A crash between export and prune leaves the entries in both places; the
// next run prunes them. Run it on one replica only: another replica's notary
// cannot chain on from a checkpoint whose later entries were pruned.
// An Archive is safe for concurrent use; its operations run one at a time.
type Archive struct {
	// Notary provides the store, the signing key (the artifact key that
	// signs checkpoints), the audit log and the clock.
	Notary *Notary
	Dir    string
	// CheckpointDir, when set, is searched for checkpoints to end an export
	// at, besides Dir (where Retain keeps its own) and the notary's latest.
	CheckpointDir string
	// SegmentEntries is the largest segment; 0 is DefaultSegmentEntries.
	SegmentEntries int

	mu sync.Mutex
}

// ExportResult says what an export wrote.
type ExportResult struct {
	Files []string `json:"files"`
	// SHA256 is each whole file's SHA-256 (hex), as in its audit.export
	// entry ("file_sha256"; its "sha256" is the manifest's, of the entries).
	SHA256   []string `json:"sha256"`
	From     uint64   `json:"from,omitempty"`
	To       uint64   `json:"to,omitempty"`
	Entries  uint64   `json:"entries"`
	Anchored uint64   `json:"checkpoint,omitempty"` // the seq of the checkpoint the export ends at
}

// PruneLimit bounds a prune: only segments wholly before Before (when not
// 0) and whose last entry is older than OlderThan (when not 0) go. One of
// them must be set.
type PruneLimit struct {
	Before    uint64
	OlderThan time.Duration
}

// PruneResult says what a prune deleted.
type PruneResult struct {
	Segments int    `json:"segments"`
	Entries  uint64 `json:"entries"`
	From     uint64 `json:"from,omitempty"`
	Through  uint64 `json:"through,omitempty"`
}

func (a *Archive) now() time.Time { return clock.Or(a.Notary.Now)() }

func (a *Archive) ring() artifact.Keys { return artifact.Keys{a.Notary.Signer.Public} }

// Export writes the entries not exported yet (after the last segment in
// Dir, or from the database's first entry) up to a signed checkpoint: the
// newest one at or before through, or when through is 0 a new checkpoint of
// the head. The checkpoint's entry must still be in the log exactly as
// signed, and every entry exported must chain on to it; otherwise it
// returns an error wrapping ErrBroken and leaves no new file. It returns
// ErrNoCheckpoint when no checkpoint fits, and an empty result when
// everything up to the checkpoint is exported already.
func (a *Archive) Export(ctx context.Context, actor string, through uint64) (ExportResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.export(ctx, actor, through)
}

func (a *Archive) export(ctx context.Context, actor string, through uint64) (ExportResult, error) {
	cp, err := a.cutPoint(ctx, through)
	if err != nil {
		return ExportResult{}, err
	}
	var from uint64
	var prev []byte
	segs, err := listSegments(a.Dir)
	if err != nil {
		return ExportResult{}, err
	}
	if len(segs) > 0 {
		last, err := openSegment(filepath.Join(a.Dir, segs[len(segs)-1].name), a.ring(), nil)
		if err != nil {
			return ExportResult{}, fmt.Errorf("the last segment in %s does not verify, so the export cannot chain on from it (move it aside and look): %w", a.Dir, err)
		}
		from, prev = last.To+1, last.Last
	} else {
		first, ok, err := entryAt(ctx, a.Notary.Store, 1, false)
		if err != nil || !ok {
			return ExportResult{}, err
		}
		from, prev = first.Seq, first.Prev
	}
	res := ExportResult{Anchored: cp.Seq}
	if cp.Seq < from {
		return res, nil
	}
	r := &chainReader{ctx: ctx, st: a.Notary.Store, last: &eventlog.Entry{Seq: from - 1, Hash: prev}}
	per := uint64(a.SegmentEntries)
	if per == 0 || per > MaxSegmentEntries {
		per = DefaultSegmentEntries
	}
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return ExportResult{}, err
	}
	var written []Manifest
	for lo := from; lo <= cp.Seq; {
		hi := min(lo+per-1, cp.Seq)
		name := SegmentName(lo, hi)
		var m Manifest
		var fileSum []byte
		err := datadir.WriteFileAtomicNewFunc(filepath.Join(a.Dir, name), 0o600, func(w io.Writer) error {
			sw := newSegmentWriter(w)
			for seq := lo; seq <= hi; seq++ {
				e, err := r.next()
				if err != nil {
					return err
				}
				if seq == cp.Seq && !hashEqual(e.Hash, cp.Hash) {
					return fmt.Errorf("%w at seq %d: the log's entry differs from the checkpoint it is exported up to; nothing more was exported", ErrBroken, seq)
				}
				if err := sw.add(e); err != nil {
					return err
				}
			}
			var err error
			m, err = sw.finish(a.Notary.Signer, a.now())
			fileSum = sw.fileSum.Sum(nil)
			return err
		})
		if err != nil {
			a.removeFiles(res.Files)
			return ExportResult{}, fmt.Errorf("exporting audit entries %d..%d to %s: %w", lo, hi, name, err)
		}
		res.Files = append(res.Files, name)
		written = append(written, m)
		res.SHA256 = append(res.SHA256, hex.EncodeToString(fileSum))
		lo = hi + 1
	}
	// Recorded once every file is in place: a failed export leaves no file and no record.
	for i, m := range written {
		data := map[string]any{"from": m.From, "to": m.To, "count": m.Count, "file": res.Files[i],
			"sha256": hex.EncodeToString(m.SHA256), "file_sha256": res.SHA256[i], "checkpoint": cp.Seq}
		if err := a.Notary.Audit.Record(ctx, audit.Export, actor, "", data); err != nil {
			return res, err
		}
		res.Entries += m.Count
	}
	res.From, res.To = from, cp.Seq
	a.dropMarks(cp.Seq)
	return res, nil
}

func (a *Archive) removeFiles(names []string) {
	for _, n := range names {
		os.Remove(filepath.Join(a.Dir, n))
	}
}

// cutPoint is the checkpoint an export ends at (see Export).
func (a *Archive) cutPoint(ctx context.Context, through uint64) (Signed, error) {
	if through == 0 {
		return a.Notary.Checkpoint(ctx)
	}
	var cands []Signed
	if cp, ok := a.Notary.Latest(); ok {
		cands = append(cands, cp)
	}
	for _, dir := range []string{a.Dir, a.CheckpointDir} {
		cps, err := readCheckpoints(dir, a.ring())
		if err != nil {
			return Signed{}, err
		}
		cands = append(cands, cps...)
	}
	var best *Signed
	for i, c := range cands {
		if c.Seq <= through && (best == nil || c.Seq > best.Seq) {
			best = &cands[i]
		}
	}
	if best == nil {
		return Signed{}, fmt.Errorf("%w: none at or before seq %d (checkpoints are taken every --audit-checkpoint-every, or with 'outpost admin audit checkpoint')", ErrNoCheckpoint, through)
	}
	e, ok, err := entryAt(ctx, a.Notary.Store, best.Seq, true)
	switch {
	case err != nil:
		return Signed{}, err
	case ok && !hashEqual(e.Hash, best.Hash):
		return Signed{}, fmt.Errorf("%w at seq %d: the log's entry differs from the signed checkpoint: it was rewritten; nothing was exported (run 'outpost audit verify')", ErrBroken, best.Seq)
	}
	return *best, nil // !ok: pruned already, so exported already
}

// Mark has the notary check the log since its last checkpoint and sign the
// head, and keeps that checkpoint in Dir, where a later export can end at
// it. It returns ErrEmpty for an empty log.
func (a *Archive) Mark(ctx context.Context) (Signed, error) {
	cp, err := a.Notary.Checkpoint(ctx)
	if err != nil {
		return Signed{}, err
	}
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return Signed{}, err
	}
	if err := datadir.WriteFileAtomicNew(filepath.Join(a.Dir, FileName(cp.Seq)), cp.Bytes, 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return Signed{}, err
	}
	return cp, nil
}

// dropMarks removes Dir's checkpoints before seq: every export from now on
// starts after seq.
func (a *Archive) dropMarks(seq uint64) {
	names, _ := checkpointNames(a.Dir)
	for _, n := range names {
		if s, ok := parseCheckpointName(n); ok && s < seq {
			os.Remove(filepath.Join(a.Dir, n))
		}
	}
}

// Prune deletes from the database the entries held by segments in Dir,
// segment by segment from the database's first entry, as far as lim allows
// and the segments reach.
// Each segment is read back and checked first (CheckSegment with the
// notary's key, its file name, its link to the first entry kept), and
// deleted in one transaction with its audit.prune entry, on the condition
// that its last entry is still in the database with the same hash. It
// returns ErrNotExported when the first entry lim would delete is in no
// segment (so nothing at all can be pruned), and an error wrapping ErrSegment or ErrBroken when a segment
// does not verify or link; what was pruned before that stays pruned.
func (a *Archive) Prune(ctx context.Context, actor string, lim PruneLimit) (PruneResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.prune(ctx, actor, lim)
}

func (a *Archive) prune(ctx context.Context, actor string, lim PruneLimit) (PruneResult, error) {
	if lim.Before == 0 && lim.OlderThan <= 0 {
		return PruneResult{}, errors.New("auditcheck: a prune needs a seq or an age to stop at")
	}
	ap, ok := a.Notary.Store.(store.AuditPruner)
	if !ok {
		return PruneResult{}, errors.New("auditcheck: this store cannot prune its audit log")
	}
	var cutoff time.Time
	if lim.OlderThan > 0 {
		cutoff = a.now().Add(-lim.OlderThan)
	}
	segs, err := listSegments(a.Dir)
	if err != nil {
		return PruneResult{}, err
	}
	var res PruneResult
	for {
		first, ok, err := entryAt(ctx, a.Notary.Store, 1, false)
		if err != nil || !ok {
			return res, err
		}
		if lim.Before != 0 && first.Seq >= lim.Before {
			return res, nil
		}
		i := slices.IndexFunc(segs, func(s segmentFile) bool { return s.from <= first.Seq && first.Seq <= s.to })
		if i < 0 {
			if res.Segments > 0 || (!cutoff.IsZero() && !first.Time.Before(cutoff)) {
				return res, nil // the rest is not exported yet, or too young
			}
			return res, fmt.Errorf("%w: entry %d, the first in the database, is in no segment of %s: export it first ('outpost audit export'); nothing more was pruned", ErrNotExported, first.Seq, a.Dir)
		}
		sf := segs[i]
		if lim.Before != 0 && sf.to >= lim.Before {
			return res, nil
		}
		var anchor []byte // the segment's hash of the entry before first
		m, err := openSegment(filepath.Join(a.Dir, sf.name), a.ring(), func(e eventlog.Entry) error {
			if e.Seq == first.Seq-1 {
				anchor = e.Hash
			}
			return nil
		})
		switch {
		case err != nil:
			return res, fmt.Errorf("%w: %s does not verify, so its entries stay in the database: %w", ErrNotExported, sf.name, err)
		case first.Seq == m.From:
			anchor = m.Prev
		}
		if !hashEqual(anchor, first.Prev) {
			return res, fmt.Errorf("%w at seq %d: the database's first entry does not chain on from segment %s; nothing more was pruned", ErrBroken, first.Seq, sf.name)
		}
		if !cutoff.IsZero() && !m.LastTime.Before(cutoff) {
			return res, nil
		}
		data := audit.PruneData{From: first.Seq, Through: m.To, Hash: hex.EncodeToString(m.Last), Segment: sf.name}
		if _, err := ap.PruneAudit(ctx, m.To, m.Last, eventlog.Entry{Time: a.now(), Kind: audit.Prune, Actor: actor, Data: pruneJSON(data)}); err != nil {
			return res, err
		}
		if res.Segments == 0 {
			res.From = first.Seq
		}
		res.Segments++
		res.Entries += m.To - first.Seq + 1
		res.Through = m.To
	}
}

// Retain applies the retention policy: entries older than retain (by their
// time) that a checkpoint covers are exported and then pruned. It first
// marks the head (Mark), so that a later run finds a checkpoint within
// reach; the entries of the last retain are never touched.
func (a *Archive) Retain(ctx context.Context, retain time.Duration) (ExportResult, PruneResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	head, err := a.Mark(ctx)
	if errors.Is(err, ErrEmpty) {
		return ExportResult{}, PruneResult{}, nil
	}
	if err != nil {
		return ExportResult{}, PruneResult{}, err
	}
	cut, err := a.lastBefore(ctx, a.now().Add(-retain), head.Seq)
	if err != nil || cut == 0 {
		return ExportResult{}, PruneResult{}, err
	}
	ex, err := a.export(ctx, RetentionActor, cut)
	if errors.Is(err, ErrNoCheckpoint) {
		return ex, PruneResult{}, nil
	}
	if err != nil {
		return ex, PruneResult{}, err
	}
	pr, err := a.prune(ctx, RetentionActor, PruneLimit{Before: cut + 1})
	return ex, pr, err
}

// lastBefore is the seq of the last entry up to head older than t, found
// by bisection (entry times follow their seqs, give or take the clocks of
// replicas); 0 when there is none.
func (a *Archive) lastBefore(ctx context.Context, t time.Time, head uint64) (uint64, error) {
	first, ok, err := entryAt(ctx, a.Notary.Store, 1, false)
	if err != nil || !ok || !first.Time.Before(t) {
		return 0, err
	}
	lo, hi := first.Seq, head // entry lo is older than t
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		e, ok, err := entryAt(ctx, a.Notary.Store, mid, false)
		if err != nil {
			return 0, err
		}
		if ok && e.Time.Before(t) && e.Seq <= hi {
			lo = e.Seq
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// entryAt reads the entry at seq; with exact false, the first entry at or
// after it. ok is false when there is none.
func entryAt(ctx context.Context, s store.Store, seq uint64, exact bool) (eventlog.Entry, bool, error) {
	es, err := s.ListAudit(ctx, seq-1, 1)
	if err != nil || len(es) == 0 || (exact && es[0].Seq != seq) {
		return eventlog.Entry{}, false, err
	}
	return es[0], true, nil
}

// chainReader reads the log in order after last, checking every link.
type chainReader struct {
	ctx  context.Context
	st   store.Store
	last *eventlog.Entry
	buf  []eventlog.Entry
}

func (r *chainReader) next() (eventlog.Entry, error) {
	if len(r.buf) == 0 {
		page, err := r.st.ListAudit(r.ctx, r.last.Seq, store.MaxListLimit)
		if err != nil {
			return eventlog.Entry{}, err
		}
		if len(page) == 0 {
			return eventlog.Entry{}, fmt.Errorf("%w: the log ends at seq %d", ErrBroken, r.last.Seq)
		}
		if _, err := eventlog.VerifyChain(r.last, page, nil); err != nil {
			return eventlog.Entry{}, fmt.Errorf("%w: %w", ErrBroken, err)
		}
		r.buf = page
	}
	e := r.buf[0]
	r.buf, r.last = r.buf[1:], &e
	return e, nil
}

// segmentFile is a segment's file name and the range it claims.
type segmentFile struct {
	name     string
	from, to uint64
}

// listSegments lists dir's segment files in log order; a missing dir has none.
func listSegments(dir string) ([]segmentFile, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []segmentFile
	for _, e := range ents {
		if f, t, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			out = append(out, segmentFile{name: e.Name(), from: f, to: t})
		}
	}
	return out, nil // ReadDir sorts by name, and names sort by range
}

// openSegment checks the segment file path (CheckSegment) and that its
// name states its signed range.
func openSegment(path string, ring artifact.Keyring, visit func(eventlog.Entry) error) (Segment, error) {
	f, err := os.Open(path)
	if err != nil {
		return Segment{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Segment{}, err
	}
	s, err := CheckSegment(f, fi.Size(), ring, visit)
	if err != nil {
		return Segment{}, err
	}
	if from, to, ok := parseSegmentName(filepath.Base(path)); !ok || from != s.From || to != s.To {
		return Segment{}, &segmentErr{Seq: s.From, err: fmt.Errorf("the file is named %s but holds entries %d..%d: it was renamed or swapped with another", filepath.Base(path), s.From, s.To)}
	}
	return s, nil
}

// checkpointNames lists dir's checkpoint files (FileName) in seq order.
func checkpointNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || dir == "" {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if _, ok := parseCheckpointName(e.Name()); ok && e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func parseCheckpointName(name string) (uint64, bool) {
	var seq uint64
	if !strings.HasPrefix(name, filePrefix) || !strings.HasSuffix(name, fileSuffix) {
		return 0, false
	}
	_, err := fmt.Sscanf(strings.TrimSuffix(strings.TrimPrefix(name, filePrefix), fileSuffix), "%d", &seq)
	return seq, err == nil && FileName(seq) == name
}

// readCheckpoints opens dir's checkpoint files; one that does not verify is an error.
func readCheckpoints(dir string, ring artifact.Keyring) ([]Signed, error) {
	names, err := checkpointNames(dir)
	if err != nil {
		return nil, err
	}
	out := make([]Signed, 0, len(names))
	for _, n := range names {
		data, err := datadir.ReadFileLimit(filepath.Join(dir, n), MaxSize)
		if err != nil {
			return nil, err
		}
		s, err := Open(data, ring)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, n), err)
		}
		out = append(out, s)
	}
	return out, nil
}

func hashEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

func pruneJSON(d audit.PruneData) []byte {
	b, _ := json.Marshal(d) // cannot fail: numbers and strings
	return b
}

// MaxDownload bounds a segment file ReadSegment returns (and an API
// client accepts): larger ones are copied from the directory itself.
const MaxDownload = 64 << 20

// ErrNoSegment: no segment file of that name in Dir.
var ErrNoSegment = errors.New("auditcheck: no such audit segment")

// ReadSegment returns the bytes of the segment file name in Dir, as they
// are (the reader checks them). name must be a segment file name
// (SegmentName), nothing else: no path. It returns an error wrapping
// ErrNoSegment when there is none, and one wrapping datadir.ErrTooLarge
// over MaxDownload.
func (a *Archive) ReadSegment(name string) ([]byte, error) {
	if _, _, ok := parseSegmentName(name); !ok {
		return nil, fmt.Errorf("%w: %q is not a segment file name (like %s)", ErrNoSegment, name, SegmentName(1, 100))
	}
	b, err := datadir.ReadFileLimit(filepath.Join(a.Dir, name), MaxDownload)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoSegment, name)
	}
	return b, err
}

// ParseAge reads a retention or an age: a whole number of days ("30d") or
// a Go duration ("36h", "90m"). It must be positive.
func ParseAge(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n uint64
		n, err = strconv.ParseUint(days, 10, 16)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not an age: give days like 30d, or a duration like 36h", s)
	}
	return d, nil
}
