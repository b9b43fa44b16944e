package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/argon2"
)

// A sealed file is JSON: a header naming what the file holds and how its key is
// derived from a passphrase, and the AES-256-GCM ciphertext of the payload. The
// header is the GCM additional data, so changing any field of it (purpose,
// subject, KDF cost) breaks decryption just as a flipped ciphertext bit does.
//
// argon2id + AES-256-GCM was chosen over the age format to keep one KDF
// (argon2id, which the offline bundles use too) and one set of cost limits.

// Limits of sealed files.
const (
	// MaxSealedFileSize bounds a sealed file; real ones are under 2 KiB.
	MaxSealedFileSize = 64 << 10
	// MaxSealedPayload bounds the plaintext.
	MaxSealedPayload = 16 << 10
	// MinPassphraseLen is the shortest passphrase Seal accepts.
	MinPassphraseLen = 8
)

// KDF cost limits accepted when opening a file: a file cannot make Open spend
// more than ~1 GiB or 10 passes, nor accept a toy cost.
const (
	minKDFMemoryKiB = 8 << 10
	maxKDFMemoryKiB = 1 << 20
	maxKDFTime      = 10
	maxKDFThreads   = 16
)

// DefaultKDF is the argon2id cost Seal uses: RFC 9106's second recommended
// option (64 MiB, t=3) with 4 lanes. About 85 ms on a 2-core machine
// (docs/BENCHMARKS.md, "Keys").
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// KDFParams is the argon2id cost of a sealed file.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// Errors callers branch on.
var (
	// ErrWrongPassphrase: the passphrase is wrong or the file was altered; the
	// two cannot be told apart, by design.
	ErrWrongPassphrase = errors.New("keys: wrong passphrase, or the file was altered")
	// ErrMalformedFile: the file is not a sealed Outpost key file, or is truncated.
	ErrMalformedFile = errors.New("keys: not a valid Outpost sealed key file")
	// ErrWeakPassphrase: Seal refused a passphrase that is too short.
	ErrWeakPassphrase = errors.New("keys: passphrase too short")
)

// Sealed describes a sealed file's contents: everything but the payload.
// All of it is authenticated.
type Sealed struct {
	// Purpose says what the payload is: "master-key", "subject-key", ...
	Purpose string
	// Subject is the identity the payload belongs to, if any.
	Subject string
	// Epoch is the derivation epoch of the payload, if any.
	Epoch uint32
	// Meta holds further authenticated labels (issuer, algorithm, ...).
	Meta map[string]string
	// Created is when the file was written, from the caller's clock (this
	// package never reads the wall clock); a zero Created is written as is.
	Created time.Time
	// Unsealed is true for --dev-insecure-unsealed files: no passphrase, no protection.
	Unsealed bool
}

type sealedHeader struct {
	Format  string            `json:"format"`
	Version int               `json:"version"`
	Purpose string            `json:"purpose"`
	Subject string            `json:"subject,omitempty"`
	Epoch   uint32            `json:"epoch"`
	Meta    map[string]string `json:"meta,omitempty"`
	Created time.Time         `json:"created"`
	KDF     string            `json:"kdf"` // "argon2id" or "none"
	Params  *KDFParams        `json:"kdf_params,omitempty"`
	Salt    []byte            `json:"salt,omitempty"`
	Nonce   []byte            `json:"nonce,omitempty"`
}

type sealedFile struct {
	sealedHeader
	Ciphertext []byte `json:"ciphertext,omitempty"`
	Plaintext  []byte `json:"insecure_plaintext,omitempty"`
}

const sealedFormat = "outpost-sealed"

// Seal encrypts payload under passphrase with argon2id (cost kdf) and
// AES-256-GCM, and returns the file's bytes.
func Seal(passphrase []byte, kdf KDFParams, s Sealed, payload []byte) ([]byte, error) {
	if len(passphrase) < MinPassphraseLen {
		return nil, fmt.Errorf("%w: use at least %d characters", ErrWeakPassphrase, MinPassphraseLen)
	}
	if err := checkKDF(kdf); err != nil {
		return nil, err
	}
	if len(payload) > MaxSealedPayload {
		return nil, fmt.Errorf("keys: payload of %d bytes is larger than %d", len(payload), MaxSealedPayload)
	}
	h := header(s, "argon2id")
	h.Params = &kdf
	h.Salt = make([]byte, 16)
	h.Nonce = make([]byte, 12)
	if _, err := rand.Read(h.Salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(h.Nonce); err != nil {
		return nil, err
	}
	aead := sealAEAD(passphrase, h)
	f := sealedFile{sealedHeader: h, Ciphertext: aead.Seal(nil, h.Nonce, payload, aad(h))}
	return marshalFile(f)
}

// SealInsecure writes payload in the clear, marked as such: for demos only
// (--dev-insecure-unsealed). Open returns it with Sealed.Unsealed set.
func SealInsecure(s Sealed, payload []byte) ([]byte, error) {
	if len(payload) > MaxSealedPayload {
		return nil, fmt.Errorf("keys: payload of %d bytes is larger than %d", len(payload), MaxSealedPayload)
	}
	f := sealedFile{sealedHeader: header(s, "none"), Plaintext: payload}
	return marshalFile(f)
}

// Open decrypts a file written by Seal (or SealInsecure). The passphrase is
// ignored for an unsealed file; callers should warn loudly when
// Sealed.Unsealed is set. Sizes, KDF cost and trailing data are checked
// before any work is done, and an empty passphrase fails at once with
// ErrWrongPassphrase without running the KDF.
//
// Errors: ErrMalformedFile (not a sealed file, truncated, unknown version or
// field, trailing data, KDF cost outside the accepted range) or
// ErrWrongPassphrase (wrong passphrase, or any authenticated byte altered).
// Whitespace and JSON formatting are not authenticated, only the values:
// a sealed file that went through a CRLF conversion still opens.
func Open(passphrase []byte, data []byte) (Sealed, []byte, error) {
	if len(data) > MaxSealedFileSize {
		return Sealed{}, nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformedFile, MaxSealedFileSize)
	}
	var f sealedFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Sealed{}, nil, fmt.Errorf("%w: %v (is it truncated?)", ErrMalformedFile, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Sealed{}, nil, fmt.Errorf("%w: trailing data after the JSON object", ErrMalformedFile)
	}
	h := f.sealedHeader
	if h.Format != sealedFormat {
		return Sealed{}, nil, fmt.Errorf("%w: format is %q, want %q", ErrMalformedFile, h.Format, sealedFormat)
	}
	if h.Version != 1 {
		return Sealed{}, nil, fmt.Errorf("%w: version %d is not supported by this Outpost (upgrade it)", ErrMalformedFile, h.Version)
	}
	s := Sealed{Purpose: h.Purpose, Subject: h.Subject, Epoch: h.Epoch, Meta: h.Meta, Created: h.Created}
	if len(s.Meta) == 0 {
		// "meta":{} and no meta at all authenticate the same way; report them the same way.
		s.Meta = nil
	}
	switch h.KDF {
	case "none":
		if f.Ciphertext != nil || h.Params != nil || h.Salt != nil || h.Nonce != nil {
			return Sealed{}, nil, fmt.Errorf("%w: unsealed file carries encryption fields", ErrMalformedFile)
		}
		if len(f.Plaintext) > MaxSealedPayload {
			return Sealed{}, nil, fmt.Errorf("%w: payload of %d bytes is larger than %d", ErrMalformedFile, len(f.Plaintext), MaxSealedPayload)
		}
		s.Unsealed = true
		return s, f.Plaintext, nil
	case "argon2id":
	default:
		return Sealed{}, nil, fmt.Errorf("%w: unknown kdf %q", ErrMalformedFile, h.KDF)
	}
	if h.Params == nil || len(h.Salt) != 16 || len(h.Nonce) != 12 || f.Plaintext != nil {
		return Sealed{}, nil, fmt.Errorf("%w: missing or malformed kdf_params, salt or nonce", ErrMalformedFile)
	}
	if err := checkKDF(*h.Params); err != nil {
		return Sealed{}, nil, fmt.Errorf("%w: %v", ErrMalformedFile, err)
	}
	if len(f.Ciphertext) < 16 || len(f.Ciphertext) > MaxSealedPayload+16 {
		return Sealed{}, nil, fmt.Errorf("%w: ciphertext length %d out of range", ErrMalformedFile, len(f.Ciphertext))
	}
	if len(passphrase) == 0 {
		// Seal never accepts an empty passphrase, so skip the KDF: this is
		// what lets callers try "is it unsealed?" without paying for argon2id.
		return Sealed{}, nil, fmt.Errorf("%w: no passphrase was given for a sealed file", ErrWrongPassphrase)
	}
	pt, err := sealAEAD(passphrase, h).Open(nil, h.Nonce, f.Ciphertext, aad(h))
	if err != nil {
		return Sealed{}, nil, ErrWrongPassphrase
	}
	return s, pt, nil
}

func header(s Sealed, kdf string) sealedHeader {
	created := s.Created
	return sealedHeader{Format: sealedFormat, Version: 1, Purpose: s.Purpose, Subject: s.Subject,
		Epoch: s.Epoch, Meta: s.Meta, Created: created.UTC().Truncate(time.Second), KDF: kdf}
}

func checkKDF(p KDFParams) error {
	if p.Time < 1 || p.Time > maxKDFTime || p.MemoryKiB < minKDFMemoryKiB || p.MemoryKiB > maxKDFMemoryKiB ||
		p.Threads < 1 || p.Threads > maxKDFThreads {
		return fmt.Errorf("keys: argon2id cost t=%d m=%d KiB p=%d is outside t=1..%d, m=%d..%d KiB, p=1..%d",
			p.Time, p.MemoryKiB, p.Threads, maxKDFTime, minKDFMemoryKiB, maxKDFMemoryKiB, maxKDFThreads)
	}
	return nil
}

func sealAEAD(passphrase []byte, h sealedHeader) cipher.AEAD {
	k := argon2.IDKey(passphrase, h.Salt, h.Params.Time, h.Params.MemoryKiB, h.Params.Threads, 32)
	block, err := aes.NewCipher(k)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// aad is the canonical header encoding: encoding/json writes struct fields in
// declaration order and map keys sorted, so it is deterministic.
func aad(h sealedHeader) []byte {
	b, err := json.Marshal(h)
	if err != nil {
		panic(err)
	}
	return b
}

func marshalFile(f sealedFile) ([]byte, error) {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
