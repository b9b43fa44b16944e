package delivery

import (
	"fmt"

	"github.com/outpost-auth/outpost/internal/deliverytoken"
	"github.com/outpost-auth/outpost/internal/qr"
)

// Token is a delivery token (token mode, internal/deliverytoken) as the
// recipient's message carries it: the text, which is also a link's
// payload, and a QR code of it. The courier's device verifies it with the
// realm's PublicKeys().Token; it holds no secret.
type Token struct {
	Text string `json:"text"`
	PNG  []byte `json:"png"`
}

// TokenQRSize is the side of a token's QR code PNG, in pixels.
const TokenQRSize = 320

// tokenFor signs d's token when d is in token mode (nil otherwise): realm,
// delivery, code version, the device it is assigned to, and its expiry, so
// it is refused after a reassignment (another version and device) and
// after not_after.
func (s *Service) tokenFor(d Delivery) (*Token, error) {
	if d.Mode != ModeToken {
		return nil, nil
	}
	text, err := s.TokenText(d)
	if err != nil {
		return nil, fmt.Errorf("delivery: signing the token: %w", err)
	}
	png, err := qr.PNG(text, TokenQRSize)
	if err != nil {
		return nil, fmt.Errorf("delivery: drawing the token's QR code: %w", err)
	}
	return &Token{Text: text, PNG: png}, nil
}

// TokenText returns the signed token of d, in token mode, for its current
// code version and device: what the recipient's message carries (the
// outbox's Token hook). ErrInvalid for a delivery in another mode.
func (s *Service) TokenText(d Delivery) (string, error) {
	if d.Mode != ModeToken {
		return "", fmt.Errorf("%w: delivery %q is in %s mode, not token", ErrInvalid, d.ID, d.Mode)
	}
	priv, err := s.tokenKey(d.Realm)
	if err != nil {
		return "", err
	}
	return deliverytoken.Sign(priv, deliverytoken.Claims{Realm: d.Realm, Delivery: d.ID, Version: int(d.CodeVersion),
		Device: d.Device, NotAfter: d.NotAfter})
}
