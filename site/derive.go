package site

import (
	"fmt"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/otp"
)

// Sizes of the keys of the construction.
const (
	ScopeKeySize = keys.Size // 32
	SeedSize     = 20        // a SHA1 TOTP secret, as RFC 4226 recommends
)

// TechnicianSeed derives technician tech's TOTP secret from a scope key:
//
//	keys.Derive(scopeKey, 20, keys.PurposeTechnician, 0, tech)
//
// HKDF-SHA256 with Outpost's fixed salt and the info string
// "outpost/v1" || u16 len || "technician-seed" || u32 0 || u16 len || tech.
// Domain separation: the purpose label differs from every other Outpost key
// ("scope-key" for the scope key itself, "token-seed" for online tokens), so
// no technician seed can equal another kind of key even under the same
// secret; the length prefixes make (purpose, epoch, tech) unambiguous; the
// epoch is already in the scope key, so it is 0 here. The scope key is 32
// uniformly random-looking bytes, which is what HKDF's extract step needs.
//
// It panics if scopeKey is not ScopeKeySize bytes (a programming error:
// keys come from a verified package or the server's master key).
func TechnicianSeed(scopeKey []byte, tech string) []byte {
	if len(scopeKey) != ScopeKeySize {
		panic("site: scope key must be 32 bytes")
	}
	return deriverFor(scopeKey).Derive(SeedSize, keys.PurposeTechnician, 0, tech)
}

// derivers caches one keys.Deriver per scope key (a site holds a handful),
// so that checking a technician costs one HMAC for the derivation, not three.
var derivers sync.Map

func deriverFor(scopeKey []byte) *keys.Deriver {
	if d, ok := derivers.Load(string(scopeKey)); ok {
		return d.(*keys.Deriver)
	}
	d := keys.NewDeriver(scopeKey)
	n := 0
	derivers.Range(func(_, _ any) bool { n++; return n < 256 })
	if n >= 256 { // bound the cache: forget everything rather than grow without limit
		derivers.Clear()
	}
	derivers.Store(string(scopeKey), d)
	return d
}

// CheckCode is the pure check, with no state: it derives tech's seed from
// scopeKey and verifies code against the steps within p.Window of now. It
// returns the matching step, or an error wrapping otp.ErrMalformedCode or
// otp.ErrNoMatch. One use per code, lockout, revocation and epochs are the
// caller's job ([Site.Verify] does all of them).
func CheckCode(scopeKey []byte, p Policy, tech, code string, now time.Time) (uint64, error) {
	if err := CheckTechID(tech); err != nil {
		return 0, err
	}
	return p.OTP().Verify(TechnicianSeed(scopeKey, tech), code, now, otp.Window{Back: p.Window, Forward: p.Window})
}

// Epoch is one key period of a scope: the scope key of epoch N is used for
// codes from Start to End (plus the policy's Overlap either side).
type Epoch struct {
	N     uint32    `json:"n"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Open reports whether the epoch's key is accepted at now: from
// Start-overlap (inclusive) to End+overlap (exclusive).
func (e Epoch) Open(now time.Time, overlap time.Duration) bool {
	return !now.Before(e.Start.Add(-overlap)) && now.Before(e.End.Add(overlap))
}

func (e Epoch) String() string {
	return fmt.Sprintf("epoch %d (%s to %s)", e.N, e.Start.UTC().Format(time.RFC3339), e.End.UTC().Format(time.RFC3339))
}
