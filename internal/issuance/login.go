package issuance

import (
	"context"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
)

// Login's default windows, when the request gives none.
const (
	LoginHOTPCount  = 20
	LoginTOTPPeriod = 2 * time.Hour
)

// LoginRequest is an online PIN + OTP login that returns a bundle: the
// bundle's request (its PIN is the login's) and the code.
type LoginRequest struct {
	Request
	Code string
}

// LoggedIn is a login's bundle and the verification that earned it.
type LoggedIn struct {
	Issued
	// Verified is the token and step or counter the code matched. It is set
	// whenever the code was spent, even when issuing then failed.
	Verified online.Result
}

// Login verifies code and PIN (online.Service.Login: until both are right,
// the answers are Verify's — an unknown user, a user without an active
// token or without a PIN, a wrong code and a wrong PIN all answer
// online.ErrInvalidCode, each counted) and returns a bundle with the PIN
// mixed in for the token the code matched: by default TOTP for the next
// LoginTOTPPeriod, HOTP the next LoginHOTPCount counters, starting after
// the login's own code. Only once both factors are right is the bundle
// request checked, before the code is spent: a bad request costs no code.
// A login never overrides the floor, and its bundle must compute within
// SyncLimit. onStart is Issue's.
func (s *Service) Login(ctx context.Context, c Caller, in LoginRequest, onStart func(estimate time.Duration)) (LoggedIn, error) {
	if in.OverrideFloor {
		return LoggedIn{}, refuse(ErrNotAllowed, "a login bundle cannot override the floor")
	}
	// Admitted to the bundle queue first: a busy server spends no code.
	release, err := s.enter()
	if err != nil {
		return LoggedIn{}, err
	}
	defer release()
	var req bundle.Request
	var wall time.Duration
	res, err := s.Online.Login(ctx, c.Realm, in.User, in.Code, in.PIN, c.Actor, func(t store.Token) error {
		var err error
		req, wall, err = s.loginBundle(ctx, c, in.Request, t)
		return err
	})
	if err != nil {
		return LoggedIn{}, err
	}
	out := LoggedIn{Verified: res}
	if res.TokenID == req.TokenID && (!req.Used || res.Matched > req.LastUsed) {
		// The login code is now used online: the bundle starts after it.
		req.Used, req.LastUsed = true, res.Matched
	}
	if onStart != nil {
		onStart(wall)
	}
	out.Issued, err = s.issue(ctx, c.Actor, req, nil)
	return out, err
}

// loginBundle is the login's bundle request for the token the code matched.
func (s *Service) loginBundle(ctx context.Context, c Caller, in Request, t store.Token) (bundle.Request, time.Duration, error) {
	if in.Token != "" && in.Token != t.ID {
		return bundle.Request{}, 0, refuse(ErrTokenMismatch, "the code is not of the token the request names")
	}
	if in.Count == 0 && in.From.IsZero() && in.Until.IsZero() {
		if t.Type == "hotp" {
			in.Count = LoginHOTPCount
		} else {
			now := s.now()
			in.From, in.Until = now, now.Add(LoginTOTPPeriod)
		}
	}
	req, err := s.plan(ctx, c, in, t)
	if err != nil {
		return req, 0, err
	}
	wall, _ := s.estimate(req)
	if wall > SyncLimit {
		return req, wall, refuse(ErrTooSlow, "a login bundle must compute within %s: ask for a shorter window", SyncLimit)
	}
	return req, wall, nil
}
