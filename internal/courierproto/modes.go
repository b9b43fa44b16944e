package courierproto

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"
)

// The per-mode checks. The primitives live in internal/codecheck (hash,
// fingerprint, sealing) and internal/deliverytoken (signed tokens); these
// four functions are the one seam the server (internal/delivery) and the
// courier device (package offline) call, so both sides agree on the
// encoding of the mode data.

// ErrModeUnavailable: this build cannot run the mode's check.
var ErrModeUnavailable = fmt.Errorf("courierproto: mode not available in this build")

// MakeCheck computes the mode data of code for b (the server, at issue
// time, when the code exists in the clear): a salted slow hash (hash), a
// short fingerprint (fingerprint), nothing (token). code is canonical
// (deliverycode.Parse).
func MakeCheck(mode, code string, b Binding) (json.RawMessage, error) {
	switch mode {
	case ModeHash:
		return makeHash(code, b)
	case ModeFingerprint:
		return makeFingerprint(code, b)
	case ModeToken:
		return nil, nil
	}
	return nil, bad("mode %q", mode)
}

// MatchCheck reports whether code matches the mode data (the device, at
// the door). An error means the data is malformed, not a wrong code.
func MatchCheck(mode string, data json.RawMessage, code string, b Binding) (bool, error) {
	switch mode {
	case ModeHash:
		return matchHash(data, code, b)
	case ModeFingerprint:
		return matchFingerprint(data, code, b)
	}
	return false, bad("mode %q has no mode data to match", mode)
}

// SealCode seals an entered code to the server's key (fingerprint mode).
func SealCode(serverPub []byte, b Binding, code string) ([]byte, error) {
	return sealCode(serverPub, b, code)
}

// VerifyToken checks a delivery token with the pinned key at now and that
// it is for b (its device binding, when it has one, is b.Device).
func VerifyToken(pub ed25519.PublicKey, text string, now time.Time, b Binding) error {
	return verifyToken(pub, text, now, b)
}
