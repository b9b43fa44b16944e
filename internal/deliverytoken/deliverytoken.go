// Package deliverytoken is the signed-token mode of delivery codes (issue
// 11, docs/deliveries.md): instead of a code, the recipient's message
// carries a token the server signed for one version of one delivery,
// optionally bound to one courier device, valid until an expiry. The
// courier scans it (QR) or types it, and the device checks it with the
// realm's pinned public key: there is no secret on the device at all, so
// a dishonest courier holding it has nothing to crack.
//
//	text, err := deliverytoken.Sign(priv, deliverytoken.Claims{Realm: "acme", Delivery: "parcel-1",
//		Version: 1, Device: "dev-7", NotAfter: due})              // server: into the message and a QR code
//	c, err := deliverytoken.Verify(pub, scanned, now)           // device, at the door
//	err = c.For("acme", "parcel-1", 1, "dev-7")                   // is it this delivery's, for me?
//
// Verify answers ErrMalformed (not a token), ErrSignature (not signed by
// this key: forged, tampered, or another realm's) or ErrExpired; For
// answers ErrMismatch for a genuine token of another delivery, version or
// device. Which delivery is being delivered is the caller's to say: a
// valid token proves only what its claims say.
//
// # Format
//
// The text is "ODT1:" followed by the Base45 (RFC 9285) encoding of the
// claims and a 64-byte Ed25519 signature over "ODT1:" || claims, so every
// character is in the QR alphanumeric set and the prefix and version are
// signed too. The claims are a fixed layout, big-endian:
//
//	u16 len || realm || u16 len || delivery || u32 version || u16 len || device || u32 not_after (Unix seconds)
//
// with ids per ident.Check (device may be empty: any device of the realm).
// A token is at most MaxTextLen characters; typical ones (short ids) are
// about 150, a QR code of version 6 or so.
package deliverytoken

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/base45"
	"github.com/outpost-auth/outpost/internal/ident"
)

// Prefix starts every token: the format name and its version.
const Prefix = "ODT1:"

// Limits.
const (
	// maxClaims is the largest claims layout: three ids of ident.MaxLen.
	maxClaims = 3*(2+ident.MaxLen) + 4 + 4
	// MaxTextLen bounds a token's text.
	MaxTextLen = len(Prefix) + (maxClaims+ed25519.SignatureSize)/2*3 + (maxClaims+ed25519.SignatureSize)%2*2
	minClaims  = 3*2 + 2 + 4 + 4
)

var (
	// ErrMalformed: the text is not a delivery token (wrong prefix or
	// version, not Base45, wrong layout, over MaxTextLen).
	ErrMalformed = errors.New("deliverytoken: not a delivery token")
	// ErrSignature: the token is not signed by the pinned key (forged,
	// tampered, or signed for another realm or server).
	ErrSignature = errors.New("deliverytoken: signature does not verify with the pinned key (forged or tampered token, or another realm's)")
	// ErrExpired: the token's not_after has passed.
	ErrExpired = errors.New("deliverytoken: token has expired")
	// ErrMismatch: a genuine token for another delivery, version or device.
	ErrMismatch = errors.New("deliverytoken: token is for another delivery")
)

// Claims are what a token says: delivery Delivery of realm Realm at code
// version Version may be confirmed, on device Device ("" = any device of
// the realm), until NotAfter (whole seconds; excluded).
type Claims struct {
	Realm    string
	Delivery string
	Version  int
	Device   string // optional device binding ("" = any device of the realm)
	NotAfter time.Time
}

func (c Claims) check() error {
	if err := ident.Check("realm", c.Realm); err != nil {
		return err
	}
	if err := ident.Check("delivery", c.Delivery); err != nil {
		return err
	}
	if c.Device != "" {
		if err := ident.Check("device", c.Device); err != nil {
			return err
		}
	}
	if c.Version < 1 || uint64(c.Version) > math.MaxUint32 {
		return fmt.Errorf("version %d (want 1 to %d)", c.Version, uint32(math.MaxUint32))
	}
	if s := c.NotAfter.Unix(); s <= 0 || s > math.MaxUint32 {
		return fmt.Errorf("not_after %s out of range (1970 to 2106)", c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Sign returns the token text for c signed by priv. NotAfter is truncated
// to the second. It errs when a claim is out of range.
func Sign(priv ed25519.PrivateKey, c Claims) (string, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return "", errors.New("deliverytoken: signing key is not an Ed25519 private key")
	}
	if err := c.check(); err != nil {
		return "", fmt.Errorf("deliverytoken: %w", err)
	}
	msg := []byte(Prefix)
	for _, s := range []string{c.Realm, c.Delivery} {
		msg = binary.BigEndian.AppendUint16(msg, uint16(len(s)))
		msg = append(msg, s...)
	}
	msg = binary.BigEndian.AppendUint32(msg, uint32(c.Version))
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(c.Device)))
	msg = append(msg, c.Device...)
	msg = binary.BigEndian.AppendUint32(msg, uint32(c.NotAfter.Unix()))
	body := append(msg[len(Prefix):], ed25519.Sign(priv, msg)...)
	return Prefix + base45.Encode(body), nil
}

// Verify checks text against pub at now: the prefix and version, the
// layout, the signature (over the prefix too), then the expiry (ErrExpired
// once now reaches NotAfter). Only then are the claims returned; check them
// against the delivery at hand with For. The text must be exactly the
// token (the Base45 alphabet holds a space, so nothing is trimmed).
func Verify(pub ed25519.PublicKey, text string, now time.Time) (Claims, error) {
	if len(pub) != ed25519.PublicKeySize {
		return Claims{}, errors.New("deliverytoken: pinned key is not an Ed25519 public key")
	}
	if len(text) > MaxTextLen {
		return Claims{}, fmt.Errorf("%w: longer than %d characters", ErrMalformed, MaxTextLen)
	}
	if !strings.HasPrefix(text, Prefix) {
		if strings.HasPrefix(text, "ODT") {
			return Claims{}, fmt.Errorf("%w: unsupported version (this device reads %s tokens: update it)", ErrMalformed, Prefix)
		}
		return Claims{}, fmt.Errorf("%w: it does not start with %s", ErrMalformed, Prefix)
	}
	body, err := base45.Decode(text[len(Prefix):])
	if err != nil || len(body) < minClaims+ed25519.SignatureSize {
		return Claims{}, fmt.Errorf("%w: bad encoding or too short", ErrMalformed)
	}
	claims, sig := body[:len(body)-ed25519.SignatureSize], body[len(body)-ed25519.SignatureSize:]
	if !ed25519.Verify(pub, append([]byte(Prefix), claims...), sig) {
		return Claims{}, ErrSignature
	}
	c, err := parseClaims(claims)
	if err != nil {
		return Claims{}, err
	}
	if !now.Before(c.NotAfter) {
		return Claims{}, fmt.Errorf("%w: valid until %s (ask the shipper for a new one)", ErrExpired, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return c, nil
}

// parseClaims reads the fixed layout; every byte must be used.
func parseClaims(b []byte) (Claims, error) {
	bad := fmt.Errorf("%w: bad claims layout", ErrMalformed)
	str := func() (string, bool) {
		if len(b) < 2 {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return "", false
		}
		s := string(b[2 : 2+n])
		b = b[2+n:]
		return s, true
	}
	u32 := func() (uint32, bool) {
		if len(b) < 4 {
			return 0, false
		}
		v := binary.BigEndian.Uint32(b)
		b = b[4:]
		return v, true
	}
	var c Claims
	var ok [5]bool
	var v, na uint32
	c.Realm, ok[0] = str()
	c.Delivery, ok[1] = str()
	v, ok[2] = u32()
	c.Device, ok[3] = str()
	na, ok[4] = u32()
	if ok != [5]bool{true, true, true, true, true} || len(b) != 0 {
		return Claims{}, bad
	}
	c.Version, c.NotAfter = int(v), time.Unix(int64(na), 0).UTC()
	if err := c.check(); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return c, nil
}

// For checks that c is for delivery of realm at code version, on device:
// a token without a device binding is good for any device. ErrMismatch
// names what differs (a token of another delivery, an old version after a
// reassignment, another courier's device).
func (c Claims) For(realm, delivery string, version int, device string) error {
	switch {
	case c.Realm != realm:
		return fmt.Errorf("%w: it is for realm %q", ErrMismatch, ident.Clip(c.Realm))
	case c.Delivery != delivery:
		return fmt.Errorf("%w: it is for delivery %q, not %q", ErrMismatch, ident.Clip(c.Delivery), ident.Clip(delivery))
	case c.Version != version:
		return fmt.Errorf("%w: it is for version %d of the delivery, the current one is %d (reassigned: the recipient has a newer token)", ErrMismatch, c.Version, version)
	case c.Device != "" && c.Device != device:
		return fmt.Errorf("%w: it is bound to device %q, not this one (%q)", ErrMismatch, ident.Clip(c.Device), ident.Clip(device))
	}
	return nil
}
