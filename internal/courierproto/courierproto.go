// Package courierproto is the wire format between the server and a courier
// device (issue 11, docs/deliveries.md): the route manifest the server
// signs for one device, the receipt the device signs when a recipient's
// code checks out at the door, and the proof of delivery (the receipt with
// the server's countersignature) that a third party checks with public
// keys alone.
//
// Every message is an internal/artifact envelope (Ed25519 over a byte-exact
// JSON payload), so the same verifier and the same bounds apply as for
// bundles and sync:
//
//   - a [Manifest] is signed by the server's artifact key, type
//     [ManifestType], subject the device id, Serial growing with every
//     manifest of that device;
//   - a [Receipt] is signed by the device's own key (the one that signs its
//     log), type [ReceiptType], subject the device id, Serial the sequence
//     number of the device log entry that recorded the decision;
//   - a [Countersign] is signed by the server's artifact key, type
//     [CountersignType], subject the delivery id; it names the device's key
//     and the receipt's SHA-256, so a [Proof] carries everything needed to
//     check it: [VerifyProof].
//
// The device is the attacker's: its key signs anything its holder likes.
// A receipt is therefore only a claim; the server believes it only for a
// delivery, version and device that the server itself put in that device's
// manifest (internal/delivery).
//
// Decoders ([DecodeManifest], [DecodeReceipt], [DecodeProof]) decode
// strictly (unknown fields and trailing data refused) and check every bound
// before a field is used.
package courierproto

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/codecheck"
	"github.com/outpost-auth/outpost/internal/ident"
)

// Artifact types and body versions.
const (
	ManifestType       = "route-manifest"
	ReceiptType        = "delivery-receipt"
	CountersignType    = "delivery-countersign"
	ManifestVersion    = 1
	ReceiptVersion     = 1
	CountersignVersion = 1
)

// Limits, checked before any field is used.
const (
	// MaxDeliveries bounds the deliveries of one manifest.
	MaxDeliveries = 2000
	// MaxManifestSize bounds a manifest artifact.
	MaxManifestSize = 4 << 20
	// MaxCheckSize bounds one delivery's mode data.
	MaxCheckSize = 1024
	// MaxReceiptSize bounds a receipt artifact.
	MaxReceiptSize = 8 << 10
	// MaxSealedSize bounds a sealed code in a receipt.
	MaxSealedSize = 512
	// MaxReceiptToken bounds a token in a receipt (deliverytoken's longest is 1,274 characters).
	MaxReceiptToken = 2048
	// MaxLocation bounds a receipt's location ("lat,lon").
	MaxLocation = 64
	// MaxProofSize bounds a proof file.
	MaxProofSize = 64 << 10
	// MaxReceipts bounds the receipts of one sync upload.
	MaxReceipts = 1000
	// MaxAttempts bounds a delivery's attempt limit; DefaultAttempts is
	// the limit when the server sets none.
	MaxAttempts     = 100
	DefaultAttempts = 5
	// MaxKeySize bounds a pinned public key.
	MaxKeySize = 256
	// MaxReason bounds a free-text reason.
	MaxReason = 512
)

// Modes of a delivery (internal/delivery's names).
const (
	ModeHash        = "hash"
	ModeFingerprint = "fingerprint"
	ModeToken       = "token"
)

// ErrMalformed wraps every decoding and validation error.
var ErrMalformed = errors.New("courierproto: malformed message")

// Binding ties a check to one version of one delivery on one device
// (codecheck's: it is bound into every salt, KDF input and seal).
type Binding = codecheck.Binding

// Keys are the public keys a courier device pins from its manifest.
type Keys struct {
	// Token verifies delivery tokens (Ed25519).
	Token []byte `json:"token,omitempty"`
	// Seal is the HPKE public key entered codes of the fingerprint mode are sealed to.
	Seal []byte `json:"seal,omitempty"`
}

// Manifest is the body of a route manifest: what one courier device may
// check offline. It carries no recipient data.
type Manifest struct {
	Realm    string    `json:"realm"`
	Device   string    `json:"device"`
	IssuedAt time.Time `json:"issued_at"`
	// MaxAge is how long after IssuedAt the device may check codes with
	// it, in seconds: a cancelled or reassigned delivery is only learnt at
	// the next sync.
	MaxAge     int64              `json:"max_age"`
	Keys       Keys               `json:"keys"`
	Deliveries []ManifestDelivery `json:"deliveries"`
}

// ManifestDelivery is one delivery of a manifest.
type ManifestDelivery struct {
	ID       string    `json:"id"`
	Version  int       `json:"version"`
	NotAfter time.Time `json:"not_after"`
	Mode     string    `json:"mode"`
	// Check is the mode data (hash or fingerprint; none for tokens).
	Check    json.RawMessage `json:"check,omitempty"`
	Attempts int             `json:"attempts"`
}

// Binding is d's binding on device of realm.
func (d ManifestDelivery) Binding(realm, device string) Binding {
	return Binding{Realm: realm, Delivery: d.ID, Version: d.Version, Device: device}
}

// Receipt is what a device signs when a code checks out.
type Receipt struct {
	Realm    string `json:"realm"`
	Delivery string `json:"delivery"`
	Version  int    `json:"version"`
	Device   string `json:"device"`
	Mode     string `json:"mode"`
	// Time is the device's clock at the decision.
	Time time.Time `json:"time"`
	// Location is "lat,lon" when the courier gave one.
	Location string `json:"location,omitempty"`
	// Manifest is the serial of the manifest the device checked against.
	Manifest uint64 `json:"manifest"`
	// LogSeq and LogHash are the device log entry that recorded the decision.
	LogSeq  uint64 `json:"log_seq"`
	LogHash []byte `json:"log_hash"`
	// Sealed is the entered code sealed to the server (hash and
	// fingerprint modes): the server confirms it at sync, so that the
	// device's word alone delivers nothing.
	Sealed []byte `json:"sealed,omitempty"`
	// Token is the recipient's delivery token (token mode): the server
	// checks its signature and binding at sync.
	Token string `json:"token,omitempty"`
}

// Binding is the receipt's binding.
func (r Receipt) Binding() Binding {
	return Binding{Realm: r.Realm, Delivery: r.Delivery, Version: r.Version, Device: r.Device}
}

// ReceiptAck is the server's answer about one receipt of a sync upload.
type ReceiptAck struct {
	Delivery string `json:"delivery"`
	Version  int    `json:"version"`
	// Status is AckDelivered, AckDuplicate or AckRefused.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Receipt statuses. Every status is final: the device stops sending the receipt.
const (
	AckDelivered = "delivered"
	// AckDuplicate: this receipt was applied by an earlier upload.
	AckDuplicate = "duplicate"
	// AckRefused: the server does not believe it (an incident was recorded).
	AckRefused = "refused"
)

// Countersign is the server's statement that it accepted a receipt.
type Countersign struct {
	Realm    string `json:"realm"`
	Delivery string `json:"delivery"`
	Version  int    `json:"version"`
	Device   string `json:"device"`
	// DeviceKey is the device's Ed25519 public key, as registered.
	DeviceKey []byte `json:"device_key"`
	// ReceiptHash is the SHA-256 of the receipt artifact's bytes.
	ReceiptHash []byte `json:"receipt_hash"`
	// Manifest is the serial of the server's manifest that listed the delivery.
	Manifest    uint64    `json:"manifest"`
	DeliveredAt time.Time `json:"delivered_at"`
}

// Proof is a self-contained proof of delivery.
type Proof struct {
	// Receipt is the device-signed receipt artifact, byte for byte.
	Receipt []byte `json:"receipt"`
	// Countersign is the server-signed countersignature artifact.
	Countersign []byte `json:"countersign"`
}

// CountersignValidity is the validity window of a countersignature: a proof
// is evidence for years (VerifyProof does not check the window).
const CountersignValidity = 10 * 366 * 24 * time.Hour

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

func checkID(what, v string) error {
	if err := ident.Check(what, v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

func checkMode(m string) error {
	switch m {
	case ModeHash, ModeFingerprint, ModeToken:
		return nil
	}
	return bad("mode %q (want hash, fingerprint or token)", ident.Clip(m))
}

// Validate checks every field of m.
func (m *Manifest) Validate() error {
	if err := checkID("realm", m.Realm); err != nil {
		return err
	}
	if err := checkID("device", m.Device); err != nil {
		return err
	}
	if m.IssuedAt.IsZero() || m.MaxAge <= 0 || m.MaxAge > int64(MaxMaxAge/time.Second) {
		return bad("issue time and max age (1 s to %v) are required", MaxMaxAge)
	}
	if len(m.Keys.Token) > MaxKeySize || len(m.Keys.Seal) > MaxKeySize {
		return bad("pinned key longer than %d bytes", MaxKeySize)
	}
	if len(m.Deliveries) > MaxDeliveries {
		return bad("%d deliveries, at most %d", len(m.Deliveries), MaxDeliveries)
	}
	seen := make(map[string]bool, len(m.Deliveries))
	for _, d := range m.Deliveries {
		if err := checkID("delivery", d.ID); err != nil {
			return err
		}
		if seen[d.ID] {
			return bad("delivery %s listed twice", d.ID)
		}
		seen[d.ID] = true
		if err := checkMode(d.Mode); err != nil {
			return err
		}
		switch {
		case d.Version < 1 || d.Version > 1<<31:
			return bad("delivery %s: version %d", d.ID, d.Version)
		case d.NotAfter.IsZero():
			return bad("delivery %s: no expiry", d.ID)
		case d.Attempts < 1 || d.Attempts > MaxAttempts:
			return bad("delivery %s: attempt limit %d (1 to %d)", d.ID, d.Attempts, MaxAttempts)
		case len(d.Check) > MaxCheckSize:
			return bad("delivery %s: mode data of %d bytes", d.ID, len(d.Check))
		case (d.Mode == ModeToken) != (len(d.Check) == 0):
			return bad("delivery %s: mode %s with %d bytes of mode data", d.ID, d.Mode, len(d.Check))
		}
	}
	return nil
}

// MaxMaxAge bounds a manifest's MaxAge.
const MaxMaxAge = 7 * 24 * time.Hour

// Validate checks every field of r.
func (r *Receipt) Validate() error {
	for _, c := range [][2]string{{"realm", r.Realm}, {"delivery", r.Delivery}, {"device", r.Device}} {
		if err := checkID(c[0], c[1]); err != nil {
			return err
		}
	}
	if err := checkMode(r.Mode); err != nil {
		return err
	}
	switch {
	case r.Version < 1 || r.Version > 1<<31:
		return bad("version %d", r.Version)
	case r.Time.IsZero():
		return bad("no time")
	case r.LogSeq == 0 || r.LogSeq > 1<<62 || len(r.LogHash) != sha256.Size:
		return bad("log entry %d with a %d-byte hash", r.LogSeq, len(r.LogHash))
	case len(r.Sealed) > MaxSealedSize:
		return bad("sealed code of %d bytes", len(r.Sealed))
	case len(r.Token) > MaxReceiptToken:
		return bad("token of %d bytes", len(r.Token))
	case r.Mode == ModeToken && len(r.Sealed) > 0, r.Mode != ModeToken && r.Token != "":
		return bad("a sealed code comes with the hash and fingerprint modes, a token with the token mode")
	case r.Manifest == 0:
		return bad("no manifest serial")
	}
	if r.Location != "" {
		if _, _, err := ParseLocation(r.Location); err != nil {
			return err
		}
	}
	return nil
}

// ParseLocation reads "lat,lon" in decimal degrees.
func ParseLocation(s string) (lat, lon float64, err error) {
	if len(s) > MaxLocation {
		return 0, 0, bad("location longer than %d bytes", MaxLocation)
	}
	a, b, ok := strings.Cut(s, ",")
	if ok {
		lat, err = strconv.ParseFloat(strings.TrimSpace(a), 64)
	}
	if ok && err == nil {
		lon, err = strconv.ParseFloat(strings.TrimSpace(b), 64)
	}
	if !ok || err != nil || lat < -90 || lat > 90 || lon < -180 || lon > 180 || lat != lat || lon != lon {
		return 0, 0, bad("location %q: want \"lat,lon\" in degrees, e.g. \"48.8566,2.3522\"", ident.Clip(s))
	}
	return lat, lon, nil
}

// Validate checks every field of c.
func (c *Countersign) Validate() error {
	for _, x := range [][2]string{{"realm", c.Realm}, {"delivery", c.Delivery}, {"device", c.Device}} {
		if err := checkID(x[0], x[1]); err != nil {
			return err
		}
	}
	switch {
	case c.Version < 1 || c.Version > 1<<31:
		return bad("version %d", c.Version)
	case len(c.DeviceKey) != ed25519.PublicKeySize || len(c.ReceiptHash) != sha256.Size:
		return bad("device key of %d bytes, receipt hash of %d", len(c.DeviceKey), len(c.ReceiptHash))
	case c.DeliveredAt.IsZero() || c.Manifest == 0:
		return bad("no delivery time or manifest serial")
	}
	return nil
}

// Validate checks each acknowledgement.
func (a *ReceiptAck) Validate() error {
	if err := checkID("delivery", a.Delivery); err != nil {
		return err
	}
	switch a.Status {
	case AckDelivered, AckDuplicate, AckRefused:
	default:
		return bad("receipt status %q", ident.Clip(a.Status))
	}
	if len(a.Reason) > MaxReason {
		return bad("reason longer than %d bytes", MaxReason)
	}
	return nil
}

// DecodeManifest decodes a verified manifest body strictly and validates it.
func DecodeManifest(body []byte) (Manifest, error) {
	var m Manifest
	if err := decodeStrict(body, &m); err != nil {
		return Manifest{}, err
	}
	return m, m.Validate()
}

// DecodeReceipt decodes a verified receipt body strictly and validates it.
func DecodeReceipt(body []byte) (Receipt, error) {
	var r Receipt
	if err := decodeStrict(body, &r); err != nil {
		return Receipt{}, err
	}
	return r, r.Validate()
}

// DecodeProof decodes a proof file strictly (it does not verify it).
func DecodeProof(data []byte) (Proof, error) {
	if len(data) > MaxProofSize {
		return Proof{}, bad("proof of %d bytes, at most %d", len(data), MaxProofSize)
	}
	var p Proof
	if err := decodeStrict(data, &p); err != nil {
		return Proof{}, err
	}
	if len(p.Receipt) == 0 || len(p.Receipt) > MaxReceiptSize || len(p.Countersign) == 0 || len(p.Countersign) > MaxReceiptSize {
		return Proof{}, bad("a proof holds a receipt and a countersignature of at most %d bytes each", MaxReceiptSize)
	}
	return p, nil
}

// decodeStrict is artifact.DecodeBody's strict decoding, wrapping ErrMalformed.
func decodeStrict(data []byte, v any) error {
	if err := artifact.DecodeBody(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// ReceiptHash is the SHA-256 of a receipt artifact's bytes.
func ReceiptHash(receipt []byte) []byte {
	h := sha256.Sum256(receipt)
	return h[:]
}

// VerifyReceipt verifies a receipt artifact signed by device's key pub and
// returns its body. It does not check the validity window (a receipt is
// evidence of a past decision; the server applies its own rules).
func VerifyReceipt(data []byte, pub ed25519.PublicKey, device string) (Receipt, error) {
	h, body, err := artifact.Verify(data, artifact.Keys{pub}, artifact.Expect{Type: ReceiptType, Subject: device, MaxSize: MaxReceiptSize})
	if err != nil {
		return Receipt{}, err
	}
	if h.Version != ReceiptVersion {
		return Receipt{}, bad("receipt version %d", h.Version)
	}
	r, err := DecodeReceipt(body)
	if err != nil {
		return Receipt{}, err
	}
	if r.Device != device || r.LogSeq != h.Serial {
		return Receipt{}, bad("the receipt's body (device %q, log entry %d) differs from its header (%q, %d)", ident.Clip(r.Device), r.LogSeq, ident.Clip(h.Subject), h.Serial)
	}
	return r, nil
}

// Errors of VerifyProof.
var (
	// ErrProofMismatch: the countersignature does not name this receipt,
	// this device or this delivery.
	ErrProofMismatch = errors.New("courierproto: the countersignature is not for this receipt")
)

// VerifyProof checks a proof with the server's public key alone: the
// countersignature by server, then the receipt by the device key the
// countersignature names, then that both speak of the same receipt
// (hash), delivery, version and device. It returns both bodies.
func VerifyProof(data []byte, server ed25519.PublicKey) (Receipt, Countersign, error) {
	p, err := DecodeProof(data)
	if err != nil {
		return Receipt{}, Countersign{}, err
	}
	h, body, err := artifact.Verify(p.Countersign, artifact.Keys{server}, artifact.Expect{Type: CountersignType, MaxSize: MaxReceiptSize})
	if err != nil {
		return Receipt{}, Countersign{}, fmt.Errorf("countersignature: %w", err)
	}
	var c Countersign
	if err := decodeStrict(body, &c); err != nil {
		return Receipt{}, Countersign{}, err
	}
	if err := c.Validate(); err != nil {
		return Receipt{}, Countersign{}, err
	}
	if h.Version != CountersignVersion || h.Subject != c.Delivery {
		return Receipt{}, Countersign{}, fmt.Errorf("%w: header names %q, body %q", ErrProofMismatch, ident.Clip(h.Subject), c.Delivery)
	}
	if subtle.ConstantTimeCompare(ReceiptHash(p.Receipt), c.ReceiptHash) != 1 {
		return Receipt{}, Countersign{}, fmt.Errorf("%w: the receipt's hash differs", ErrProofMismatch)
	}
	r, err := VerifyReceipt(p.Receipt, ed25519.PublicKey(c.DeviceKey), c.Device)
	if err != nil {
		return Receipt{}, Countersign{}, fmt.Errorf("receipt: %w", err)
	}
	if r.Realm != c.Realm || r.Delivery != c.Delivery || r.Version != c.Version || r.Device != c.Device {
		return Receipt{}, Countersign{}, fmt.Errorf("%w: the receipt is for %s/%s v%d on %s", ErrProofMismatch, r.Realm, r.Delivery, r.Version, r.Device)
	}
	return r, c, nil
}
