package courierproto

// TEMPORARY stand-ins for internal/codecheck and internal/deliverytoken,
// which another branch provides (codecheck-api.md). This file is deleted
// when they are merged; modes.go then calls them.

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/argon2"
)

type standinHash struct {
	Salt []byte `json:"salt"`
	Sum  []byte `json:"sum"`
	Bits uint8  `json:"bits,omitempty"`
}

func standinKDF(code string, b Binding, salt []byte) []byte {
	in := fmt.Appendf(nil, "%s\x00%s\x00%d\x00%s\x00%s", b.Realm, b.Delivery, b.Version, b.Device, code)
	return argon2.IDKey(in, salt, 1, 8*1024, 1, 32)
}

func makeStandin(code string, b Binding, bits uint8) (json.RawMessage, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	sum := standinKDF(code, b, salt)
	if bits > 0 {
		v := binary.BigEndian.Uint32(sum) >> (32 - bits)
		sum = binary.BigEndian.AppendUint32(nil, v)
	}
	return json.Marshal(standinHash{Salt: salt, Sum: sum, Bits: bits})
}

func matchStandin(data json.RawMessage, code string, b Binding, bits uint8) (bool, error) {
	var h standinHash
	if err := decodeStrict(data, &h); err != nil || len(h.Salt) != 16 || h.Bits != bits {
		return false, bad("mode data")
	}
	sum := standinKDF(code, b, h.Salt)
	if bits > 0 {
		sum = binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(sum)>>(32-bits))
	}
	return subtle.ConstantTimeCompare(sum, h.Sum) == 1, nil
}

func makeHash(code string, b Binding) (json.RawMessage, error) { return makeStandin(code, b, 0) }
func matchHash(d json.RawMessage, code string, b Binding) (bool, error) {
	return matchStandin(d, code, b, 0)
}
func makeFingerprint(code string, b Binding) (json.RawMessage, error) {
	return makeStandin(code, b, 10)
}
func matchFingerprint(d json.RawMessage, code string, b Binding) (bool, error) {
	return matchStandin(d, code, b, 10)
}

func standinInfo(b Binding) []byte {
	return fmt.Appendf(nil, "outpost-standin-seal\x00%s\x00%s\x00%d\x00%s", b.Realm, b.Delivery, b.Version, b.Device)
}

func sealCode(pub []byte, b Binding, code string) ([]byte, error) {
	k, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, bad("seal key")
	}
	pk, err := hpke.NewDHKEMPublicKey(k)
	if err != nil {
		return nil, err
	}
	return hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), standinInfo(b), []byte(code))
}

// StandinOpen opens a sealed code (the server's side of the stand-in).
func StandinOpen(priv []byte, b Binding, sealed []byte) (string, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return "", err
	}
	sk, err := hpke.NewDHKEMPrivateKey(k)
	if err != nil {
		return "", err
	}
	code, err := hpke.Open(sk, hpke.HKDFSHA256(), hpke.AES256GCM(), standinInfo(b), sealed)
	return string(code), err
}

func verifyToken(ed25519.PublicKey, string, time.Time, Binding) error {
	return fmt.Errorf("%w: the token mode comes with internal/deliverytoken", ErrModeUnavailable)
}

var _ = errors.New
