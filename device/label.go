package device

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"

	"github.com/outpost-auth/outpost/internal/base45"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/qr"
)

// Prefix starts every label payload.
const Prefix = "OPD:"

// Version is the payload version this package writes and reads.
const Version = 1

// Label bounds. The serial and the model follow ident.CheckName, whose
// limit is 64 characters; MaxPayload is the longest payload text.
const (
	maxField    = ident.MaxNameLen
	maxKey      = 33
	checksumLen = 4
	maxBinary   = 2 + 1 + maxField + 1 + maxField + 1 + maxKey + checksumLen
	MaxPayload  = len(Prefix) + (maxBinary/2*3 + maxBinary%2*2)
)

// Errors of DecodeLabel; test with errors.Is.
var (
	// ErrMalformed: not a label payload (wrong prefix, bad Base45,
	// truncated, oversize, a field out of bounds, trailing data, a bad key).
	ErrMalformed = errors.New("device: malformed label")
	// ErrChecksum: the payload's checksum does not match (a misread or a
	// typing mistake).
	ErrChecksum = errors.New("device: label checksum mismatch")
	// ErrVersion: a payload version this package does not know.
	ErrVersion = errors.New("device: unknown label version")
)

// Label is what a device's QR label says: its serial, its model and its
// public key.
type Label struct {
	Serial    string
	Model     string
	PublicKey crypto.PublicKey // *ecdsa.PublicKey (P-256) or ed25519.PublicKey
}

// NewLabel checks serial, model and pub and returns their label.
func NewLabel(serial, model string, pub crypto.PublicKey) (*Label, error) {
	l := &Label{Serial: serial, Model: model, PublicKey: pub}
	if _, err := l.binary(); err != nil {
		return nil, err
	}
	return l, nil
}

// KeyType returns the type of the label's key.
func (l *Label) KeyType() KeyType {
	t, _ := keyType(l.PublicKey)
	return t
}

func (l *Label) binary() ([]byte, error) {
	if err := ident.CheckName("serial", l.Serial); err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	if err := ident.CheckName("model", l.Model); err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	key, t, err := encodeKey(l.PublicKey)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, maxBinary)
	b = append(b, Version, byte(t))
	b = append(b, byte(len(l.Serial)))
	b = append(b, l.Serial...)
	b = append(b, byte(len(l.Model)))
	b = append(b, l.Model...)
	b = append(b, byte(len(key)))
	b = append(b, key...)
	sum := sha256.Sum256(b)
	return append(b, sum[:checksumLen]...), nil
}

// Payload returns the text of the label's QR code: Prefix and Base45.
func (l *Label) Payload() (string, error) {
	b, err := l.binary()
	if err != nil {
		return "", err
	}
	return Prefix + base45.Encode(b), nil
}

// DecodeLabel decodes a payload made by Payload. It returns ErrMalformed,
// ErrChecksum or ErrVersion, wrapped with the reason.
func DecodeLabel(payload string) (*Label, error) {
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("%w: %d characters, at most %d", ErrMalformed, len(payload), MaxPayload)
	}
	rest, ok := strings.CutPrefix(payload, Prefix)
	if !ok {
		return nil, fmt.Errorf("%w: does not start with %q", ErrMalformed, Prefix)
	}
	b, err := base45.Decode(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: not Base45", ErrMalformed)
	}
	if len(b) < 2+checksumLen {
		return nil, fmt.Errorf("%w: truncated (%d bytes)", ErrMalformed, len(b))
	}
	body, sum := b[:len(b)-checksumLen], b[len(b)-checksumLen:]
	want := sha256.Sum256(body)
	if !bytes.Equal(sum, want[:checksumLen]) {
		return nil, ErrChecksum
	}
	if body[0] != Version {
		return nil, fmt.Errorf("%w: version %d (this program reads version %d; update it)", ErrVersion, body[0], Version)
	}
	t := KeyType(body[1])
	r := reader{b: body[2:]}
	serial := r.field(maxField)
	model := r.field(maxField)
	key := r.field(maxKey)
	if r.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes of trailing data", ErrMalformed, len(r.b))
	}
	pub, err := decodeKey(t, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	l := &Label{Serial: string(serial), Model: string(model), PublicKey: pub}
	// Whatever is accepted must encode back to the same text (the rules on
	// serial and model, the key's canonical form).
	again, err := l.Payload()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if again != payload {
		return nil, fmt.Errorf("%w: not in canonical form", ErrMalformed)
	}
	return l, nil
}

// reader reads length-prefixed fields, checking each bound before slicing.
type reader struct {
	b   []byte
	err error
}

func (r *reader) field(max int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < 1 {
		r.err = errors.New("truncated")
		return nil
	}
	n := int(r.b[0])
	if n == 0 || n > max {
		r.err = fmt.Errorf("field length %d outside 1 to %d", n, max)
		return nil
	}
	if len(r.b)-1 < n {
		r.err = errors.New("truncated")
		return nil
	}
	f := r.b[1 : 1+n]
	r.b = r.b[1+n:]
	return f
}

// Fingerprint returns 20 base32 characters in 5 groups of 4 ("ABCD-EFGH-
// IJKL-MNOP-QRST"): the first 100 bits of SHA-256 over the key's PKIX
// (SubjectPublicKeyInfo) encoding, the form a certificate request carries.
func Fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("device: %w", err)
	}
	sum := sha256.Sum256(der)
	s := base32.StdEncoding.EncodeToString(sum[:13])[:20]
	return s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20], nil
}

// Fallback returns the line printed under the QR code for a human to read
// or type when no camera works: the serial and the key's fingerprint.
func (l *Label) Fallback() (string, error) {
	fp, err := Fingerprint(l.PublicKey)
	if err != nil {
		return "", err
	}
	return l.Serial + " " + fp, nil
}

// PNG returns the label's QR code as a PNG, size pixels square (0 for
// qr.DefaultPNGSize).
func (l *Label) PNG(size int) ([]byte, error) {
	p, err := l.Payload()
	if err != nil {
		return nil, err
	}
	return qr.PNG(p, size)
}

// Terminal returns the label's QR code drawn for a terminal.
func (l *Label) Terminal() (string, error) {
	p, err := l.Payload()
	if err != nil {
		return "", err
	}
	return qr.Terminal(p)
}
