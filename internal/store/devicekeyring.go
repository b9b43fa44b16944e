package store

import (
	"context"
	"crypto/ed25519"
	"errors"
)

// DeviceKeyring resolves a signed artifact's key id to a registered field
// device (it is an internal/artifact Keyring): what sync uploads and a
// courier device's signed confirms are verified against. After the
// verification, Device is the device whose key it was, and Err a store
// failure (ErrNotFound is not one: the key is simply unknown).
//
//	rg := &store.DeviceKeyring{Ctx: ctx, Store: ss}
//	h, body, err := artifact.Verify(data, rg, want)
//	if rg.Err != nil { … } // the database, not the artifact
type DeviceKeyring struct {
	Ctx    context.Context
	Store  SyncStore
	Device Device
	Err    error
}

// PublicKey returns the registered device key with key id kid.
func (r *DeviceKeyring) PublicKey(kid string) (ed25519.PublicKey, bool) {
	d, err := r.Store.GetDeviceByKeyID(r.Ctx, kid)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			r.Err = err
		}
		return nil, false
	}
	if len(d.PublicKey) != ed25519.PublicKeySize {
		return nil, false
	}
	r.Device = d
	return ed25519.PublicKey(d.PublicKey), true
}
