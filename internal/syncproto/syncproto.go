// Package syncproto is the wire format of sync between a field device and
// the Outpost server (docs/sync.md): the device's signed upload, the server's
// signed response, and the enrolment request a device sends with a one-time
// code. The field client (package offline) writes uploads and reads
// responses; the server (internal/fieldsync) does the reverse. Both directions
// travel over HTTPS (POST /v1/sync) or, for air-gapped sites, as files
// ('outpost field export-sync', 'outpost admin import-sync'): the same bytes,
// the same checks.
//
// # Why signed bodies and not mutual TLS
//
// Every upload is an internal/artifact envelope signed with the device's own
// Ed25519 key (the key that already signs its event log), with the device id
// as subject, an issue time and a short validity window, and a serial that
// grows with every upload. That choice, over client certificates:
//
//   - the same bytes work over HTTP and on a USB stick: a file cannot do a
//     TLS handshake, and the air-gapped path must carry the same proof;
//   - it survives TLS-terminating proxies and needs no certificate authority
//     on the device, no renewal and no revocation list: revoking is one row;
//   - replays are stopped by the serial (the server refuses a serial not
//     above the last one it applied) and by the validity window; a lost
//     response is safe to retry with the very same bytes, which the server
//     recognises by their hash;
//   - the device-onboarding work can reuse it unchanged: a device proves
//     possession of a key by signing an artifact with it.
//
// The server's answer is an artifact signed with the server's artifact key,
// which the device pinned at 'outpost field init', so a device applies state
// only from its own server, whatever the transport.
//
// # Calls
//
// [DecodeUpload] and [DecodeResponse] decode a verified artifact body
// strictly (unknown fields and trailing data refused) and check every bound
// ([Upload.Validate], [Response.Validate]). Signing and verifying the
// envelope is internal/artifact's job; the types and limits are here.
package syncproto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
)

// Artifact types and body versions.
const (
	UploadType      = "sync-upload"
	ResponseType    = "sync-response"
	UploadVersion   = 1
	ResponseVersion = 1
)

// Limits. A decoder checks each of them before using a field.
const (
	// MaxUploadSize bounds an upload file or request body.
	MaxUploadSize = 8 << 20
	// MaxResponseSize bounds a response (it may carry refill bundles).
	MaxResponseSize = 48 << 20
	// MaxEntries bounds the log entries of one upload; a device with more
	// pending sends several uploads in a row.
	MaxEntries = 10000
	// TargetEntryBytes is how many bytes of entries a client puts in one
	// upload at most (the envelope adds a third for base64).
	TargetEntryBytes = 4 << 20
	// MaxTokens bounds the token states of one upload and response.
	MaxTokens = 4096
	// MaxRefills bounds the bundles one response carries.
	MaxRefills = 16
	// MaxCounter bounds counters, steps and sequence numbers (a signed
	// 64-bit column), as in a bundle.
	MaxCounter = bundlefmt.MaxCounter
	// MaxBundleSize bounds one refill bundle.
	MaxBundleSize = bundlefmt.MaxBundleSize
	// MaxFailures bounds a token's failure count in an upload (a device's
	// policy wipes long before).
	MaxFailures = 1 << 20
	// MaxEnrolCodeLen bounds an enrolment code, in bytes.
	MaxEnrolCodeLen = 128
	// MaxReason bounds free-text reasons in a response.
	MaxReason = 512
)

// Validity windows of an upload's signature.
const (
	// OnlineValidity is how long an upload sent over HTTP stays acceptable.
	OnlineValidity = 15 * time.Minute
	// FileValidity is the default for an air-gapped file.
	FileValidity = 14 * 24 * time.Hour
	// MaxValidity bounds any upload's window.
	MaxValidity = 90 * 24 * time.Hour
	// Skew tolerates clocks this far apart.
	Skew = 5 * time.Minute
)

// ErrMalformed wraps every decoding and validation error.
var ErrMalformed = errors.New("syncproto: malformed sync message")

// Upload is what a device sends: its state data block and the entries of its
// log after the last one the server acknowledged.
type Upload struct {
	// Device is the device id (also the artifact's subject).
	Device string `json:"device"`
	// After is the sequence number of the newest log entry the device
	// believes the server holds (0 for none); Entries follow it.
	After uint64 `json:"after"`
	// Entries are the device log's entries After+1, After+2, … in order.
	Entries []eventlog.Entry `json:"entries"`
	// Head is the device log's newest sequence number when the upload was
	// made; Head beyond the last entry means more uploads follow.
	Head uint64 `json:"head"`
	// HeadHash is the hash of entry Head (required when Head > 0): every
	// upload, even one without entries, states the chain head, and the
	// server compares it with the entry it acknowledged, so that a store
	// restored from an older copy, or forked, shows at its next sync.
	HeadHash []byte `json:"head_hash,omitempty"`
	// Tokens is the state of every token the device holds.
	Tokens []TokenState `json:"tokens"`
	// Receipts are a courier device's delivery receipts the server has not
	// answered yet (courierproto: each an artifact signed by the device).
	Receipts [][]byte `json:"receipts,omitempty"`
}

// TokenState is one token's state on the device (OneSpan's state data block).
type TokenState struct {
	Realm string `json:"realm"`
	User  string `json:"user"`
	Token string `json:"token"`
	// LastUsed is the highest counter or step used on the device, -1 for none.
	LastUsed int64 `json:"last_used"`
	Failures int   `json:"failures"`
	Wiped    bool  `json:"wiped,omitempty"`
	// The current bundle, when the device holds one.
	Type      string    `json:"type,omitempty"` // "hotp" or "totp"
	Serial    uint64    `json:"serial,omitempty"`
	First     uint64    `json:"first,omitempty"`
	Last      uint64    `json:"last,omitempty"`
	Remaining int       `json:"remaining"`
	PIN       bool      `json:"pin,omitempty"`
	Secrets   int       `json:"secrets,omitempty"`
	NotAfter  time.Time `json:"not_after,omitzero"`
}

// Key names a token.
func (t TokenState) Key() TokenKey { return TokenKey{t.Realm, t.User, t.Token} }

// TokenKey names a token.
type TokenKey struct {
	Realm string `json:"realm"`
	User  string `json:"user"`
	Token string `json:"token"`
}

func (k TokenKey) String() string { return k.Realm + "/" + k.User + "/" + k.Token }

// Token statuses in a response.
const (
	StatusActive   = "active"
	StatusDisabled = "disabled"
	StatusPending  = "pending"
	// StatusDeleted: the token or its user no longer exists.
	StatusDeleted = "deleted"
	// StatusForeign: the token is not in the device's realm; the server
	// recorded its events but applies nothing to it.
	StatusForeign = "foreign"
)

// Response is the server's answer to an upload.
type Response struct {
	Device string `json:"device"`
	// UploadSerial is the serial of the upload this answers.
	UploadSerial uint64 `json:"upload_serial"`
	// Acked and AckedHash are the newest device log entry the server holds.
	Acked     uint64 `json:"acked"`
	AckedHash []byte `json:"acked_hash,omitempty"`
	// Tokens is the server's state of each token of the upload.
	Tokens []ServerToken `json:"tokens"`
	// Conflicts are codes accepted both here and elsewhere (online or on
	// another device) that this upload revealed. Each is also an incident
	// in the server's audit log.
	Conflicts []Conflict `json:"conflicts,omitempty"`
	// Refills are fresh bundles for tokens whose entries ran low.
	Refills []Refill `json:"refills,omitempty"`
	// NoRefill says why a token that ran low got no refill.
	NoRefill []NoRefill `json:"no_refill,omitempty"`
	// Pending are refills the server is still computing (longer than it
	// may hold the connection): sync again after RetryAfter to collect them.
	Pending []PendingRefill `json:"pending,omitempty"`
	// Ignored are claims of the upload beyond what the server issued to
	// this device (a token, bundle, counter or step it was never given):
	// recorded as incidents, applied nowhere.
	Ignored []IgnoredClaim `json:"ignored,omitempty"`
	// Manifest is the device's route manifest (courierproto: an artifact
	// signed by the server), refreshed at every sync of a courier device.
	Manifest []byte `json:"manifest,omitempty"`
	// Receipts answers the upload's receipts.
	Receipts []courierproto.ReceiptAck `json:"receipts,omitempty"`
}

// ServerToken is a token's online state.
type ServerToken struct {
	TokenKey
	Status string `json:"status"`
	// LastUsed is the highest counter or step accepted anywhere, -1 for none.
	LastUsed int64 `json:"last_used"`
}

// Conflict is one counter accepted twice.
type Conflict struct {
	TokenKey
	Counter uint64 `json:"counter"`
	// DeviceSeq is this device's log entry that accepted it.
	DeviceSeq uint64 `json:"device_seq"`
	// Other is where it was accepted before: "online" or "device:ID".
	Other string `json:"other"`
	// OtherAuditSeq is the audit log entry of that other acceptance.
	OtherAuditSeq uint64 `json:"other_audit_seq"`
}

// Refill carries a bundle file for 'outpost field import'.
type Refill struct {
	TokenKey
	Bundle []byte `json:"bundle"`
}

// NoRefill explains a refill the server did not make.
type NoRefill struct {
	TokenKey
	Reason string `json:"reason"`
}

// PendingRefill is a refill being computed in the background.
type PendingRefill struct {
	TokenKey
	// ID names the refill (the same on every server replica).
	ID string `json:"id"`
	// RetryAfter is how many seconds to wait before syncing again.
	RetryAfter int `json:"retry_after"`
}

// IgnoredClaim is one kind of claim about one token that the server
// ignored, and why.
type IgnoredClaim struct {
	TokenKey
	// Incident is the incident recorded (unissued_token, unissued_bundle, out_of_range).
	Incident string `json:"incident"`
	// Claims counts the ignored log entries and states.
	Claims int    `json:"claims"`
	Reason string `json:"reason"`
}

// MaxRetryAfter bounds a pending refill's RetryAfter, in seconds.
const MaxRetryAfter = 3600

// Enrol is the body of POST /v1/devices/enrol: a device registering its key
// with a one-time enrolment code. Sig proves possession of the private key:
// Ed25519 over [EnrolMessage](Device, PublicKey, Code).
type Enrol struct {
	Device    string `json:"device"`
	PublicKey []byte `json:"public_key"`
	Code      string `json:"code"`
	Sig       []byte `json:"sig"`
}

// EnrolMessage is what an enrolling device signs. The code enters only as
// its SHA-256, so the signature reveals nothing about it.
func EnrolMessage(device string, pub ed25519.PublicKey, code string) []byte {
	h := sha256.Sum256([]byte(code))
	m := []byte("outpost-device-enrol-v1\x00")
	m = append(m, device...)
	m = append(m, 0)
	m = append(m, pub...)
	return append(m, h[:]...)
}

// DecodeUpload decodes a verified upload body strictly and validates it.
func DecodeUpload(body []byte) (Upload, error) {
	var u Upload
	if err := decodeStrict(body, &u); err != nil {
		return Upload{}, err
	}
	return u, u.Validate()
}

// DecodeResponse decodes a verified response body strictly and validates it.
func DecodeResponse(body []byte) (Response, error) {
	var r Response
	if err := decodeStrict(body, &r); err != nil {
		return Response{}, err
	}
	return r, r.Validate()
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the JSON value", ErrMalformed)
	}
	return nil
}

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// checkID checks an id with the one rule for ids (ident.Check).
func checkID(what, v string) error {
	if err := ident.Check(what, v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

// Validate checks every field of u. It does not verify the entries' order,
// chain or signatures: eventlog.VerifyChain does, with the device's key, and
// a signed upload whose entries are missing or reordered is an incident,
// not a mere format error.
func (u *Upload) Validate() error {
	if err := checkID("device", u.Device); err != nil {
		return err
	}
	if u.After > MaxCounter || u.Head > MaxCounter {
		return bad("sequence numbers out of range")
	}
	if len(u.Entries) > MaxEntries {
		return bad("%d log entries, at most %d per upload", len(u.Entries), MaxEntries)
	}
	if u.Head < u.After+uint64(len(u.Entries)) {
		return bad("head %d is before the last entry %d", u.Head, u.After+uint64(len(u.Entries)))
	}
	if (u.Head == 0) != (len(u.HeadHash) == 0) || (u.Head != 0 && len(u.HeadHash) != eventlog.HashSize) {
		return bad("head %d with a %d-byte hash (an upload states its log head's hash)", u.Head, len(u.HeadHash))
	}
	if len(u.Tokens) > MaxTokens {
		return bad("%d token states, at most %d", len(u.Tokens), MaxTokens)
	}
	if len(u.Receipts) > courierproto.MaxReceipts {
		return bad("%d receipts, at most %d per upload", len(u.Receipts), courierproto.MaxReceipts)
	}
	for _, r := range u.Receipts {
		if len(r) == 0 || len(r) > courierproto.MaxReceiptSize {
			return bad("a receipt of %d bytes (1 to %d)", len(r), courierproto.MaxReceiptSize)
		}
	}
	seen := make(map[TokenKey]bool, len(u.Tokens))
	for i := range u.Tokens {
		t := &u.Tokens[i]
		if err := checkKey(t.Key()); err != nil {
			return err
		}
		if seen[t.Key()] {
			return bad("token %s listed twice", t.Key())
		}
		seen[t.Key()] = true
		switch {
		case t.LastUsed < -1:
			return bad("token %s: last used %d", t.Key(), t.LastUsed)
		case t.Failures < 0 || t.Failures > MaxFailures:
			return bad("token %s: %d failures", t.Key(), t.Failures)
		case t.Type != "" && t.Type != "hotp" && t.Type != "totp":
			return bad("token %s: type %q", t.Key(), t.Type)
		case t.Type == "" && (t.Serial != 0 || t.First != 0 || t.Last != 0 || t.Remaining != 0 || t.PIN || t.Secrets != 0):
			return bad("token %s: bundle fields without a bundle type", t.Key())
		case t.Serial > MaxCounter || t.First > MaxCounter || t.Last > MaxCounter || t.Last < t.First:
			return bad("token %s: bundle range %d..%d serial %d", t.Key(), t.First, t.Last, t.Serial)
		case t.Remaining < 0 || t.Remaining > bundlefmt.MaxEntries || t.Secrets < 0 || t.Secrets > bundlefmt.MaxSecrets:
			return bad("token %s: %d remaining entries, %d secrets", t.Key(), t.Remaining, t.Secrets)
		}
	}
	return nil
}

func checkKey(k TokenKey) error {
	if err := checkID("realm", k.Realm); err != nil {
		return err
	}
	if err := checkID("user", k.User); err != nil {
		return err
	}
	return checkID("token", k.Token)
}

// Validate checks every field of r.
func (r *Response) Validate() error {
	if err := checkID("device", r.Device); err != nil {
		return err
	}
	if r.Acked > MaxCounter || r.UploadSerial > MaxCounter {
		return bad("sequence numbers out of range")
	}
	if (r.Acked == 0) != (len(r.AckedHash) == 0) || (r.Acked != 0 && len(r.AckedHash) != eventlog.HashSize) {
		return bad("acknowledged entry %d with a %d-byte hash", r.Acked, len(r.AckedHash))
	}
	if len(r.Tokens) > MaxTokens || len(r.Conflicts) > MaxEntries || len(r.Refills) > MaxRefills || len(r.NoRefill) > MaxTokens || len(r.Pending) > MaxTokens ||
		len(r.Ignored) > 4*MaxTokens {
		return bad("too many tokens, conflicts or refills")
	}
	if len(r.Manifest) > courierproto.MaxManifestSize || len(r.Receipts) > courierproto.MaxReceipts {
		return bad("a manifest of %d bytes, %d receipt answers", len(r.Manifest), len(r.Receipts))
	}
	for i := range r.Receipts {
		if err := r.Receipts[i].Validate(); err != nil {
			return err
		}
	}
	seen := make(map[TokenKey]bool, len(r.Tokens))
	for _, t := range r.Tokens {
		if err := checkKey(t.TokenKey); err != nil {
			return err
		}
		if seen[t.TokenKey] {
			return bad("token %s listed twice", t.TokenKey)
		}
		seen[t.TokenKey] = true
		switch t.Status {
		case StatusActive, StatusDisabled, StatusPending, StatusDeleted, StatusForeign:
		default:
			return bad("token %s: status %q", t.TokenKey, t.Status)
		}
		if t.LastUsed < -1 {
			return bad("token %s: last used %d", t.TokenKey, t.LastUsed)
		}
	}
	for _, c := range r.Conflicts {
		if err := checkKey(c.TokenKey); err != nil {
			return err
		}
		if c.Counter > MaxCounter || len(c.Other) > MaxReason {
			return bad("conflict out of range")
		}
	}
	for _, f := range r.Refills {
		if err := checkKey(f.TokenKey); err != nil {
			return err
		}
		if len(f.Bundle) == 0 || len(f.Bundle) > MaxBundleSize {
			return bad("refill bundle of %d bytes", len(f.Bundle))
		}
	}
	for _, n := range r.NoRefill {
		if err := checkKey(n.TokenKey); err != nil {
			return err
		}
		if len(n.Reason) > MaxReason {
			return bad("reason longer than %d bytes", MaxReason)
		}
	}
	for _, p := range r.Pending {
		if err := checkKey(p.TokenKey); err != nil {
			return err
		}
		if err := checkID("pending refill id", p.ID); err != nil {
			return err
		}
		if p.RetryAfter < 0 || p.RetryAfter > MaxRetryAfter {
			return bad("pending refill: retry after %d s", p.RetryAfter)
		}
	}
	for _, c := range r.Ignored {
		if err := checkKey(c.TokenKey); err != nil {
			return err
		}
		if err := checkID("incident", c.Incident); err != nil {
			return err
		}
		if c.Claims < 0 || c.Claims > MaxEntries+MaxTokens || len(c.Reason) > MaxReason {
			return bad("ignored claim out of range")
		}
	}
	return nil
}

// Validate checks an enrolment request's fields (not its code or signature).
func (e *Enrol) Validate() error {
	if err := checkID("device", e.Device); err != nil {
		return err
	}
	if len(e.PublicKey) != ed25519.PublicKeySize {
		return bad("public key has %d bytes, want %d", len(e.PublicKey), ed25519.PublicKeySize)
	}
	if len(e.Sig) != ed25519.SignatureSize {
		return bad("signature has %d bytes, want %d", len(e.Sig), ed25519.SignatureSize)
	}
	if e.Code == "" || len(e.Code) > MaxEnrolCodeLen {
		return bad("enrolment code must be 1 to %d characters", MaxEnrolCodeLen)
	}
	return nil
}

// PayloadHash is the SHA-256 of an upload's bytes: the server recognises a
// retried upload by it.
func PayloadHash(data []byte) []byte {
	h := sha256.Sum256(data)
	return h[:]
}
