package delivery

// TEMPORARY stand-ins for what the codemodes branch adds to this package
// (PublicKeys, ConfirmSealed: codecheck-api.md). Deleted at the merge;
// courier.go then calls them.

import (
	"context"
	"crypto/ecdh"
	"errors"

	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
)

func (s *Service) standinSealKey(realm string) (*ecdh.PrivateKey, error) {
	return ecdh.X25519().NewPrivateKey(s.Master.Derive(32, keys.Purpose("delivery-seal-standin"), 0, realm))
}

// pinnedKeys are the public keys a courier device pins for realm.
func (s *Service) pinnedKeys(realm string) (courierproto.Keys, error) {
	k, err := s.standinSealKey(realm)
	if err != nil {
		return courierproto.Keys{}, err
	}
	return courierproto.Keys{Seal: k.PublicKey().Bytes()}, nil
}

// errSealedWrong: the sealed code is not the delivery's code.
var errSealedWrong = errors.New("the sealed code is not the delivery's code")

// confirmSealed opens a fingerprint-mode receipt's sealed code and checks
// it against the delivery's code MAC.
func (s *Service) confirmSealed(_ context.Context, d store.Delivery, r courierproto.Receipt) error {
	k, err := s.standinSealKey(d.Realm)
	if err != nil {
		return err
	}
	code, err := courierproto.StandinOpen(k.Bytes(), r.Binding(), r.Sealed)
	if err != nil || !s.codeMatches(d, code) {
		return errSealedWrong
	}
	return nil
}
