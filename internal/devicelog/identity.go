package devicelog

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keys"
)

// IdentityFile is the name of the device key file inside a data directory.
const IdentityFile = "device.key"

// Identity is a device's Ed25519 key pair: the private key signs its event
// log; the public key (named by KeyID) is what the server registers.
type Identity struct {
	Private ed25519.PrivateKey
	Public  ed25519.PublicKey
	KeyID   string
}

// ErrBadIdentity means the device key file exists but cannot be used.
var ErrBadIdentity = errors.New("devicelog: unusable device key file")

// LoadOrCreateIdentity returns the identity kept in dir/device.key, creating
// dir (mode 0700) and a new key pair from crypto/rand on first use. The file
// is a PKCS#8 "PRIVATE KEY" PEM block (openssl pkey reads it), mode 0600; a
// file readable by group or others is refused, as ssh does, because the key
// is what makes the device's log evidence. The file is never overwritten.
func LoadOrCreateIdentity(dir string) (*Identity, error) {
	path := filepath.Join(dir, IdentityFile)
	id, err := loadIdentity(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return id, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devicelog: creating %s: %w", dir, err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devicelog: generating a device key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("devicelog: encoding the device key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := datadir.WriteFileExclusive(path, data, 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process created it first: use theirs
			return loadIdentity(path)
		}
		return nil, fmt.Errorf("devicelog: writing %s: %w", path, err)
	}
	return newIdentity(priv), nil
}

func newIdentity(priv ed25519.PrivateKey) *Identity {
	pub := priv.Public().(ed25519.PublicKey)
	return &Identity{Private: priv, Public: pub, KeyID: keys.KeyID(pub)}
}

func loadIdentity(path string) (*Identity, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run 'chmod 600 %s'", ErrBadIdentity, path, st.Mode().Perm(), path)
	}
	data, err := datadir.ReadFileLimit(path, maxIdentityFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	id, err := parseIdentity(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadIdentity, path, err)
	}
	return id, nil
}

// maxIdentityFile bounds the key file; a real one is 119 bytes.
const maxIdentityFile = 4096

// parseIdentity decodes a device key file: one PKCS#8 Ed25519 PRIVATE KEY
// PEM block without headers, nothing after it but whitespace.
func parseIdentity(data []byte) (*Identity, error) {
	if len(data) > maxIdentityFile {
		return nil, errors.New("larger than 4 KiB")
	}
	b, rest := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" || len(b.Headers) != 0 {
		return nil, errors.New("no PRIVATE KEY block")
	}
	for _, c := range rest {
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			return nil, errors.New("trailing data after the key")
		}
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T key, not Ed25519", k)
	}
	return newIdentity(priv), nil
}
