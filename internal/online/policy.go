// Package online holds the rules of online verification, in one place: the
// windows a code may match in, one-time use, PIN + OTP, and the per-user
// failure counter with growing delay and lockout.
//
//	svc := &online.Service{Store: st, Seeds: online.NewSeeds(master), Policy: online.DefaultPolicy, Audit: al}
//	res, err := svc.Verify(ctx, realm, user, code, pin, actor) // res.TokenID, res.Matched
//
// [Service.Verify] checks a code. [Service.CreateUser], then [Service.Enrol]
// and [Service.Confirm], add a user and a token; [Service.Resync] realigns an
// HOTP token; [Service.SetPIN], [Service.ResetLockout], [Service.DeleteToken]
// and [Service.DeleteUser] manage them. Each change is written to the audit
// log. [Service.CheckPIN] and [Service.Login] are for issuing offline
// bundles: internal/issuance calls them, so that a bundle's PIN and a
// login's code meet the same lockout as a verification (every attempt with
// a credential goes through one guard, attempt.go).
//
// Its callers — the HTTP API (internal/server; the CLI reaches it through
// the API) and internal/issuance — restate none of these rules.
package online

import (
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/backoff"
	"github.com/outpost-auth/outpost/otp"
)

// Policy is the online verification policy.
type Policy struct {
	// TOTPWindow is how many steps either side of now a TOTP code may match (default ±1).
	TOTPWindow otp.Window
	// HOTPLookahead is how many counters after the last used one an HOTP code may match (default 10).
	HOTPLookahead int
	// ResyncWindow bounds the search for two consecutive HOTP codes (default 500).
	ResyncWindow int
	// MaxFailures locks the user after this many consecutive failures until
	// an admin resets them (default 10; NIST SP 800-63B caps it at 100).
	MaxFailures int
	// FreeFailures are the failures allowed before delays start (default 3).
	FreeFailures int
	// BaseDelay is the delay after the first delayed failure; it doubles with
	// each further failure up to MaxDelay (defaults 1 s and 5 min).
	BaseDelay, MaxDelay time.Duration
}

// NISTMaxFailures is SP 800-63B's ceiling on consecutive failed attempts.
const NISTMaxFailures = 100

// DefaultPolicy is the policy `outpost serve` starts with.
var DefaultPolicy = Policy{
	TOTPWindow:    otp.Window{Back: 1, Forward: 1},
	HOTPLookahead: 10,
	ResyncWindow:  500,
	MaxFailures:   10,
	FreeFailures:  3,
	BaseDelay:     time.Second,
	MaxDelay:      5 * time.Minute,
}

// Validate checks the policy's bounds.
func (p Policy) Validate() error {
	switch {
	case p.MaxFailures < 1 || p.MaxFailures > NISTMaxFailures:
		return fmt.Errorf("online: max failures %d must be 1 to %d (NIST SP 800-63B)", p.MaxFailures, NISTMaxFailures)
	case p.TOTPWindow.Back < 0 || p.TOTPWindow.Forward < 0 || p.TOTPWindow.Back+p.TOTPWindow.Forward >= otp.MaxWindow:
		return fmt.Errorf("online: TOTP window %+v out of range", p.TOTPWindow)
	case p.HOTPLookahead < 0 || p.HOTPLookahead >= otp.MaxWindow:
		return fmt.Errorf("online: HOTP look-ahead %d out of range 0..%d", p.HOTPLookahead, otp.MaxWindow-1)
	case p.ResyncWindow < 2 || p.ResyncWindow >= otp.MaxWindow:
		return fmt.Errorf("online: resync window %d out of range 2..%d", p.ResyncWindow, otp.MaxWindow-1)
	case p.FreeFailures < 0 || p.BaseDelay < 0 || p.MaxDelay < p.BaseDelay:
		return fmt.Errorf("online: delays must be non-negative with max >= base")
	}
	return nil
}

// Delay is how long a user must wait after their failures-th consecutive
// failure: nothing for the first FreeFailures, then the growing delay of
// internal/backoff.
func (p Policy) Delay(failures int) time.Duration {
	return backoff.Delay(p.BaseDelay, p.MaxDelay, failures-p.FreeFailures)
}

// Lock describes whether a user may try now.
type Lock struct {
	// Hard is set when the user reached MaxFailures: only an admin reset unlocks.
	Hard bool
	// RetryAfter is the remaining delay when not Hard.
	RetryAfter time.Duration
}

// Locked reports whether a user with failures consecutive failures, the last
// at last, is refused at now.
func (p Policy) Locked(failures int, last, now time.Time) (Lock, bool) {
	if failures >= p.MaxFailures {
		return Lock{Hard: true}, true
	}
	if wait := last.Add(p.Delay(failures)).Sub(now); wait > 0 {
		return Lock{RetryAfter: wait}, true
	}
	return Lock{}, false
}
