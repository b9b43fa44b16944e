// Package eventlog is the one implementation of Outpost's append-only,
// hash-chained logs: the server's audit log, and the signed event logs that
// field devices and sites keep of every offline decision.
//
// Each [Entry] commits to the previous one through Prev, the SHA-256 [Entry.Hash]
// of the entry before it (32 zero bytes for the first). Removing, reordering
// or rewriting any entry breaks every later link, and [VerifyChain] reports
// the first broken one. Device and site logs are also signed: Sig is an
// Ed25519 signature over Hash by the device's own key, so that a log shipped
// back to the server proves which device wrote it.
//
// The package computes and checks; storage belongs to the caller (a table in
// the server, field or site database), which must append in a transaction
// that reads the last entry, so that two writers can never both append
// after the same entry.
package eventlog

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// HashSize is the size of an entry hash.
const HashSize = sha256.Size

// Limits on entry fields, checked by Seal and VerifyChain.
const (
	MaxKindLen    = 64
	MaxSubjectLen = 256
	MaxDataLen    = 16 << 10
)

// Entry is one event.
type Entry struct {
	Seq     uint64          `json:"seq"`
	Time    time.Time       `json:"time"`
	Kind    string          `json:"kind"`              // e.g. "verify.ok", "verify.fail", "wipe"
	Actor   string          `json:"actor,omitempty"`   // who acted: API client, device, admin
	Subject string          `json:"subject,omitempty"` // what it concerns: user, token, technician
	Data    json.RawMessage `json:"data,omitempty"`    // details; never a secret
	Prev    []byte          `json:"prev"`
	Hash    []byte          `json:"hash"`
	Sig     []byte          `json:"sig,omitempty"`
}

// Errors callers branch on.
var (
	// ErrBroken means the chain does not verify; the error names the first bad entry.
	ErrBroken = errors.New("eventlog: chain broken")
)

// Genesis is the Prev of the first entry.
var Genesis = make([]byte, HashSize)

// digest is SHA-256 over a length-prefixed encoding of every field but Hash
// and Sig. Data enters in its canonical form (see canonicalData), so that an
// entry keeps its hash through any JSON encoder; e.Data must be valid JSON.
func digest(e *Entry) []byte {
	data, _ := canonicalData(e.Data)
	h := sha256.New()
	var b [8]byte
	h.Write([]byte("outpost-eventlog-v1"))
	binary.BigEndian.PutUint64(b[:], e.Seq)
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(e.Time.UTC().UnixNano()))
	h.Write(b[:])
	for _, f := range [][]byte{[]byte(e.Kind), []byte(e.Actor), []byte(e.Subject), data, e.Prev} {
		binary.BigEndian.PutUint64(b[:], uint64(len(f)))
		h.Write(b[:])
		h.Write(f)
	}
	return h.Sum(nil)
}

// canonicalData is the form json.Marshal gives a json.RawMessage: compact,
// with <, >, &, U+2028 and U+2029 escaped. Marshalling an entry (indented or
// not, HTML-escaped or not) and decoding it again leaves this form unchanged,
// so the hash survives every store and wire format; the forms it folds
// together are the same JSON value.
func canonicalData(d []byte) ([]byte, error) {
	if len(d) == 0 {
		return nil, nil
	}
	var c, h bytes.Buffer
	if err := json.Compact(&c, d); err != nil {
		return nil, err
	}
	json.HTMLEscape(&h, c.Bytes())
	return h.Bytes(), nil
}

// timeOK reports whether t is within the years 1678..2262 that a signed
// 64-bit count of nanoseconds (what the hash covers) represents exactly.
// Outside that range two times would share a hash.
func timeOK(t time.Time) bool { return time.Unix(0, t.UnixNano()).Equal(t) }

// fieldsOK checks the bounds and encodings of the fields Next and VerifyChain share.
func fieldsOK(e *Entry) error {
	if len(e.Kind) == 0 || len(e.Kind) > MaxKindLen || len(e.Subject) > MaxSubjectLen || len(e.Actor) > MaxSubjectLen || len(e.Data) > MaxDataLen {
		return fmt.Errorf("fields out of bounds (kind 1..%d, subject/actor ..%d, data ..%d bytes)", MaxKindLen, MaxSubjectLen, MaxDataLen)
	}
	// JSON would replace invalid UTF-8, changing the hash in transit.
	if !utf8.ValidString(e.Kind) || !utf8.ValidString(e.Actor) || !utf8.ValidString(e.Subject) {
		return errors.New("kind, actor or subject is not valid UTF-8")
	}
	if len(e.Data) > 0 && !json.Valid(e.Data) {
		return errors.New("data is not valid JSON")
	}
	if !timeOK(e.Time) {
		return fmt.Errorf("time %s is outside the years 1678..2262", e.Time.UTC().Format(time.RFC3339))
	}
	return nil
}

// Next fills in e.Seq, e.Prev and e.Hash to follow prev (nil for the first
// entry), signs it with key when key is not nil, and returns it. Time must be
// set, from the caller's clock (a zero Time is an error); it is truncated to
// microseconds so that every database stores it exactly. Data is stored in canonical JSON form (compact, HTML
// characters escaped), which json.Marshal leaves unchanged.
func Next(prev *Entry, e Entry, key ed25519.PrivateKey) (Entry, error) {
	if e.Time.IsZero() {
		return Entry{}, errors.New("eventlog: the entry has no time (the caller's clock sets it)")
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	if err := fieldsOK(&e); err != nil {
		return Entry{}, fmt.Errorf("eventlog: %w", err)
	}
	data, err := canonicalData(e.Data)
	if err != nil {
		return Entry{}, fmt.Errorf("eventlog: data: %w", err)
	}
	if len(data) > MaxDataLen {
		return Entry{}, fmt.Errorf("eventlog: data is %d bytes once its HTML characters are escaped, over %d", len(data), MaxDataLen)
	}
	e.Data = data
	if prev == nil {
		e.Seq, e.Prev = 1, bytes.Clone(Genesis)
	} else {
		e.Seq, e.Prev = prev.Seq+1, bytes.Clone(prev.Hash)
	}
	e.Hash = digest(&e)
	e.Sig = nil
	if key != nil {
		e.Sig = ed25519.Sign(key, e.Hash)
	}
	return e, nil
}

// VerifyChain checks that entries follow after (nil when entries start at the
// first entry of the log): consecutive Seq, each Prev equal to the previous
// Hash, each Hash recomputed, and — when pub is not nil — each signature. It
// returns the index of the first bad entry with an error wrapping ErrBroken,
// or -1 and nil. A pub of the wrong length returns -1 and an error that does
// not wrap ErrBroken.
//
// Entries cut from the end of a log leave a valid chain; [VerifyHead] catches
// that against a checkpoint the verifier already holds. An unsigned chain
// (pub nil) can be rewritten wholesale by anyone who recomputes every hash:
// only signatures, or a head held elsewhere, prevent that.
func VerifyChain(after *Entry, entries []Entry, pub ed25519.PublicKey) (int, error) {
	if pub != nil && len(pub) != ed25519.PublicKeySize {
		return -1, fmt.Errorf("eventlog: device public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	prevHash, prevSeq := Genesis, uint64(0)
	if after != nil {
		prevHash, prevSeq = after.Hash, after.Seq
	}
	for i := range entries {
		e := &entries[i]
		switch {
		case e.Seq != prevSeq+1:
			return i, fmt.Errorf("%w at seq %d: expected seq %d (an entry is missing or out of order)", ErrBroken, e.Seq, prevSeq+1)
		case subtle.ConstantTimeCompare(e.Prev, prevHash) != 1:
			return i, fmt.Errorf("%w at seq %d: prev does not match the hash of entry %d (an entry was removed or rewritten)", ErrBroken, e.Seq, prevSeq)
		case fieldsOK(e) != nil:
			return i, fmt.Errorf("%w at seq %d: %v", ErrBroken, e.Seq, fieldsOK(e))
		case subtle.ConstantTimeCompare(digest(e), e.Hash) != 1:
			return i, fmt.Errorf("%w at seq %d: content does not match its hash (the entry was altered)", ErrBroken, e.Seq)
		case pub != nil && (len(e.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, e.Hash, e.Sig)):
			return i, fmt.Errorf("%w at seq %d: signature does not verify with the device key", ErrBroken, e.Seq)
		}
		prevHash, prevSeq = e.Hash, e.Seq
	}
	return -1, nil
}

// VerifyHead checks that entries (after, as given to VerifyChain) still hold
// the checkpoint headSeq/headHash: the seq and hash of an entry the verifier
// saw in this log before, e.g. at the last sync. It catches what VerifyChain
// cannot, a log cut short at its end, and returns the index at which the
// checkpoint's entry is missing (len(entries) when the log ends too early) or
// differs, with an error wrapping ErrBroken; -1 and nil when it is there or
// lies before entries (at after, it is compared with after's hash).
func VerifyHead(after *Entry, entries []Entry, headSeq uint64, headHash []byte) (int, error) {
	first := uint64(1)
	if after != nil {
		first = after.Seq + 1
		if headSeq == after.Seq {
			if subtle.ConstantTimeCompare(after.Hash, headHash) != 1 {
				return 0, fmt.Errorf("%w at seq %d: the log's entry differs from the checkpoint", ErrBroken, headSeq)
			}
			return -1, nil
		}
	}
	if headSeq < first {
		return -1, nil
	}
	i := headSeq - first
	if i >= uint64(len(entries)) {
		last := first - 1
		if len(entries) > 0 {
			last = entries[len(entries)-1].Seq
		}
		return len(entries), fmt.Errorf("%w: the log ends at seq %d but seq %d was seen before: entries were cut from its end", ErrBroken, last, headSeq)
	}
	if e := &entries[i]; e.Seq != headSeq || subtle.ConstantTimeCompare(e.Hash, headHash) != 1 {
		return int(i), fmt.Errorf("%w at seq %d: the log's entry differs from the checkpoint (rewritten after it was seen)", ErrBroken, headSeq)
	}
	return -1, nil
}
