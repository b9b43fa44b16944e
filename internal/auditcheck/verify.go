package auditcheck

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"sync"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// VerifyFromCheckpoint checks the log incrementally: it trusts the newest of
// cps, provided its entry is still in the log exactly as signed, and reads
// only the entries after it (audit.VerifySince), plus one entry per older
// checkpoint (each must be in the log too). With no checkpoint, or when the
// newest one's entry was pruned from the database already, it checks the
// whole log (VerifyStore). The report's Read says how many entries it read.
func VerifyFromCheckpoint(ctx context.Context, s store.Store, cps ...Checkpoint) (audit.Report, error) {
	if len(cps) == 0 {
		return VerifyStore(ctx, s)
	}
	cps = slices.SortedFunc(slices.Values(cps), func(a, b Checkpoint) int { return cmp.Compare(a.Seq, b.Seq) })
	newest := cps[len(cps)-1]
	first, ok, err := entryAt(ctx, s, 1, false)
	if err != nil {
		return audit.Report{}, err
	}
	if ok && first.Seq-1 > newest.Seq {
		return VerifyStore(ctx, s, cps...)
	}
	var read uint64
	for _, c := range cps[:len(cps)-1] {
		var e eventlog.Entry
		found := true
		switch {
		case ok && c.Seq+1 < first.Seq:
			continue // pruned: the segments hold it
		case ok && c.Seq+1 == first.Seq:
			e = eventlog.Entry{Seq: c.Seq, Hash: first.Prev} // the last entry pruned: the anchor
		default:
			if e, found, err = entryAt(ctx, s, c.Seq, true); err != nil {
				return audit.Report{}, err
			}
			read++
		}
		if !found || !hashEqual(e.Hash, c.Hash) {
			return audit.Report{Entries: c.Seq - 1, BrokenAt: c.Seq, Read: read,
				Problem: fmt.Sprintf("%v at seq %d: the log's entry is missing or differs from the checkpoint (rewritten or cut after it was signed)", eventlog.ErrBroken, c.Seq)}, nil
		}
	}
	h := newest.Head()
	rep, _, err := audit.VerifySince(ctx, s, &h)
	rep.Read += read
	return rep, err
}

// SegmentsReport is the result of VerifySegments.
type SegmentsReport struct {
	Segments int `json:"segments"`
	// From..To is the range the segments hold; Entries their count.
	From    uint64 `json:"from,omitempty"`
	To      uint64 `json:"to,omitempty"`
	Entries uint64 `json:"entries"`
	// Database is the seq of the database's first entry the segments were
	// linked to (0: no database given, or it is empty).
	Database uint64 `json:"database,omitempty"`
	// Checkpoints is how many of the given checkpoints fell in the
	// segments' range and matched.
	Checkpoints int    `json:"checkpoints"`
	OK          bool   `json:"ok"`
	BrokenAt    uint64 `json:"broken_at,omitempty"`
	File        string `json:"file,omitempty"`
	Problem     string `json:"problem,omitempty"`
}

// ErrNoSegments: the directory holds no segment file.
var ErrNoSegments = errors.New("auditcheck: no audit segment in the directory")

// VerifySegments checks the segment files of dir with up to parallel
// workers: each on its own (CheckSegment with ring, and that its name states
// its range), then in order that each chains on from the one before (no
// segment missing, swapped or overlapping) and, when s is not nil, that the
// database's first entry chains on from them (or, when the database still
// holds exported entries, that it holds them unchanged). Each of cps that
// falls in the segments' range must match their entry at its seq. The
// report names the first file and seq at which this fails; the error is
// for failures to read (and ErrNoSegments).
func VerifySegments(ctx context.Context, dir string, ring artifact.Keyring, parallel int, s store.Store, cps ...Checkpoint) (SegmentsReport, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return SegmentsReport{}, err
	}
	if len(segs) == 0 {
		return SegmentsReport{}, fmt.Errorf("%w %s (files named %s)", ErrNoSegments, dir, SegmentName(1, 1))
	}
	var first eventlog.Entry // the database's first entry, whose Prev the segments must end with
	var inDB bool
	if s != nil {
		if first, inDB, err = entryAt(ctx, s, 1, false); err != nil {
			return SegmentsReport{}, err
		}
	}
	want := make(map[uint64][]byte, len(cps))
	for _, c := range cps {
		want[c.Seq] = c.Hash
	}
	type result struct {
		seg     Segment
		err     error
		anchor  []byte // the segment's hash of entry first.Seq-1
		matched int
	}
	results := make([]result, len(segs))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range max(parallel, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				r := &results[i]
				r.seg, r.err = openSegment(filepath.Join(dir, segs[i].name), ring, func(e eventlog.Entry) error {
					if inDB && e.Seq == first.Seq-1 {
						r.anchor = e.Hash
					}
					if h, ok := want[e.Seq]; ok {
						if !hashEqual(h, e.Hash) {
							return fmt.Errorf("%w: the entry differs from the signed checkpoint of seq %d", eventlog.ErrBroken, e.Seq)
						}
						r.matched++
					}
					return nil
				})
			}
		}()
	}
	for i := range segs {
		if ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return SegmentsReport{}, err
	}

	rep := SegmentsReport{Segments: len(segs)}
	broken := func(i int, seq uint64, format string, a ...any) (SegmentsReport, error) {
		rep.BrokenAt, rep.File, rep.Problem = seq, segs[i].name, fmt.Sprintf(format, a...)
		return rep, nil
	}
	var prev *Segment
	for i, r := range results {
		if r.err != nil {
			var pe *fs.PathError
			if errors.As(r.err, &pe) {
				return SegmentsReport{}, r.err
			}
			seq := BrokenSeq(r.err)
			if seq == 0 {
				seq = segs[i].from
			}
			return broken(i, seq, "%v", r.err)
		}
		m := r.seg.Manifest
		switch {
		case prev == nil:
			rep.From = m.From
		case m.From > prev.To+1:
			return broken(i, prev.To+1, "entries %d..%d are in no segment: a segment file is missing", prev.To+1, m.From-1)
		case m.From <= prev.To:
			return broken(i, m.From, "the segment overlaps the one before (which ends at seq %d)", prev.To)
		case !hashEqual(m.Prev, prev.Last):
			return broken(i, m.From, "the segment does not chain on from the one before: one of them was replaced")
		}
		rep.Entries += m.Count
		rep.To = m.To
		rep.Checkpoints += r.matched
		prev = &results[i].seg
	}
	if inDB {
		last := len(segs) - 1
		anchor := first.Seq - 1
		if anchor > rep.To {
			return broken(last, rep.To+1, "entries %d..%d are neither in a segment nor in the database: a segment file is missing", rep.To+1, anchor)
		}
		if anchor >= rep.From-1 { // else the database reaches back before the segments
			h := results[0].seg.Prev
			if anchor > rep.From-1 {
				i := slices.IndexFunc(results, func(r result) bool { return r.anchor != nil })
				if i < 0 {
					return broken(last, anchor, "no segment holds entry %d, which the database's first entry chains on from", anchor)
				}
				h = results[i].anchor
			}
			if !hashEqual(h, first.Prev) {
				return broken(last, first.Seq, "the database's first entry (seq %d) does not chain on from the segments", first.Seq)
			}
		}
		// Exported entries the database still holds must be the same.
		if rep.To >= first.Seq {
			e, ok, err := entryAt(ctx, s, rep.To, true)
			if err != nil {
				return SegmentsReport{}, err
			}
			if !ok || !hashEqual(e.Hash, prev.Last) {
				return broken(last, rep.To, "the database's entry %d differs from the segment's", rep.To)
			}
		}
		rep.Database = first.Seq
	}
	rep.OK = true
	return rep, nil
}
