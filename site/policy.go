package site

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/backoff"
	"github.com/outpost-auth/outpost/internal/clockguard"
	"github.com/outpost-auth/outpost/internal/sitewire"
	"github.com/outpost-auth/outpost/otp"
)

// Policy is how a site checks codes. It is set per scope by the server and
// travels, signed, in the provisioning package.
type Policy struct {
	// Digits and Period are the technicians' TOTP parameters (the algorithm
	// is always SHA1, which every authenticator app supports). They are fixed
	// when a scope is created: changing them invalidates every credential.
	Digits int
	Period time.Duration
	// Window is how many steps either side of the site's current step are
	// accepted (1 = the previous, current and next code).
	Window int
	// Overlap is how long before its start and after its end an epoch's key
	// is still accepted, so that technicians move to a new epoch's credential
	// without a flag day.
	Overlap time.Duration
	// ClockTolerance is how far the site clock may go back behind the latest
	// time the site has seen before every verification is refused.
	ClockTolerance time.Duration
	// LockoutFailures consecutive failed codes of one technician lock that
	// technician out for Lockout; each failure before that imposes a delay
	// of Delay, doubled at every further failure (capped at Lockout).
	LockoutFailures int
	Delay           time.Duration
	Lockout         time.Duration
	// SiteFailuresPerHour is the site-wide budget of failed codes, over all
	// technician ids together (a burst of that many, then one every
	// hour/SiteFailuresPerHour). Per-technician lockout alone cannot stop
	// guessing, because any technician id is valid: see docs/sites.md.
	SiteFailuresPerHour int
}

// DefaultPolicy is what a new scope gets unless the administrator says otherwise.
func DefaultPolicy() Policy {
	return Policy{
		Digits: 6, Period: 30 * time.Second, Window: 1,
		Overlap: 7 * 24 * time.Hour, ClockTolerance: 5 * time.Minute,
		LockoutFailures: 5, Delay: 2 * time.Second, Lockout: 15 * time.Minute,
		SiteFailuresPerHour: 20,
	}
}

// Limits of a policy.
const (
	MaxWindow              = 10
	MaxOverlap             = 90 * 24 * time.Hour
	MaxClockTolerance      = clockguard.MaxTolerance
	MaxLockoutFailures     = 100
	MaxLockout             = 30 * 24 * time.Hour
	MaxSiteFailuresPerHour = 3600
)

// Validate reports whether p is a usable policy.
func (p Policy) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("site: policy: "+format, a...)
	}
	switch {
	case p.Digits < otp.MinDigits || p.Digits > otp.MaxDigits:
		return bad("digits %d is outside %d..%d", p.Digits, otp.MinDigits, otp.MaxDigits)
	case p.Period < time.Second || p.Period > 10*time.Minute || p.Period%time.Second != 0:
		return bad("period %v must be whole seconds from 1 s to 10 min", p.Period)
	case p.Window < 0 || p.Window > MaxWindow:
		return bad("window %d is outside 0..%d steps", p.Window, MaxWindow)
	case p.Overlap < 0 || p.Overlap > MaxOverlap:
		return bad("overlap %v is outside 0..%v", p.Overlap, MaxOverlap)
	case p.ClockTolerance < 0 || p.ClockTolerance > MaxClockTolerance:
		return bad("clock tolerance %v is outside 0..%v", p.ClockTolerance, MaxClockTolerance)
	case p.LockoutFailures < 1 || p.LockoutFailures > MaxLockoutFailures:
		return bad("lockout failures %d is outside 1..%d", p.LockoutFailures, MaxLockoutFailures)
	case p.Lockout < time.Second || p.Lockout > MaxLockout:
		return bad("lockout %v is outside 1s..%v", p.Lockout, MaxLockout)
	case p.Delay < 0 || p.Delay > p.Lockout:
		return bad("delay %v is outside 0..lockout (%v)", p.Delay, p.Lockout)
	case p.SiteFailuresPerHour < 1 || p.SiteFailuresPerHour > MaxSiteFailuresPerHour:
		return bad("site failures per hour %d is outside 1..%d", p.SiteFailuresPerHour, MaxSiteFailuresPerHour)
	}
	return nil
}

// OTP returns the technicians' TOTP parameters.
func (p Policy) OTP() otp.Params {
	return otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: p.Digits, Period: uint64(p.Period / time.Second)}
}

// RetryAt is the lockout rule, in one place: after failures consecutive
// failed codes, the last at last, a technician may try again at the returned
// time (the zero time when failures is 0). Below LockoutFailures the wait is
// Delay doubled per further failure, at most Lockout (internal/backoff);
// from LockoutFailures on it is Lockout, and each further failure starts a
// new Lockout.
func (p Policy) RetryAt(failures int, last time.Time) time.Time {
	if failures <= 0 {
		return time.Time{}
	}
	if failures >= p.LockoutFailures {
		return last.Add(p.Lockout)
	}
	return last.Add(backoff.Delay(p.Delay, p.Lockout, failures))
}

// siteBudget is the site-wide failure budget as a GCRA (generic cell rate
// algorithm): tat is the "theoretical arrival time" stored by the site. A
// failure is allowed when max(tat, now) - now <= tolerance, and moves tat
// one interval on.
func (p Policy) siteBudget() (interval, tolerance time.Duration) {
	interval = time.Hour / time.Duration(p.SiteFailuresPerHour)
	return interval, interval * time.Duration(p.SiteFailuresPerHour-1)
}

// siteRetryAt returns when the next failure is allowed by the site-wide
// budget (at or before now when it is allowed now).
func (p Policy) siteRetryAt(tat time.Time) time.Time {
	_, tol := p.siteBudget()
	return tat.Add(-tol)
}

// siteAfterFailure returns the new tat after a failure at now.
func (p Policy) siteAfterFailure(tat, now time.Time) time.Time {
	iv, _ := p.siteBudget()
	if tat.Before(now) {
		tat = now
	}
	return tat.Add(iv)
}

// wire returns p's signed form (internal/sitewire: durations in seconds).
func (p Policy) wire() sitewire.Policy {
	s := func(d time.Duration) int64 { return int64(d / time.Second) }
	return sitewire.Policy{Digits: p.Digits, PeriodS: s(p.Period), Window: p.Window, OverlapS: s(p.Overlap),
		ClockToleranceS: s(p.ClockTolerance), LockoutFailures: p.LockoutFailures, DelayS: s(p.Delay), LockoutS: s(p.Lockout),
		SiteFailuresPerHour: p.SiteFailuresPerHour}
}

// policyFrom converts and validates a policy's signed form.
func policyFrom(w sitewire.Policy) (Policy, error) {
	if err := w.CheckDurations(); err != nil {
		return Policy{}, err
	}
	d := func(s int64) time.Duration { return time.Duration(s) * time.Second }
	p := Policy{w.Digits, d(w.PeriodS), w.Window, d(w.OverlapS), d(w.ClockToleranceS),
		w.LockoutFailures, d(w.DelayS), d(w.LockoutS), w.SiteFailuresPerHour}
	return p, p.Validate()
}

// MarshalPolicy and UnmarshalPolicy give a policy's JSON form (durations in
// seconds), as stored by the server and the site and carried in packages.
func MarshalPolicy(p Policy) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(p.wire())
}

// UnmarshalPolicy decodes and validates what MarshalPolicy wrote.
func UnmarshalPolicy(b []byte) (Policy, error) {
	var w sitewire.Policy
	if err := artifact.DecodeBody(b, &w); err != nil {
		return Policy{}, fmt.Errorf("site: policy: %w", err)
	}
	return policyFrom(w)
}
