package delivery

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
)

// A device-signed online confirm: the courier's device proves who it is the
// way it does at sync (internal/syncproto, "Why signed bodies"): the request
// is an internal/artifact envelope signed with the device's own registered
// Ed25519 key, type ConfirmType, subject its device id, valid at most
// ConfirmValidity. The server then believes exactly one thing from it: that
// this device entered this code for this delivery; Confirm's rules decide
// the rest (the delivery must be assigned to that device, attempts are
// counted, delivered once).
//
//	data, err := delivery.SignConfirm(deviceSigner, "van-7", delivery.ConfirmBody{Realm: "acme", Delivery: "parcel-1", Code: entered}, now)
//	// POST data to /v1/deliveries/parcel-1/device-confirm
//	out, err := svc.ConfirmSigned(ctx, "parcel-1", data) // server
//
// A captured request replayed within its window is refused by this process
// (ErrReplayed); it carries one attempt's worth at most, and TLS keeps it
// from being captured.

// Signed confirm format and limits.
const (
	ConfirmType     = "delivery-confirm"
	ConfirmVersion  = 1
	ConfirmValidity = 2 * time.Minute
	// ConfirmSkew tolerates device clocks this far off.
	ConfirmSkew = time.Minute
	// MaxConfirmSize bounds a signed confirm.
	MaxConfirmSize = 4 << 10
)

var (
	// ErrDeviceAuth: the signed confirm is not from a registered, active
	// device (unknown key, bad signature, revoked device, subject not the
	// signer, outside its validity window, or malformed).
	ErrDeviceAuth = errors.New("the confirm is not signed by a registered, active courier device")
	// ErrReplayed: this very signed confirm was received already.
	ErrReplayed = errors.New("this signed confirm was sent already: sign a new one")
)

// ConfirmBody is a signed confirm's body.
type ConfirmBody struct {
	Realm    string `json:"realm"`
	Delivery string `json:"delivery"`
	Code     string `json:"code"`
}

// SignConfirm signs b as device with the device's key s, valid from now to
// now + ConfirmValidity.
func SignConfirm(s *keys.Signer, device string, b ConfirmBody, now time.Time) ([]byte, error) {
	return artifact.Sign(s, artifact.Header{Type: ConfirmType, Version: ConfirmVersion, Subject: device,
		IssuedAt: now, NotBefore: now, NotAfter: now.Add(ConfirmValidity)}, b)
}

// seenConfirms remembers the signed confirms received within their window.
type seenConfirms struct {
	mu   sync.Mutex
	seen map[[32]byte]time.Time
}

// first reports whether data was not seen before at now, and remembers it.
func (c *seenConfirms) first(data []byte, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[[32]byte]time.Time{}
	}
	for k, until := range c.seen {
		if now.After(until) {
			delete(c.seen, k)
		}
	}
	k := sha256.Sum256(data)
	if _, dup := c.seen[k]; dup {
		return false
	}
	c.seen[k] = now.Add(ConfirmValidity + 2*ConfirmSkew)
	return true
}

// ConfirmSigned verifies data, a confirm signed by a courier device
// (SignConfirm) for delivery id, and runs Confirm for the device that
// signed it, in its realm, with the actor "device:<id>". ErrDeviceAuth when
// the signature, signer, window or form is wrong; ErrReplayed for a
// confirm received already; then Confirm's errors.
func (s *Service) ConfirmSigned(ctx context.Context, id string, data []byte) (Outcome, error) {
	if len(data) > MaxConfirmSize {
		return Outcome{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrDeviceAuth, len(data), MaxConfirmSize)
	}
	ss, ok := s.Store.(store.SyncStore)
	if !ok {
		return Outcome{}, errors.New("delivery: the store keeps no devices")
	}
	now := s.now()
	rg := &store.DeviceKeyring{Ctx: ctx, Store: ss}
	h, raw, err := artifact.Verify(data, rg, artifact.Expect{Type: ConfirmType, Now: now, Skew: ConfirmSkew, MaxSize: MaxConfirmSize})
	switch {
	case rg.Err != nil:
		return Outcome{}, rg.Err
	case errors.Is(err, artifact.ErrUnknownKey):
		return Outcome{}, fmt.Errorf("%w: the signing key is not a registered device's", ErrDeviceAuth)
	case err != nil:
		return Outcome{}, fmt.Errorf("%w: %w", ErrDeviceAuth, err)
	}
	dev := rg.Device
	var b ConfirmBody
	switch {
	case dev.Status != store.DeviceActive:
		return Outcome{}, fmt.Errorf("%w: device %s is %s", ErrDeviceAuth, dev.ID, dev.Status)
	case h.Subject != dev.ID:
		return Outcome{}, fmt.Errorf("%w: signed by device %s's key but names device %q", ErrDeviceAuth, dev.ID, ident.Clip(h.Subject))
	case h.Version != ConfirmVersion || h.NotAfter.Sub(h.NotBefore) > ConfirmValidity:
		return Outcome{}, fmt.Errorf("%w: version %d, or valid longer than %v", ErrDeviceAuth, h.Version, ConfirmValidity)
	}
	if err := artifact.DecodeBody(raw, &b); err != nil {
		return Outcome{}, fmt.Errorf("%w: %w", ErrDeviceAuth, err)
	}
	switch {
	case b.Realm != dev.Realm:
		return Outcome{}, fmt.Errorf("%w: device %s belongs to another realm than %q", ErrWrongDevice, dev.ID, ident.Clip(b.Realm))
	case b.Delivery != id:
		return Outcome{}, fmt.Errorf("%w: the signed confirm is for delivery %q, not %q", ErrInvalid, ident.Clip(b.Delivery), ident.Clip(id))
	case !s.seen.first(data, now):
		return Outcome{}, ErrReplayed
	}
	return s.Confirm(ctx, dev.Realm, id, b.Code, dev.ID, "device:"+dev.ID)
}
