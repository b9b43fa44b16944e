// Package keyexport makes the passphrase-sealed key files that carry a TOTP
// secret to a person (seed 000's encrypted key file on a USB drive), and is
// the service behind `outpost keys export` and POST /v1/keys/subject-export:
// [Exporter.ExportSubject] derives a subject's key from the master key,
// seals it, and records key.export in the audit log.
//
//	x := &keyexport.Exporter{Master: m, Audit: al}
//	f, err := x.ExportSubject(ctx, "api:cli_1", "tech-042", 0, passphrase)
//	// f.Data is the key file; 'outpost keys inspect' opens it.
//
// Site credentials sealed into key files (internal/siteissue) use [SealTOTP]
// and [CheckPassphrase] too, so that every key file has one format and one
// set of passphrase rules. The file format itself is keys.Seal's
// (docs/keys.md).
package keyexport

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/otp"
)

// Errors callers branch on.
var (
	// ErrInvalid: a subject or passphrase is out of bounds.
	ErrInvalid = errors.New("keyexport: invalid request")
	// ErrMasterPassphrase: the file's passphrase is the master key's (known
	// only where the master key was opened with it: the CLI's local mode).
	ErrMasterPassphrase = errors.New("keyexport: the file's passphrase is the master key's passphrase")
)

// Limits.
const (
	// MaxSubjectLen bounds a subject id, in bytes (an id: ident.MaxLen).
	MaxSubjectLen = ident.MaxLen
	// MaxPassphraseLen bounds a file passphrase, in bytes.
	MaxPassphraseLen = 4096
	// SubjectKeySize is the length of a subject key: a 160-bit TOTP seed.
	SubjectKeySize = 20
)

// SubjectTOTP are the TOTP parameters subject key files carry.
var SubjectTOTP = otp.DefaultTOTP

// Exporter exports subject keys.
type Exporter struct {
	Master *keys.Master
	Audit  *audit.Log
	// KDF is the files' argon2id cost; the zero value is keys.DefaultKDF.
	KDF keys.KDFParams
	// Issuer names the issuer in authenticator apps; "" is "Outpost".
	Issuer string
	// MasterPassphrase, when set, is refused as a file passphrase (the CLI's
	// local mode sets it; a server does not know it).
	MasterPassphrase []byte
	Now              func() time.Time
}

// File is an exported key file and what it holds, without the secret.
type File struct {
	Data        []byte `json:"key_file"`
	Purpose     string `json:"purpose"`
	Subject     string `json:"subject"`
	Epoch       uint32 `json:"epoch"`
	Fingerprint string `json:"fingerprint"`
}

// ExportSubject derives subject's key of epoch (HKDF of the master key,
// label subject-key), seals it under passphrase with its TOTP parameters,
// and records key.export (subject, epoch, fingerprint) in the audit log
// before returning the file.
func (x *Exporter) ExportSubject(ctx context.Context, actor, subject string, epoch uint32, passphrase []byte) (File, error) {
	if err := CheckSubject(subject); err != nil {
		return File{}, err
	}
	if err := CheckPassphrase(passphrase, x.MasterPassphrase); err != nil {
		return File{}, err
	}
	key := x.Master.Derive(SubjectKeySize, keys.PurposeSubject, epoch, subject)
	defer clear(key)
	issuer := x.Issuer
	if issuer == "" {
		issuer = "Outpost"
	}
	kdf := x.KDF
	if kdf == (keys.KDFParams{}) {
		kdf = keys.DefaultKDF
	}
	s := keys.Sealed{Purpose: string(keys.PurposeSubject), Subject: subject, Epoch: epoch, Created: clock.Or(x.Now)().UTC()}
	data, err := SealTOTP(passphrase, kdf, s, SubjectTOTP, issuer, key)
	if err != nil {
		return File{}, err
	}
	f := File{Data: data, Purpose: s.Purpose, Subject: subject, Epoch: epoch, Fingerprint: Fingerprint(key)}
	if err := x.Audit.Record(ctx, audit.KeyExport, actor, subject, map[string]any{"epoch": epoch, "fingerprint": f.Fingerprint}); err != nil {
		return File{}, err
	}
	return f, nil
}

// CheckSubject checks a subject id with the rule for ids (ident.Check):
// 1 to MaxSubjectLen bytes of UTF-8 without control characters.
func CheckSubject(subject string) error {
	if err := ident.Check("the subject", subject); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// CheckPassphrase applies the rules of a key file's passphrase: at least
// keys.MinPassphraseLen (keys.ErrWeakPassphrase) and at most
// MaxPassphraseLen bytes, and not master, the master key's passphrase,
// when that is known (compared in constant time).
func CheckPassphrase(pass, master []byte) error {
	switch {
	case len(pass) < keys.MinPassphraseLen:
		return fmt.Errorf("%w: use at least %d characters", keys.ErrWeakPassphrase, keys.MinPassphraseLen)
	case len(pass) > MaxPassphraseLen:
		return fmt.Errorf("%w: a passphrase has at most %d bytes", ErrInvalid, MaxPassphraseLen)
	case len(master) > 0 && subtle.ConstantTimeCompare(pass, master) == 1:
		return fmt.Errorf("%w: choose another one (the file is given to someone else)", ErrMasterPassphrase)
	}
	return nil
}

// SealTOTP seals a TOTP secret into a key file: s (purpose, subject,
// epoch, creation time, extra meta) with p's parameters and the issuer
// added to its authenticated meta, so that 'outpost keys inspect' and
// [TOTPFromMeta] can turn it back into an otpauth URI.
func SealTOTP(passphrase []byte, kdf keys.KDFParams, s keys.Sealed, p otp.Params, issuer string, secret []byte) ([]byte, error) {
	meta := TOTPMeta(p, issuer)
	maps.Copy(meta, s.Meta)
	s.Meta = meta
	return keys.Seal(passphrase, kdf, s, secret)
}

// TOTPMeta is the meta of a key file holding an OTP secret with parameters p.
func TOTPMeta(p otp.Params, issuer string) map[string]string {
	return map[string]string{"type": p.Type.String(), "algorithm": p.Algorithm.String(),
		"digits": strconv.Itoa(p.Digits), "period": strconv.FormatUint(p.Period, 10), "issuer": issuer}
}

// TOTPFromMeta reads back what TOTPMeta wrote, validating it.
func TOTPFromMeta(meta map[string]string) (otp.Params, error) {
	var p otp.Params
	var err error
	if p.Type, err = otp.ParseType(meta["type"]); err != nil {
		return p, err
	}
	if p.Algorithm, err = otp.ParseAlgorithm(meta["algorithm"]); err != nil {
		return p, err
	}
	if p.Digits, err = strconv.Atoi(meta["digits"]); err != nil {
		return p, fmt.Errorf("digits %q: %w", meta["digits"], err)
	}
	if p.Type == otp.TypeTOTP {
		if p.Period, err = strconv.ParseUint(meta["period"], 10, 64); err != nil {
			return p, fmt.Errorf("period %q: %w", meta["period"], err)
		}
	}
	return p, p.Validate()
}

// Fingerprint names a secret without revealing it: the first 8 bytes of
// its SHA-256, in hex.
func Fingerprint(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:8])
}
