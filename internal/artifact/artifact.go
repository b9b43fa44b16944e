// Package artifact signs and verifies Outpost's signed artifacts: offline
// bundles, site provisioning packages, revocation lists, sync payloads and
// QR tokens.
//
// Wire form (chosen over COSE_Sign1 to stay within the standard library and
// stay readable with jq; the signature is detached from a byte-exact payload,
// so no canonicalisation is needed):
//
//	{"outpost_artifact":1,"kid":"ed25519:…","payload":"<base64 JSON>","sig":"<base64 Ed25519>"}
//
// The signature covers "outpost-artifact-v1\x00" || kid || "\x00" || payload
// bytes. The payload is a JSON object whose "hdr" member is a [Header]
// (type, version, key id again, not-before, not-after, the identity it is
// bound to) and whose "body" member is the artifact's own content.
//
// [Verify] checks, in this order and before any field of the payload is used:
// size, envelope shape, that the key id is in the caller's [Keyring], the
// signature, then the header (type, key id, validity window, binding). Only
// then does it return the body for decoding.
package artifact

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/outpost-auth/outpost/internal/clockguard"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
)

// Header is the signed metadata every artifact carries.
type Header struct {
	// Type names the artifact: "bundle", "site-package", "revocation-list", ...
	Type string `json:"type"`
	// Version is the version of the artifact type's body format.
	Version int `json:"version"`
	// KeyID is the signing key's id; it must equal the envelope's kid.
	KeyID string `json:"kid"`
	// Subject is the identity the artifact is bound to (a device id, a site id).
	Subject   string    `json:"sub"`
	IssuedAt  time.Time `json:"iat"`
	NotBefore time.Time `json:"nbf"`
	NotAfter  time.Time `json:"exp"`
	// Serial orders artifacts of one type and subject (newer replaces older).
	Serial uint64 `json:"serial,omitempty"`
}

type envelope struct {
	Version int    `json:"outpost_artifact"`
	KeyID   string `json:"kid"`
	Payload []byte `json:"payload"`
	Sig     []byte `json:"sig"`
}

type payload struct {
	Header Header          `json:"hdr"`
	Body   json.RawMessage `json:"body"`
}

// Errors callers branch on. Every error of Verify wraps ErrInvalid.
var (
	ErrInvalid     = errors.New("artifact: invalid")
	ErrUnknownKey  = errors.New("artifact: signed by a key this verifier does not trust")
	ErrBadSig      = errors.New("artifact: signature does not verify (the file was altered or is not from this server)")
	ErrNotYetValid = errors.New("artifact: not valid yet")
	ErrExpired     = errors.New("artifact: expired")
	ErrWrongType   = errors.New("artifact: wrong type")
	ErrWrongBound  = errors.New("artifact: bound to another identity")
	ErrTooLarge    = errors.New("artifact: too large")
)

// Keyring resolves key ids to trusted public keys.
type Keyring interface {
	PublicKey(kid string) (ed25519.PublicKey, bool)
}

// Keys is a Keyring of fixed keys.
type Keys []ed25519.PublicKey

// PublicKey implements Keyring.
func (ks Keys) PublicKey(kid string) (ed25519.PublicKey, bool) {
	for _, k := range ks {
		if keys.KeyID(k) == kid {
			return k, true
		}
	}
	return nil, false
}

func signedMessage(kid string, p []byte) []byte {
	m := make([]byte, 0, 32+len(kid)+len(p))
	m = append(m, "outpost-artifact-v1\x00"...)
	m = append(m, kid...)
	m = append(m, 0)
	return append(m, p...)
}

// Sign encodes body as JSON, wraps it with h (whose KeyID is set from s), and
// signs it. It returns the artifact's bytes. A zero IssuedAt is NotBefore:
// the issuer's clock is the caller's, never read here.
func Sign(s *keys.Signer, h Header, body any) ([]byte, error) {
	h.KeyID = s.KeyID
	if h.IssuedAt.IsZero() {
		h.IssuedAt = h.NotBefore
	}
	h.IssuedAt, h.NotBefore, h.NotAfter = h.IssuedAt.UTC(), h.NotBefore.UTC(), h.NotAfter.UTC()
	if h.Type == "" || h.Version < 1 || !h.NotAfter.After(h.NotBefore) {
		return nil, fmt.Errorf("artifact: header needs a type, a version and not-after later than not-before")
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("artifact: encoding body: %w", err)
	}
	p, err := json.Marshal(payload{Header: h, Body: b})
	if err != nil {
		return nil, err
	}
	env := envelope{Version: 1, KeyID: s.KeyID, Payload: p, Sig: s.Sign(signedMessage(s.KeyID, p))}
	out, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// Expect is what the verifier requires of an artifact.
type Expect struct {
	Type string
	// Subject, when set, must equal the header's Subject.
	Subject string
	// Now is the verifier's time; the zero value skips the validity window
	// check (for callers that apply their own clock rules afterwards).
	Now time.Time
	// Skew tolerates clocks this far apart at both ends of the window.
	Skew time.Duration
	// MaxSize bounds the artifact; 0 means 64 MiB.
	MaxSize int
}

// Verify checks data as described in the package comment and returns the
// header and the raw body. It never returns a body whose signature did not verify.
func Verify(data []byte, ring Keyring, want Expect) (Header, json.RawMessage, error) {
	max := want.MaxSize
	if max <= 0 {
		max = 64 << 20
	}
	fail := func(err error, format string, a ...any) (Header, json.RawMessage, error) {
		msg := fmt.Sprintf(format, a...)
		if err != nil {
			return Header{}, nil, fmt.Errorf("%w: %w: %s", ErrInvalid, err, msg)
		}
		return Header{}, nil, fmt.Errorf("%w: %s", ErrInvalid, msg)
	}
	if len(data) > max {
		return fail(ErrTooLarge, "%d bytes, the limit is %d", len(data), max)
	}
	var env envelope
	if err := decodeStrict(data, &env); err != nil {
		return fail(nil, "not an Outpost artifact (%v); is the file truncated?", err)
	}
	if env.Version != 1 {
		return fail(nil, "envelope version %d is not supported by this Outpost", env.Version)
	}
	if len(env.Sig) != ed25519.SignatureSize {
		return fail(ErrBadSig, "signature has %d bytes", len(env.Sig))
	}
	pub, ok := ring.PublicKey(env.KeyID)
	if !ok {
		return fail(ErrUnknownKey, "key id %q; pin the server's key with 'outpost keys export-public'", ident.Clip(env.KeyID))
	}
	if len(pub) != ed25519.PublicKeySize {
		// ed25519.Verify panics on a malformed key; a keyring bug must not.
		return fail(ErrUnknownKey, "the keyring's key for %q has %d bytes, not %d", ident.Clip(env.KeyID), len(pub), ed25519.PublicKeySize)
	}
	if !ed25519.Verify(pub, signedMessage(env.KeyID, env.Payload), env.Sig) {
		return fail(ErrBadSig, "key id %s", env.KeyID)
	}
	// Signed: from here on the payload is the issuer's own words.
	var p payload
	if err := decodeStrict(env.Payload, &p); err != nil {
		return fail(nil, "signed payload is malformed: %v", err)
	}
	h := p.Header
	if h.KeyID != env.KeyID {
		return fail(ErrBadSig, "header key id %q differs from envelope key id", ident.Clip(h.KeyID))
	}
	if want.Type != "" && h.Type != want.Type {
		return fail(ErrWrongType, "this is a %q, expected a %q", ident.Clip(h.Type), want.Type)
	}
	if want.Subject != "" && h.Subject != want.Subject {
		return fail(ErrWrongBound, "it was issued for %q, this is %q: use it there", ident.Clip(h.Subject), ident.Clip(want.Subject))
	}
	if !want.Now.IsZero() {
		switch clockguard.Window(want.Now, h.NotBefore, h.NotAfter, want.Skew) {
		case clockguard.Before:
			return fail(ErrNotYetValid, "valid from %s, now is %s", h.NotBefore.Format(time.RFC3339), want.Now.UTC().Format(time.RFC3339))
		case clockguard.After:
			return fail(ErrExpired, "valid until %s, now is %s: ask for a new one", h.NotAfter.Format(time.RFC3339), want.Now.UTC().Format(time.RFC3339))
		}
	}
	return h, p.Body, nil
}

// decodeStrict decodes one JSON value, rejecting unknown fields and trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// DecodeBody decodes a verified body strictly (unknown fields and trailing data rejected).
func DecodeBody(body json.RawMessage, v any) error {
	if err := decodeStrict(body, v); err != nil {
		return fmt.Errorf("%w: body: %v", ErrInvalid, err)
	}
	return nil
}
