package auditcheck

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/keys"
)

// seedSigner is the fixed key the fuzz seeds are signed with.
func seedSigner(t testing.TB) *keys.Signer {
	m, err := keys.MasterFromBytes(bytes.Repeat([]byte{7}, keys.Size))
	if err != nil {
		t.Fatal(err)
	}
	return m.Signer(0)
}

// seedSegment is a segment of n entries from seq 1, signed with seedSigner.
func seedSegment(t testing.TB, n int) []byte {
	var buf bytes.Buffer
	w := newSegmentWriter(&buf)
	var prev *eventlog.Entry
	for i := range n {
		e, err := eventlog.Next(prev, eventlog.Entry{Time: t0, Kind: "user.create", Actor: "api:test", Subject: fmt.Sprintf("u%d", i), Data: []byte(`{"i":1}`)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.add(e); err != nil {
			t.Fatal(err)
		}
		prev = &e
	}
	if _, err := w.finish(seedSigner(t), t0); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestWriteSegmentSeeds rewrites testdata/fuzz/FuzzCheckSegment when
// OUTPOST_WRITE_SEEDS=1: a good segment and one file per way to be wrong.
func TestWriteSegmentSeeds(t *testing.T) {
	if os.Getenv("OUTPOST_WRITE_SEEDS") != "1" {
		t.Skip("set OUTPOST_WRITE_SEEDS=1 to rewrite the seeds")
	}
	good := seedSegment(t, 2)
	flip := bytes.Clone(good)
	flip[30] ^= 1
	other, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	var foreign bytes.Buffer
	w := newSegmentWriter(&foreign)
	e, _ := eventlog.Next(nil, eventlog.Entry{Time: t0, Kind: "user.create"}, nil)
	must(t, w.add(e))
	if _, err := w.finish(other.Signer(0), t0); err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{
		"good_two_entries":   good,
		"good_one_entry":     seedSegment(t, 1),
		"fail_flipped_byte":  flip,
		"fail_truncated":     good[:len(good)-9],
		"fail_no_entries":    good[bytes.IndexByte(good, '\n')+1:][bytes.IndexByte(good[bytes.IndexByte(good, '\n')+1:], '\n')+1:],
		"fail_other_key":     foreign.Bytes(),
		"fail_empty":         nil,
		"fail_trailer_first": append(append([]byte{}, good[bytes.LastIndexByte(good[:len(good)-1], '\n')+1:]...), good[:bytes.LastIndexByte(good[:len(good)-1], '\n')+1]...),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzCheckSegment")
	must(t, os.MkdirAll(dir, 0o755))
	for name, b := range seeds {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte("go test fuzz v1\n[]byte("+strconv.Quote(string(b))+")\n"), 0o644))
	}
}

// FuzzCheckSegment: CheckSegment never panics, every failure wraps
// ErrSegment (or is an I/O error, which a bytes.Reader never gives), and
// what passes is a whole chain of exactly the manifest's range, signed by
// the seeds' key.
func FuzzCheckSegment(f *testing.F) {
	f.Add(seedSegment(f, 3))
	ring := artifact.Keys{seedSigner(f).Public}
	f.Fuzz(func(t *testing.T, data []byte) {
		var seqs []uint64
		s, err := CheckSegment(bytes.NewReader(data), int64(len(data)), ring, func(e eventlog.Entry) error {
			seqs = append(seqs, e.Seq)
			return nil
		})
		if err != nil {
			if !errors.Is(err, ErrSegment) {
				t.Fatalf("error does not wrap ErrSegment: %v", err)
			}
			return
		}
		if uint64(len(seqs)) != s.Count || seqs[0] != s.From || seqs[len(seqs)-1] != s.To || s.Size >= int64(len(data)) {
			t.Fatalf("passed with %d entries %v for manifest %+v", len(seqs), seqs, s.Manifest)
		}
	})
}

// TestSegmentVectors: the checked-in seeds named good_* verify, fail_* do not.
func TestSegmentVectors(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzCheckSegment")
	ents, err := os.ReadDir(dir)
	must(t, err)
	ring := artifact.Keys{seedSigner(t).Public}
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		must(t, err)
		lit, ok := bytes.CutPrefix(bytes.TrimSpace(raw), []byte("go test fuzz v1\n[]byte("))
		data, err := strconv.Unquote(string(bytes.TrimSuffix(lit, []byte(")"))))
		if !ok || err != nil {
			t.Fatalf("%s: not a fuzz seed: %v", e.Name(), err)
		}
		_, err = CheckSegment(bytes.NewReader([]byte(data)), int64(len(data)), ring, nil)
		if good := bytes.HasPrefix([]byte(e.Name()), []byte("good_")); good != (err == nil) {
			t.Errorf("%s: CheckSegment = %v", e.Name(), err)
		}
	}
}
