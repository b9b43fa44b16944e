// Package device is the device side of onboarding: the key pair a device
// makes for itself, and the label (a QR code) that carries its public key
// from the factory to the field staff who vouch for it. Nothing on the
// label is secret.
//
// Generate a key once, on the device, and keep it in a file only the
// agent reads ([WriteKeyFile] refuses to overwrite an existing key):
//
//	key, err := device.GenerateKey(device.P256) // or device.Ed25519
//	err = device.WriteKeyFile("/var/lib/agent/device.key", key)
//
// Make the label from the serial, the model and the public key:
//
//	l, err := device.NewLabel("SN-0042", "gw-100", key.Public())
//	payload, err := l.Payload()    // "OPD:..." for the QR code
//	png, err := l.PNG(0)            // the printed label
//	text, err := l.Terminal()       // the same code for a terminal
//	fmt.Println(l.Fallback())       // "SN-0042 ABCD-EFGH-...": for humans
//
// Whoever scans the label decodes it:
//
//	l, err := device.DecodeLabel(payload)
//
// DecodeLabel returns [ErrMalformed], [ErrChecksum] or [ErrVersion] (test
// with errors.Is) and never accepts a payload that does not encode back to
// the same text.
//
// # The payload
//
// The text is "OPD:" followed by the Base45 (RFC 9285) encoding of
//
//	version (1) | key type (1) | serial len (1) serial | model len (1) model |
//	key len (1) key | checksum (4)
//
// where the key is a compressed P-256 point (33 bytes) or an Ed25519 key
// (32 bytes) and the checksum is the first 4 bytes of SHA-256 over
// everything before it. Base45 keeps the QR code in alphanumeric mode; the
// version lives in the payload so a newer label is told apart from a
// damaged one. The serial and the model follow Outpost's name rule (1 to
// 64 characters from A-Z a-z 0-9 . _ -). The checksum catches misreads
// and typing mistakes, not forgery: the key is trusted because staff
// vouched for the device that carries it, and the device later proves it
// holds the private key.
package device

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// KeyType is the kind of a device key, as the label records it.
type KeyType byte

// Key types. P256 is the default: what secure elements and TPMs hold.
const (
	P256    KeyType = 1
	Ed25519 KeyType = 2
)

func (t KeyType) String() string {
	switch t {
	case P256:
		return "p256"
	case Ed25519:
		return "ed25519"
	}
	return fmt.Sprintf("KeyType(%d)", byte(t))
}

// ParseKeyType returns the key type named "p256" or "ed25519".
func ParseKeyType(s string) (KeyType, error) {
	switch s {
	case "p256", "":
		return P256, nil
	case "ed25519":
		return Ed25519, nil
	}
	return 0, fmt.Errorf("device: key type %q: use p256 or ed25519", s)
}

// GenerateKey makes a new key pair of type t from crypto/rand.
func GenerateKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case P256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("device: unknown key type %v", t)
}

// WriteKeyFile writes key to path as a PKCS#8 PEM file readable by its
// owner only (0600). It never overwrites: if path exists it returns an
// error wrapping fs.ErrExist, since replacing a device key orphans its
// label.
func WriteKeyFile(path string, key crypto.Signer) error {
	if _, err := keyType(key.Public()); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("device: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("device: key file: %w (a device key is never replaced; remove it first only if the label is destroyed too)", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("device: writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("device: writing %s: %w", path, err)
	}
	return f.Close()
}

// ReadKeyFile reads a key written by WriteKeyFile.
func ReadKeyFile(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("device: %s holds no PKCS#8 PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("device: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("device: %s: unsupported key", path)
	}
	if _, err := keyType(s.Public()); err != nil {
		return nil, fmt.Errorf("device: %s: %w", path, err)
	}
	return s, nil
}

// keyType returns the label's key type of pub and its encoding on the
// label: a compressed P-256 point or the 32 bytes of an Ed25519 key.
func keyType(pub crypto.PublicKey) (KeyType, error) {
	_, t, err := encodeKey(pub)
	return t, err
}

func encodeKey(pub crypto.PublicKey) ([]byte, KeyType, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, 0, errors.New("device: only P-256 ECDSA keys are supported")
		}
		e, err := k.ECDH()
		if err != nil {
			return nil, 0, fmt.Errorf("device: %w", err)
		}
		raw := e.Bytes() // uncompressed: 0x04 | X | Y
		c := make([]byte, 33)
		c[0] = 2 | raw[64]&1
		copy(c[1:], raw[1:33])
		return c, P256, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return nil, 0, errors.New("device: bad Ed25519 key size")
		}
		return append([]byte(nil), k...), Ed25519, nil
	}
	return nil, 0, fmt.Errorf("device: unsupported key type %T (use P-256 ECDSA or Ed25519)", pub)
}

func decodeKey(t KeyType, b []byte) (crypto.PublicKey, error) {
	switch t {
	case P256:
		if len(b) != 33 {
			return nil, errors.New("P-256 key is not 33 bytes")
		}
		x, y := elliptic.UnmarshalCompressed(elliptic.P256(), b)
		if x == nil {
			return nil, errors.New("not a P-256 point")
		}
		k := &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}
		if _, err := k.ECDH(); err != nil { // rejects the point at infinity and off-curve points
			return nil, err
		}
		return k, nil
	case Ed25519:
		if len(b) != ed25519.PublicKeySize {
			return nil, errors.New("Ed25519 key is not 32 bytes")
		}
		return ed25519.PublicKey(append([]byte(nil), b...)), nil
	}
	return nil, fmt.Errorf("unknown key type %d", byte(t))
}
