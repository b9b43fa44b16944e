package online

import (
	"crypto/rand"
	"fmt"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/secretbox"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/otp"
)

// Seeds produces and recovers token seeds. A derived seed is
// HKDF(master, token-seed, epoch, realm, user, token id) and is never stored;
// a random seed is stored AES-256-GCM encrypted under a data key derived from
// the master key, bound to its row. Either way a copied database alone
// reveals no seed.
type Seeds struct {
	master *keys.Deriver // HKDF-Extract of the master key, done once
	box    *secretbox.Box
}

// NewSeeds returns the seed source for master.
func NewSeeds(m *keys.Master) *Seeds {
	return &Seeds{master: keys.NewDeriver(m.Bytes()), box: secretbox.New(m, 0, "token-seed")}
}

// SeedLen is the seed length for an algorithm: its HMAC output size, as RFC 4226 and 6238 recommend.
func SeedLen(a otp.Algorithm) int {
	switch a {
	case otp.SHA256:
		return 32
	case otp.SHA512:
		return 64
	}
	return 20
}

func seedAD(t *store.Token) []byte {
	return []byte(t.Realm + "\x00" + t.UserID + "\x00" + t.ID)
}

// Assign gives t its seed (derived or random, per t.SeedMode) and returns it.
func (s *Seeds) Assign(t *store.Token, alg otp.Algorithm) ([]byte, error) {
	switch t.SeedMode {
	case store.SeedDerived:
		return s.master.Derive(SeedLen(alg), keys.PurposeTokenSeed, t.Epoch, t.Realm, t.UserID, t.ID), nil
	case store.SeedRandom:
		seed := make([]byte, SeedLen(alg))
		if _, err := rand.Read(seed); err != nil {
			return nil, err
		}
		ct, err := s.box.Seal(seed, seedAD(t))
		if err != nil {
			return nil, err
		}
		t.SeedCiphertext = ct
		return seed, nil
	}
	return nil, fmt.Errorf("online: unknown seed mode %q", t.SeedMode)
}

// Seed recovers a stored token's seed.
func (s *Seeds) Seed(t store.Token) ([]byte, error) {
	p, err := Params(t)
	if err != nil {
		return nil, err
	}
	switch t.SeedMode {
	case store.SeedDerived:
		return s.master.Derive(SeedLen(p.Algorithm), keys.PurposeTokenSeed, t.Epoch, t.Realm, t.UserID, t.ID), nil
	case store.SeedRandom:
		seed, err := s.box.Open(t.SeedCiphertext, seedAD(&t))
		if err != nil {
			return nil, fmt.Errorf("token %s: %w", t.ID, err)
		}
		return seed, nil
	}
	return nil, fmt.Errorf("online: token %s has unknown seed mode %q", t.ID, t.SeedMode)
}

// Params converts a stored token's parameters.
func Params(t store.Token) (otp.Params, error) {
	typ, err := otp.ParseType(t.Type)
	if err != nil {
		return otp.Params{}, err
	}
	alg, err := otp.ParseAlgorithm(t.Algorithm)
	if err != nil {
		return otp.Params{}, err
	}
	p := otp.Params{Type: typ, Algorithm: alg, Digits: t.Digits}
	if typ == otp.TypeTOTP {
		p.Period = uint64(t.Period)
	}
	return p, p.Validate()
}
