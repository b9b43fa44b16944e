package auditcheck

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/keys"
)

// Segments: a contiguous range of audit entries exported to a file so that
// it can be pruned from the database (docs/storage.md).
//
// A segment file is JSON lines: one eventlog.Entry per line, in seq order,
// each exactly as json.Marshal writes it, then one last line, the trailer:
// an artifact (internal/artifact) of type [SegmentType] signed with the
// server's artifact key, whose body is a [Manifest] naming the range, the
// hash the first entry chains on from, the last hash, the count and the
// SHA-256 of every byte before the trailer. [CheckSegment] verifies one
// file on its own; [VerifySegments] checks a directory of them and how
// they link to each other and to the database.
const (
	SegmentType    = "outpost-audit-segment"
	SegmentVersion = 1
	// MaxSegmentEntries bounds a segment's entries (an export writes
	// DefaultSegmentEntries per file).
	MaxSegmentEntries = 1 << 20
	// DefaultSegmentEntries is how many entries an Archive writes per file.
	DefaultSegmentEntries = 1 << 16
	// maxEntryLine bounds one entry's line: eventlog's limits (16 KiB of
	// data, 64 + 2×256 bytes of text, escaped at most sixfold) fit easily.
	maxEntryLine = 64 << 10
	// maxTrailer bounds the trailer line.
	maxTrailer = 4 << 10
	// MaxSegmentSize bounds a segment file.
	MaxSegmentSize = MaxSegmentEntries*maxEntryLine + maxTrailer

	segmentPrefix = "audit-segment-"
	segmentSuffix = ".jsonl"
)

// SegmentName is the file name of the segment of entries from..to: both
// zero-padded, so that names sort in log order.
func SegmentName(from, to uint64) string {
	return fmt.Sprintf("%s%020d-%020d%s", segmentPrefix, from, to, segmentSuffix)
}

// parseSegmentName is SegmentName's inverse; ok is false for any other name.
func parseSegmentName(name string) (from, to uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, segmentPrefix)
	if !ok {
		return 0, 0, false
	}
	rest, ok = strings.CutSuffix(rest, segmentSuffix)
	if !ok || len(rest) != 41 || rest[20] != '-' {
		return 0, 0, false
	}
	f, err1 := strconv.ParseUint(rest[:20], 10, 64)
	t, err2 := strconv.ParseUint(rest[21:], 10, 64)
	if err1 != nil || err2 != nil || f == 0 || t < f {
		return 0, 0, false
	}
	return f, t, true
}

// Manifest is the signed body of a segment's trailer.
type Manifest struct {
	From  uint64 `json:"from"`
	To    uint64 `json:"to"`
	Count uint64 `json:"count"` // To-From+1
	// Prev is the hash of entry From-1, which the first entry chains on
	// from (eventlog.Genesis when From is 1); Last is the hash of entry To.
	Prev []byte `json:"prev"`
	Last []byte `json:"last"`
	// FirstTime and LastTime are the times of entries From and To.
	FirstTime time.Time `json:"first_time"`
	LastTime  time.Time `json:"last_time"`
	// Size is the number of bytes before the trailer; SHA256 their hash.
	Size   int64  `json:"size"`
	SHA256 []byte `json:"sha256"`
}

// ErrSegment: a segment file is not a valid segment signed by a trusted
// key, or its entries do not match its manifest. It wraps artifact's errors
// for the trailer (ErrBadSig, ErrUnknownKey, ...) and eventlog.ErrBroken
// for the chain.
var ErrSegment = errors.New("auditcheck: invalid audit segment")

// segmentWriter writes one segment: entries with add, then the trailer with finish.
type segmentWriter struct {
	out  io.Writer // the file, and fileSum
	w    io.Writer // out and sum: the entries
	sum  hash.Hash // of the entries (Manifest.SHA256)
	m    Manifest
	last *eventlog.Entry
	// fileSum is the SHA-256 of the whole file, trailer included.
	fileSum hash.Hash
}

func newSegmentWriter(w io.Writer) *segmentWriter {
	sum, fileSum := sha256.New(), sha256.New()
	out := io.MultiWriter(w, fileSum)
	return &segmentWriter{out: out, w: io.MultiWriter(out, sum), sum: sum, fileSum: fileSum}
}

// add writes e, which must chain on from the previous entry added (the
// caller verified it).
func (s *segmentWriter) add(e eventlog.Entry) error {
	if s.last == nil {
		s.m.From, s.m.Prev, s.m.FirstTime = e.Seq, e.Prev, e.Time.UTC()
	} else if e.Seq != s.last.Seq+1 {
		return fmt.Errorf("auditcheck: segment: entry %d after %d", e.Seq, s.last.Seq)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if len(b) > maxEntryLine {
		return fmt.Errorf("auditcheck: segment: entry %d encodes to %d bytes, over %d", e.Seq, len(b), maxEntryLine)
	}
	n, err := s.w.Write(b)
	s.m.Size += int64(n)
	s.last = &e
	s.m.Count++
	return err
}

// finish signs the manifest and writes the trailer.
func (s *segmentWriter) finish(signer *keys.Signer, now time.Time) (Manifest, error) {
	if s.last == nil {
		return Manifest{}, errors.New("auditcheck: segment: no entry")
	}
	s.m.To, s.m.Last, s.m.LastTime, s.m.SHA256 = s.last.Seq, s.last.Hash, s.last.Time.UTC(), s.sum.Sum(nil)
	h := artifact.Header{Type: SegmentType, Version: SegmentVersion, Subject: Subject, NotBefore: now, NotAfter: now.Add(lifetime), Serial: s.m.From}
	trailer, err := artifact.Sign(signer, h, s.m)
	if err != nil {
		return Manifest{}, err
	}
	if _, err := s.out.Write(trailer); err != nil {
		return Manifest{}, err
	}
	return s.m, nil
}

// Segment is a verified segment's manifest and signature header.
type Segment struct {
	Manifest
	Header artifact.Header
}

// segmentErr wraps err (the seq it concerns, 0 when none) in ErrSegment.
type segmentErr struct {
	Seq uint64
	err error
}

func (e *segmentErr) Error() string {
	if e.Seq == 0 {
		return fmt.Sprintf("%v: %v", ErrSegment, e.err)
	}
	return fmt.Sprintf("%v at seq %d: %v", ErrSegment, e.Seq, e.err)
}
func (e *segmentErr) Unwrap() []error { return []error{ErrSegment, e.err} }

// BrokenSeq is the seq at which err (from CheckSegment or VerifySegments)
// says a segment breaks, or 0.
func BrokenSeq(err error) uint64 {
	var se *segmentErr
	if errors.As(err, &se) {
		return se.Seq
	}
	return 0
}

// CheckSegment verifies the segment file r of size bytes on its own: the
// trailer's signature by a key of ring, then — reading the entries once,
// in bounded memory — that they are exactly the manifest's range, each
// chaining on from the previous (the first from Manifest.Prev), and that
// the bytes hash to Manifest.SHA256. visit, when not nil, sees each entry
// after its link is checked (and may fail the check). Errors wrap
// ErrSegment and name the seq where the file breaks when there is one
// ([BrokenSeq]).
func CheckSegment(r io.ReaderAt, size int64, ring artifact.Keyring, visit func(eventlog.Entry) error) (Segment, error) {
	fail := func(seq uint64, format string, a ...any) (Segment, error) {
		return Segment{}, &segmentErr{Seq: seq, err: fmt.Errorf(format, a...)}
	}
	if size > MaxSegmentSize {
		return fail(0, "%w: %d bytes, the limit is %d", artifact.ErrTooLarge, size, int64(MaxSegmentSize))
	}
	// The trailer is the last line: find the newline before it.
	tail := make([]byte, min(size, maxTrailer+1))
	if _, err := r.ReadAt(tail, size-int64(len(tail))); err != nil && !errors.Is(err, io.EOF) {
		return Segment{}, err
	}
	if len(tail) == 0 || tail[len(tail)-1] != '\n' {
		return fail(0, "the file does not end with a newline: it was truncated")
	}
	nl := bytes.LastIndexByte(tail[:len(tail)-1], '\n')
	if nl < 0 {
		return fail(0, "no entry before the trailer, or a trailer over %d bytes: the file was truncated or is not a segment", maxTrailer)
	}
	trailer := tail[nl+1:]
	h, body, err := artifact.Verify(trailer, ring, artifact.Expect{Type: SegmentType, Subject: Subject, MaxSize: maxTrailer})
	if err != nil {
		return fail(0, "trailer: %w", err)
	}
	var m Manifest
	if err := artifact.DecodeBody(body, &m); err != nil {
		return fail(0, "manifest: %w", err)
	}
	bodySize := size - int64(len(trailer))
	switch {
	case h.Version != SegmentVersion:
		return fail(0, "version %d, this Outpost reads version %d", h.Version, SegmentVersion)
	case m.From == 0 || m.To < m.From || m.Count != m.To-m.From+1 || m.Count > MaxSegmentEntries || h.Serial != m.From:
		return fail(0, "manifest range %d..%d, count %d, serial %d: expected 1 <= from <= to, count = to-from+1 <= %d, serial = from",
			m.From, m.To, m.Count, h.Serial, MaxSegmentEntries)
	case len(m.Prev) != eventlog.HashSize || len(m.Last) != eventlog.HashSize || len(m.SHA256) != sha256.Size:
		return fail(m.From, "manifest hashes are not %d bytes", sha256.Size)
	case m.From == 1 && subtle.ConstantTimeCompare(m.Prev, eventlog.Genesis) != 1:
		return fail(1, "the first segment's prev is not the genesis hash")
	case m.Size != bodySize:
		return fail(m.From, "%d bytes of entries, the manifest says %d: the file was truncated or extended", bodySize, m.Size)
	}
	sum := sha256.New()
	br := bufio.NewReaderSize(io.TeeReader(io.NewSectionReader(r, 0, bodySize), sum), maxEntryLine)
	prev := eventlog.Entry{Seq: m.From - 1, Hash: m.Prev}
	var n uint64
	var first time.Time
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			break
		}
		seq := prev.Seq + 1
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			return fail(seq, "entry line over %d bytes", maxEntryLine)
		case errors.Is(err, io.EOF):
			return fail(seq, "the last entry has no newline")
		case err != nil:
			return Segment{}, err
		}
		if n == m.Count {
			return fail(seq, "more entries than the manifest's %d", m.Count)
		}
		// Every byte is covered by the signed SHA-256 (checked at the end),
		// so a line that decodes to the same entry in another form fails there.
		var e eventlog.Entry
		if err := json.Unmarshal(line, &e); err != nil {
			return fail(seq, "entry is not valid JSON: %v", err)
		}
		if _, err := eventlog.VerifyChain(&prev, []eventlog.Entry{e}, nil); err != nil {
			return fail(seq, "%w", err)
		}
		if visit != nil {
			if err := visit(e); err != nil {
				return fail(seq, "%w", err)
			}
		}
		if n == 0 {
			first = e.Time
		}
		prev = e
		n++
	}
	switch {
	case n != m.Count:
		return fail(prev.Seq+1, "%d entries, the manifest says %d: the file was truncated", n, m.Count)
	case subtle.ConstantTimeCompare(prev.Hash, m.Last) != 1:
		return fail(m.To, "the last entry's hash differs from the manifest's")
	case !first.Equal(m.FirstTime) || !prev.Time.Equal(m.LastTime):
		return fail(m.From, "the entries' times differ from the manifest's")
	case subtle.ConstantTimeCompare(sum.Sum(nil), m.SHA256) != 1:
		return fail(m.From, "the file's SHA-256 differs from the manifest's: its bytes were altered (entries %d..%d)", m.From, m.To)
	}
	return Segment{Manifest: m, Header: h}, nil
}
