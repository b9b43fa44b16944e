// Package site is Outpost's site verifier: it checks the TOTP codes of any
// number of technicians at a site with no network, from one scope key per
// epoch and no per-technician data (seed 000, "diversified keys"). Other Go
// programs embed it; `outpost site …` is a thin shell around it.
//
// # The common case
//
// A site is a data directory (site.db, an embedded SQLite database, and
// device.key, the site's own Ed25519 key that signs its log). Install the
// provisioning package the server made for this site once, then verify:
//
//	s, err := site.Init(ctx, dir, site.InitConfig{SiteID: "cab-17", ServerKey: pub, Package: pkg, Passphrase: pass})
//	s, err := site.Open(ctx, dir)              // later runs
//	d, err := s.Verify(ctx, "tech-042", "123456")
//	switch {
//	case err == nil:                           // accepted: d.Epoch, d.Step
//	case errors.Is(err, site.ErrLocked):       // locked out, retry after d.RetryAt
//	case errors.Is(err, site.ErrRefused):      // wrong, replayed, revoked, expired...
//	}
//
// [Site.Update] installs a newer revocation list or package (the file says
// which), [Site.Status] shows what is installed, and [Site.Log] returns the
// log of decisions to ship to the server, signed with [Site.DevicePublicKey]'s
// key. docs/sites.md is the user's guide.
//
// [Site.Verify] checks, in one SQLite transaction: the site clock against
// its high-water mark; the site-wide and the technician's failure budgets;
// which epochs are open; the revocation list; the code within the policy's
// window for every open epoch; one use per step per technician; and it
// appends the decision to the signed, hash-chained log in the same
// transaction. [CheckCode] is the pure part (derive, then TOTP) for callers
// that hold their own state.
//
// # Keys
//
// The server derives, for scope S (a site or a group of sites) and epoch e,
//
//	scope key  = HKDF-SHA256(master, purpose "scope-key", epoch e, context S)              32 bytes
//	tech seed  = HKDF-SHA256(scope key, purpose "technician-seed", epoch 0, context tech)  20 bytes
//
// with internal/keys.Derive, whose info string length-prefixes the purpose,
// the epoch and every context element ([TechnicianSeed], the one
// implementation, for the issuer and the site). A site holds the scope keys
// of the current and next epoch only: a stolen site exposes its own scope
// for those two epochs, never the master key or another scope. The
// technician's seed is an ordinary TOTP secret (SHA1, 20 bytes) that any
// authenticator app reads from an otpauth URI.
//
// Packages and revocation lists are signed artifacts whose format is
// internal/sitewire's; the server side that makes them is internal/siteissue.
package site

import (
	"errors"

	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/sitewire"
)

// Errors callers branch on. Every refusal of Verify wraps ErrRefused and,
// where it applies, one of the more precise errors below; every lockout
// wraps ErrLocked.
var (
	// ErrRefused: the code was not accepted (exit code 3 in the CLI).
	ErrRefused = errors.New("site: code refused")
	// ErrLocked: too many failed codes, for this technician or the whole
	// site; the Decision says until when (exit code 4 in the CLI).
	ErrLocked = errors.New("site: locked after too many failed codes")

	ErrWrongCode = errors.New("the code does not match")
	ErrReplayed  = errors.New("this code (or a later one) was already used at this site")
	ErrRevoked   = errors.New("the technician's credentials are revoked")
	ErrClockBack = errors.New("the site clock is behind the latest time this site has seen")
	ErrNoEpoch   = errors.New("no epoch of the installed package is open at the site's time")

	// ErrBadID: a technician, site or scope id is empty, too long or has
	// characters outside the allowed set. Nothing is recorded.
	ErrBadID = sitewire.ErrBadID

	ErrNotInitialised     = errors.New("site: data directory is not initialised")
	ErrAlreadyInitialised = errors.New("site: data directory is already initialised")
	// ErrBadPackage: a package or revocation list is malformed, for another
	// site or scope, expired, or cannot be decrypted. It wraps the
	// envelope's error where there is one (a bad signature, an unknown key,
	// expiry).
	ErrBadPackage = sitewire.ErrBadPackage
	// ErrNotNewer: the file is older than (or the same as) what is installed.
	ErrNotNewer = errors.New("site: not newer than what is installed")
	// ErrCorrupt: the site database fails a consistency check.
	ErrCorrupt = errors.New("site: database is corrupt or was altered")
)

// Limits of ids (internal/ident's).
const (
	MaxTechIDLen = ident.MaxTechLen
	MaxNameLen   = ident.MaxNameLen
)

// CheckTechID reports whether id is a valid technician id: 1 to 128
// printable ASCII characters, no spaces. The id is used byte for byte in
// the derivation, so "Tech-1" and "tech-1" are different technicians; a
// restricted alphabet leaves no room for look-alike Unicode forms.
func CheckTechID(id string) error { return sitewire.CheckTechID(id) }

// CheckName reports whether name is a valid site or scope id: 1 to 64
// characters from A-Z a-z 0-9 . _ -, starting with a letter or digit.
func CheckName(kind, name string) error { return sitewire.CheckName(kind, name) }
