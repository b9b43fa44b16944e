// Package fieldsync is the server side of sync with field devices
// (docs/sync.md): the device registry, and the reconciliation of what a
// device uploads with what the server knows, in both directions.
//
//	svc := &fieldsync.Service{Store: st, Sync: st.(store.SyncStore), Audit: al, Signer: signer,
//		Refill: issuer.Refill} // issuer: the server's *issuance.Service
//	res, err := svc.Receive(ctx, uploadBytes, "http")  // res.Signed is the answer for the device
//
// [Service.Receive] takes a device's signed upload (syncproto), from HTTP or
// from an air-gapped file alike, and:
//
//  1. verifies it before using any field: size, the signature by a
//     registered device's key (the key id names the device), the device not
//     revoked, the validity window, the body's bounds;
//  2. verifies the log entries it carries: consecutive, each linked to the
//     previous one's hash and signed by the device (in parallel on all cores);
//  3. in ONE store transaction, with the device's row locked: refuses a
//     replayed upload (serial not above the last applied, unless the very
//     same bytes), a log that does not start where the server's copy ends
//     (gap), that differs from the entry the server acknowledged (rewrite)
//     or is shorter than it (truncation), and a reported last-used counter
//     below one seen before — each refusal recorded as an incident in the
//     audit log, and nothing else applied; otherwise it records every new
//     offline event in the audit log (exactly once: entries up to the
//     acknowledged one are skipped), raises each token's online state to the
//     maximum of both sides with the replay rule's conditional write, detects
//     a counter accepted both offline and elsewhere (a conflict, recorded
//     with both events; the search is bounded per upload, conflicts.go), and
//     moves the acknowledgement forward. Only what lies within the bundles
//     the server recorded issuing to this device counts ([Service.RecordIssued],
//     issued.go): any other claim is an incident and changes nothing;
//  4. after the commit, decides which tokens earned a refill (their issued
//     bundle ran low, with proof of use) and asks [Service.Refill] for it —
//     the server's issuance service, which checks and audits it like any
//     bundle and records it back here with [Service.RecordIssued]; refills
//     are computed in the background and collected by a later sync when
//     they take longer than RefillWait (refill.go);
//  5. returns the server's state of the device's tokens (last used counter,
//     status), signed with the server's artifact key.
//
// Applying the same upload twice changes nothing: every step is a maximum
// or skips what the acknowledgement already covers.
//
// Incidents are counted through [Service.Incident] (the server's metric)
// and, when the upload was signed by a registered device's key, recorded in
// the audit log. Uploads that do not verify (unknown key, bad signature) are
// only counted: anyone can send those, and recording them would let anyone
// fill the audit log.
package fieldsync

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/clockguard"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

// Service is the server side of sync.
type Service struct {
	Store  store.Store
	Sync   store.SyncStore
	Audit  *audit.Log
	Signer *keys.Signer
	Now    func() time.Time
	// Incident, when set, is called once for each incident and conflict
	// with its kind (the server counts them in a metric).
	Incident func(kind string)
	// Refill issues the bundle a token that ran low earned; nil disables
	// refills. The server's is issuance.Service.Refill: the same PIN,
	// lockout, floor and audit rules as every other bundle. Its error is
	// shown to the device as the reason for no refill.
	Refill func(ctx context.Context, need RefillNeed) ([]byte, error)
	// RefillTimeout bounds one refill's work (0: DefaultRefillTimeout); a
	// server whose bundle pool works a share of the time scales it
	// (issuance.Service.ForShare).
	RefillTimeout time.Duration
	// RefillBelow: refill when fewer than this fraction of a bundle's
	// entries remain (0 means DefaultRefillBelow).
	RefillBelow float64
	// RefillWait is how long a sync answer waits for a refill computing in
	// the background before it says "pending" (0 means DefaultRefillWait);
	// keep it well under the HTTP server's write timeout.
	RefillWait time.Duration
	// Workers verify entry signatures in parallel; 0 means GOMAXPROCS.
	Workers int
	// Entries, when set, reads each applied upload's fresh log entries
	// inside its transaction: the server's is the roster
	// (roster.Service.SyncEntries), which takes the vouches.
	Entries EntrySink
	// Courier, when set, answers a courier device's side of an applied
	// upload (internal/delivery): it applies the upload's receipts and
	// returns the answers and the device's fresh route manifest, which
	// travel in the signed response. dev is as after the upload (its
	// acknowledged log entry moved on). Nil: no manifests, receipts unanswered.
	Courier func(ctx context.Context, dev store.Device, receipts [][]byte) (manifest []byte, acks []courierproto.ReceiptAck, err error)

	jobs refillJobs
	mu   sync.Mutex
	seen map[string]time.Time // incidents recorded lately, to record a replayed payload once
}

// EntrySink reads the fresh entries of an applied upload (those the server
// records for the first time, each exactly once) inside the sync's
// transaction tx, acting only through tx: the transaction may run again.
// It returns audit entries to append with the sync's, and a function to
// call after the commit (nil for none). An error fails the whole sync,
// which the device retries: keep errors for the database's failures, and
// record what the entries claim wrongly as incidents instead.
type EntrySink interface {
	SyncEntries(ctx context.Context, tx store.SyncTx, dev store.Device, fresh []eventlog.Entry, now time.Time) ([]eventlog.Entry, func(), error)
}

// DefaultRefillBelow: a refill is due when under a quarter of a bundle is left.
const DefaultRefillBelow = 0.25

// ResponseValidity is how long a signed response stays applicable.
const ResponseValidity = 30 * 24 * time.Hour

// Incident kinds (audit data "incident", metric label).
const (
	IncidentReplay      = "replay"
	IncidentGap         = "gap"
	IncidentRewritten   = "rewritten"
	IncidentTruncated   = "truncated"
	IncidentBrokenChain = "broken_chain"
	IncidentBackwards   = "state_backwards"
	IncidentRevoked     = "revoked_device"
	IncidentSubject     = "wrong_subject"
	IncidentConflict    = "conflict"
	// Counted only, never recorded (unauthenticated).
	IncidentUnknownKey   = "unknown_device"
	IncidentBadSignature = "bad_signature"
)

// OtherUnrecorded is a conflict's Other when the token's online state shows
// the counter was accepted but no record of that acceptance was found yet.
const OtherUnrecorded = "unrecorded"

// Errors of Receive. Refusals that are incidents wrap one of these; the
// HTTP layer maps each to a status.
var (
	ErrTooLarge      = errors.New("fieldsync: upload too large")
	ErrMalformed     = errors.New("fieldsync: malformed upload")
	ErrUnknownDevice = errors.New("fieldsync: the upload is signed by a key no registered device has")
	ErrBadSignature  = errors.New("fieldsync: the upload's signature does not verify")
	ErrRevoked       = errors.New("fieldsync: the device is revoked")
	ErrNotYetValid   = errors.New("fieldsync: the upload is not valid yet (is the device clock ahead?)")
	ErrExpired       = errors.New("fieldsync: the upload expired: make a new one")
	ErrReplay        = errors.New("fieldsync: replay of an old upload")
	ErrGap           = errors.New("fieldsync: the upload does not start where the server's copy of the device log ends")
	ErrRewritten     = errors.New("fieldsync: the device log differs from the entries the server recorded")
	ErrTruncated     = errors.New("fieldsync: the device log is shorter than what the server recorded")
	ErrBrokenChain   = errors.New("fieldsync: the upload's log entries do not chain or are not signed by the device")
	ErrBackwards     = errors.New("fieldsync: the device reports a last used counter below one it reported or used before")
)

// GapError is ErrGap with the point the server's copy of the log has reached:
// the device should upload again from Acked.
type GapError struct {
	Acked uint64
	Err   error
}

func (e *GapError) Error() string { return e.Err.Error() }
func (e *GapError) Unwrap() error { return e.Err }

// Result is an applied upload.
type Result struct {
	Device   store.Device
	Response syncproto.Response
	// Signed is the response artifact for the device.
	Signed []byte
	// New is the number of log entries recorded by this upload.
	New int
}

// RefillNeed describes a refill the server should issue: a bundle for the
// same token and device as the old one, of the same size.
type RefillNeed struct {
	Device store.Device
	Token  store.Token
	// Old bundle: type, serial, counters First..Last.
	Type        string
	FromSerial  uint64
	First, Last uint64
}

func (s *Service) now() time.Time { return clock.Or(s.Now)() }

func (s *Service) count(kind string) {
	if s.Incident != nil {
		s.Incident(kind)
	}
}

// Receive verifies and applies one upload, as described in the package
// comment. via says where it came from ("http", or "file" with the actor
// that imported it) for the audit log.
func (s *Service) Receive(ctx context.Context, data []byte, via string) (*Result, error) {
	if len(data) > syncproto.MaxUploadSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d: sync more often, or let the client split it", ErrTooLarge, len(data), syncproto.MaxUploadSize)
	}
	now := s.now()
	rg := &store.DeviceKeyring{Ctx: ctx, Store: s.Sync}
	h, body, err := artifact.Verify(data, rg, artifact.Expect{Type: syncproto.UploadType, MaxSize: syncproto.MaxUploadSize})
	switch {
	case rg.Err != nil:
		return nil, rg.Err
	case errors.Is(err, artifact.ErrUnknownKey):
		s.count(IncidentUnknownKey)
		return nil, fmt.Errorf("%w: register it first ('outpost admin device register' or an enrolment code)", ErrUnknownDevice)
	case errors.Is(err, artifact.ErrBadSig):
		s.count(IncidentBadSignature)
		return nil, ErrBadSignature
	case errors.Is(err, artifact.ErrWrongType):
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	dev := rg.Device
	// Signed by the device's key: from here on, refusals are evidence.
	if h.Subject != dev.ID {
		return nil, s.incident(ctx, dev, IncidentSubject, h.Serial, fmt.Errorf("%w: signed by device %s's key but names device %q", ErrMalformed, dev.ID, ident.Clip(h.Subject)), nil)
	}
	if dev.Status != store.DeviceActive {
		return nil, s.incident(ctx, dev, IncidentRevoked, h.Serial, fmt.Errorf("%w: device %s was revoked at %s: it may not sync; initialise a new device",
			ErrRevoked, dev.ID, dev.RevokedAt.Format(time.RFC3339)), nil)
	}
	if h.Version != syncproto.UploadVersion || h.Serial == 0 || h.Serial > syncproto.MaxCounter ||
		!h.NotAfter.After(h.NotBefore) || h.NotAfter.Sub(h.NotBefore) > syncproto.MaxValidity {
		return nil, fmt.Errorf("%w: header (version %d, serial %d, validity %s to %s)", ErrMalformed, h.Version, h.Serial,
			h.NotBefore.Format(time.RFC3339), h.NotAfter.Format(time.RFC3339))
	}
	hash := syncproto.PayloadHash(data)
	replay := h.Serial < dev.UploadSerial || (h.Serial == dev.UploadSerial && !bytes.Equal(hash, dev.UploadHash))
	window := clockguard.Window(now, h.NotBefore, h.NotAfter, syncproto.Skew)
	switch {
	case window == clockguard.Before:
		return nil, fmt.Errorf("%w: valid from %s, the server's clock reads %s", ErrNotYetValid, h.NotBefore.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case replay:
		return nil, s.incident(ctx, dev, IncidentReplay, h.Serial, fmt.Errorf("%w: serial %d, the server applied serial %d already", ErrReplay, h.Serial, dev.UploadSerial), nil)
	case window == clockguard.After:
		return nil, fmt.Errorf("%w: it was valid until %s", ErrExpired, h.NotAfter.Format(time.RFC3339))
	}
	u, err := syncproto.DecodeUpload(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if u.Device != dev.ID {
		return nil, s.incident(ctx, dev, IncidentSubject, h.Serial, fmt.Errorf("%w: the upload body names device %q", ErrMalformed, ident.Clip(u.Device)), nil)
	}
	if i, err := verifyChain(u, dev.PublicKey, s.workers()); err != nil {
		return nil, s.incident(ctx, dev, IncidentBrokenChain, h.Serial, fmt.Errorf("%w: %v", ErrBrokenChain, err),
			map[string]any{"index": i})
	}
	datas, err := parseEvents(&u)
	if err != nil {
		return nil, err
	}
	out, err := s.apply(ctx, dev, h, &u, datas, hash, via, now)
	if err != nil {
		return nil, err
	}
	for range out.conflicts {
		s.count(IncidentConflict)
	}
	for _, kind := range out.incidents {
		s.count(kind)
	}
	if out.refusal != nil {
		s.count(out.incident)
		return nil, out.refusal
	}
	res := &Result{Device: out.device, Response: out.resp, New: out.added}
	s.refill(ctx, out, &u, now)
	if s.Courier != nil {
		dv := out.device
		dv.AckedSeq = max(dv.AckedSeq, out.resp.Acked)
		if out.resp.Manifest, out.resp.Receipts, err = s.Courier(ctx, dv, u.Receipts); err != nil {
			return nil, fmt.Errorf("fieldsync: deliveries of device %s: %w", dev.ID, err)
		}
	}
	res.Response = out.resp
	res.Signed, err = artifact.Sign(s.Signer, artifact.Header{Type: syncproto.ResponseType, Version: syncproto.ResponseVersion,
		Subject: dev.ID, Serial: h.Serial, IssuedAt: now, NotBefore: now.Add(-syncproto.Skew), NotAfter: now.Add(ResponseValidity)}, out.resp)
	return res, err
}

func (s *Service) workers() int {
	if s.Workers > 0 {
		return s.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// verifyChain checks the upload's entries: consecutive from After+1, each
// linked to the one before, hashes right, signed by pub. The first entry's
// link to entry After is checked against the server's copy in the
// transaction. Chunks run in parallel: each chunk starts after the last
// entry of the previous one, whose hash its own chunk verifies, so that all
// chunks passing means the whole chain does. It returns the index of the
// first bad entry.
func verifyChain(u syncproto.Upload, pub ed25519.PublicKey, workers int) (int, error) {
	es := u.Entries
	if len(es) == 0 {
		return -1, nil
	}
	var anchor *eventlog.Entry
	if u.After > 0 {
		anchor = &eventlog.Entry{Seq: u.After, Hash: es[0].Prev}
	}
	n := min(workers, max(1, len(es)/128))
	if n <= 1 {
		return eventlog.VerifyChain(anchor, es, pub)
	}
	size := (len(es) + n - 1) / n
	idx := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for w := range n {
		lo, hi := w*size, min(len(es), (w+1)*size)
		if lo >= hi {
			idx[w] = -1
			continue
		}
		prev := anchor
		if lo > 0 {
			prev = &es[lo-1]
		}
		wg.Go(func() {
			i, err := eventlog.VerifyChain(prev, es[lo:hi], pub)
			if err != nil {
				i += lo
			}
			idx[w], errs[w] = i, err
		})
	}
	wg.Wait()
	for w := range n {
		if errs[w] != nil {
			return idx[w], errs[w]
		}
	}
	return -1, nil
}

// incident records a refusal that happened before the transaction, once
// per device, kind and serial within an hour (a captured payload replayed a
// thousand times is one incident, counted a thousand times), and returns err.
func (s *Service) incident(ctx context.Context, dev store.Device, kind string, serial uint64, err error, extra map[string]any) error {
	s.count(kind)
	key := fmt.Sprintf("%s\x00%s\x00%d", dev.ID, kind, serial)
	now := s.now()
	s.mu.Lock()
	if s.seen == nil || len(s.seen) > 10000 {
		s.seen = map[string]time.Time{}
	}
	last, dup := s.seen[key]
	dup = dup && now.Sub(last) < time.Hour
	if !dup {
		s.seen[key] = now
	}
	s.mu.Unlock()
	if dup {
		return err
	}
	data := map[string]any{"incident": kind, "realm": dev.Realm, "serial": serial, "reason": err.Error()}
	for k, v := range extra {
		data[k] = v
	}
	if rerr := s.Audit.Record(ctx, KindIncident, "device:"+dev.ID, dev.ID, data); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// eventData is what the server reads from a device log entry's data; other
// fields are kept in the audit log but not interpreted.
type eventData struct {
	Realm    string    `json:"realm"`
	Token    string    `json:"token"`
	Serial   *uint64   `json:"serial"`
	Counter  *uint64   `json:"counter"`
	Type     string    `json:"type"`
	First    *uint64   `json:"first"`
	Last     *uint64   `json:"last"`
	NotAfter time.Time `json:"not_after"`
}

// knownKinds are the device log kinds recorded under their own audit kind
// (docs/offline.md, "The device log", and "revoke" from sync).
var knownKinds = []string{"init", "import", "import.refused", "verify.attempt", "verify.ok", "verify.fail",
	"verify.refused", "wipe", "state.advance", "revoke", "vouch"}

// offlineData is the data of an audit entry recording a device log entry:
// which device, its sequence number and hash (so the entry can be matched
// against the device's own log), the device's time, and its data.
type offlineData struct {
	Device      string          `json:"device"`
	Seq         uint64          `json:"seq"`
	Hash        []byte          `json:"hash"`
	Time        time.Time       `json:"time"`
	Kind        string          `json:"kind,omitempty"` // only for kinds this server does not know
	Data        json.RawMessage `json:"data,omitempty"`
	DataOmitted int             `json:"data_omitted,omitempty"`
	// Ignored names the incident that made the server apply nothing of
	// this entry (a claim beyond what was issued to the device).
	Ignored string `json:"ignored,omitempty"`
}

// auditOf is the audit entry recording device entry e; ignored is the
// incident that made it change nothing, if any.
func auditOf(dev store.Device, e *eventlog.Entry, now time.Time, ignored string) eventlog.Entry {
	kind := KindOfflinePrefix + e.Kind
	d := offlineData{Device: dev.ID, Seq: e.Seq, Hash: e.Hash, Time: e.Time, Data: e.Data, Ignored: ignored}
	if !slices.Contains(knownKinds, e.Kind) {
		kind, d.Kind = KindOfflineOther, e.Kind
	}
	if len(e.Data) > eventlog.MaxDataLen-1024 {
		// The device's data does not fit beside the reference: keep the
		// reference (seq and hash identify the entry in the device's log).
		d.Data, d.DataOmitted = nil, len(e.Data)
	}
	raw, _ := json.Marshal(d)
	return eventlog.Entry{Time: now, Kind: kind, Actor: "device:" + dev.ID, Subject: e.Subject, Data: raw}
}

func keyOf(realm, user, token string) syncproto.TokenKey {
	return syncproto.TokenKey{Realm: realm, User: user, Token: token}
}

func cmpKey(a, b syncproto.TokenKey) int {
	if c := strings.Compare(a.Realm, b.Realm); c != 0 {
		return c
	}
	if c := strings.Compare(a.User, b.User); c != 0 {
		return c
	}
	return strings.Compare(a.Token, b.Token)
}
