package delivery

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/outpost-auth/outpost/internal/codecheck"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
)

// PublicKeys are what a courier device pins (in the route manifest) for a
// realm.
type PublicKeys struct {
	Token ed25519.PublicKey // verifies delivery tokens
	Seal  []byte            // HPKE public key the fingerprint mode seals entered codes to
}

// PublicKeys returns realm's public keys, derived from the master key
// (keys.PurposeDeliveryTokenSign and keys.PurposeDeliverySeal): the
// same master and realm always give the same keys, and no two realms share
// one. It errs on an invalid realm id or a service without a master key.
func (s *Service) PublicKeys(realm string) (PublicKeys, error) {
	tok, err := s.tokenKey(realm)
	if err != nil {
		return PublicKeys{}, err
	}
	_, seal, err := s.sealKeys(realm)
	if err != nil {
		return PublicKeys{}, err
	}
	return PublicKeys{Token: tok.Public().(ed25519.PublicKey), Seal: seal}, nil
}

// tokenKey is realm's delivery-token signing key.
func (s *Service) tokenKey(realm string) (ed25519.PrivateKey, error) {
	if err := s.checkRealmKey(realm); err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(s.Master.Derive(ed25519.SeedSize, keys.PurposeDeliveryTokenSign, 0, realm)), nil
}

// sealKeys is realm's HPKE key pair for sealed codes (private half for
// codecheck.Open, public half for devices).
func (s *Service) sealKeys(realm string) (priv, pub []byte, err error) {
	if err := s.checkRealmKey(realm); err != nil {
		return nil, nil, err
	}
	return codecheck.SealKeyPair(s.Master.Derive(32, keys.PurposeDeliverySeal, 0, realm))
}

func (s *Service) checkRealmKey(realm string) error {
	if s.Master == nil {
		return errors.New("delivery: service has no master key")
	}
	if err := ident.Check("realm", realm); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}
