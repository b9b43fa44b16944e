package courierproto

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/codecheck"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/deliverytoken"
)

// The per-mode checks. The primitives live in internal/codecheck (hash,
// fingerprint, sealing) and internal/deliverytoken (signed tokens); these
// functions are the one seam the server (internal/delivery) and the
// courier device (package offline) call, so both sides agree on the
// encoding of the mode data (the JSON of codecheck.Hash and
// codecheck.Fingerprint).

// Costs are the argon2id parameters of the hash and fingerprint modes and
// the floor the hash mode must clear. The zero value means
// codecheck.DefaultHashParams, codecheck.DefaultFingerprintParams and
// cost.DeliveryFloor.
type Costs struct {
	Hash, Fingerprint codecheck.Params
	// Floor, when set, replaces cost.DeliveryFloor (tests; an audited
	// administrator decision).
	Floor *cost.Floor
}

// TestCosts are argon2id costs for tests only (64 KiB, one pass), with a
// floor they clear: a delivery check costs microseconds instead of the
// defaults' seconds. Never configure a server with them.
var TestCosts = Costs{Hash: codecheck.Params{Time: 1, MemoryKiB: 64, Threads: 1},
	Fingerprint: codecheck.Params{Time: 1, MemoryKiB: 64, Threads: 1}, Floor: &cost.Floor{PerEntry: time.Nanosecond}}

// MakeCheck computes the mode data of code for b (the server, at issue
// time, when the code exists in the clear): a salted slow hash (hash), a
// short fingerprint (fingerprint), nothing (token). code is canonical
// (deliverycode.Parse). The hash mode refuses parameters below the floor
// (codecheck.ErrBelowFloor).
func MakeCheck(mode, code string, b Binding, c Costs) (json.RawMessage, error) {
	var v any
	var err error
	switch mode {
	case ModeHash:
		p := c.Hash
		if p == (codecheck.Params{}) {
			p = codecheck.DefaultHashParams
		}
		if c.Floor != nil {
			v, err = codecheck.NewHashFloor(code, b, p, *c.Floor)
		} else {
			v, err = codecheck.NewHash(code, b, p)
		}
	case ModeFingerprint:
		p := c.Fingerprint
		if p == (codecheck.Params{}) {
			p = codecheck.DefaultFingerprintParams
		}
		v, err = codecheck.NewFingerprint(code, b, p)
	case ModeToken:
		return nil, nil
	default:
		return nil, bad("mode %q", mode)
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// MatchCheck reports whether code matches the mode data (the device, at
// the door). An error means the data is malformed, not a wrong code.
func MatchCheck(mode string, data json.RawMessage, code string, b Binding) (bool, error) {
	switch mode {
	case ModeHash:
		var h codecheck.Hash
		if err := decodeStrict(data, &h); err != nil {
			return false, err
		}
		return h.Match(code, b)
	case ModeFingerprint:
		var f codecheck.Fingerprint
		if err := decodeStrict(data, &f); err != nil {
			return false, err
		}
		return f.Match(code, b)
	}
	return false, bad("mode %q has no mode data to match", mode)
}

// SealCode seals an entered code to the server's key (fingerprint mode).
func SealCode(serverPub []byte, b Binding, code string) ([]byte, error) {
	return codecheck.Seal(serverPub, b, code)
}

// VerifyToken checks a delivery token with the pinned key at now and that
// it is for b (a token bound to a device must name b.Device).
func VerifyToken(pub ed25519.PublicKey, text string, now time.Time, b Binding) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: the manifest pins no token key", ErrMalformed)
	}
	c, err := deliverytoken.Verify(pub, text, now)
	if err != nil {
		return err
	}
	return c.For(b.Realm, b.Delivery, b.Version, b.Device)
}
