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
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
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

// digest is SHA-256 over a length-prefixed encoding of every field but Hash and Sig.
func digest(e *Entry) []byte {
	h := sha256.New()
	var b [8]byte
	h.Write([]byte("outpost-eventlog-v1"))
	binary.BigEndian.PutUint64(b[:], e.Seq)
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(e.Time.UTC().UnixNano()))
	h.Write(b[:])
	for _, f := range [][]byte{[]byte(e.Kind), []byte(e.Actor), []byte(e.Subject), e.Data, e.Prev} {
		binary.BigEndian.PutUint64(b[:], uint64(len(f)))
		h.Write(b[:])
		h.Write(f)
	}
	return h.Sum(nil)
}

// Next fills in e.Seq, e.Prev and e.Hash to follow prev (nil for the first
// entry), signs it with key when key is not nil, and returns it. Time is
// truncated to microseconds so that every database stores it exactly.
func Next(prev *Entry, e Entry, key ed25519.PrivateKey) (Entry, error) {
	if len(e.Kind) == 0 || len(e.Kind) > MaxKindLen || len(e.Subject) > MaxSubjectLen || len(e.Actor) > MaxSubjectLen || len(e.Data) > MaxDataLen {
		return Entry{}, fmt.Errorf("eventlog: entry fields out of bounds (kind 1..%d, subject/actor ..%d, data ..%d bytes)", MaxKindLen, MaxSubjectLen, MaxDataLen)
	}
	if len(e.Data) > 0 && !json.Valid(e.Data) {
		return Entry{}, errors.New("eventlog: data is not valid JSON")
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	if prev == nil {
		e.Seq, e.Prev = 1, Genesis
	} else {
		e.Seq, e.Prev = prev.Seq+1, prev.Hash
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
// or -1 and nil.
func VerifyChain(after *Entry, entries []Entry, pub ed25519.PublicKey) (int, error) {
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
		case len(e.Kind) == 0 || len(e.Kind) > MaxKindLen || len(e.Subject) > MaxSubjectLen || len(e.Actor) > MaxSubjectLen || len(e.Data) > MaxDataLen:
			return i, fmt.Errorf("%w at seq %d: fields out of bounds", ErrBroken, e.Seq)
		case subtle.ConstantTimeCompare(digest(e), e.Hash) != 1:
			return i, fmt.Errorf("%w at seq %d: content does not match its hash (the entry was altered)", ErrBroken, e.Seq)
		case pub != nil && (len(e.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, e.Hash, e.Sig)):
			return i, fmt.Errorf("%w at seq %d: signature does not verify with the device key", ErrBroken, e.Seq)
		}
		prevHash, prevSeq = e.Hash, e.Seq
	}
	return -1, nil
}
