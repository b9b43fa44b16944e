package online

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/pin"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/otp"
)

// Errors the HTTP layer maps to responses. None of them says which part of a
// credential was wrong.
var (
	// ErrInvalidCode: the code (or PIN) is wrong, the user is unknown, or no active token matched.
	ErrInvalidCode = errors.New("invalid code")
	// ErrReplayed: the code matched a step or counter that was already used.
	ErrReplayed = errors.New("code already used")
	// ErrMalformedCode: no token of the user has a code of this form; nothing was counted.
	ErrMalformedCode = errors.New("malformed code")
)

// LockedError is returned while a user is delayed or locked out.
type LockedError struct{ Lock }

func (e *LockedError) Error() string {
	if e.Hard {
		return "locked after too many failed attempts: an administrator must reset the user"
	}
	return fmt.Sprintf("too many failed attempts: retry after %s", e.RetryAfter.Round(time.Second))
}

// Service verifies codes online and manages tokens and PINs.
type Service struct {
	Store  store.Store
	Seeds  *Seeds
	Policy Policy
	Audit  *audit.Log
	Now    func() time.Time

	locks userLocks
}

func (s *Service) now() time.Time { return clock.Or(s.Now)() }

// Result is a successful verification.
type Result struct {
	TokenID string
	// Matched is the TOTP step or HOTP counter the code matched.
	Matched uint64
}

// Verify checks code (and pin, when the user has one) for user in realm.
// It accepts a code at most once, ever: the match must be above the token's
// last used step or counter, and is recorded with store.AcceptCode before
// Verify returns. Failures count towards the user's lockout.
//
// What the answer reveals is chosen with care:
//   - a code's form is checked against fixed rules (6 to 10 digits) before
//     the user is looked up, so a malformed code says nothing about the user;
//   - an unknown user, a user without an active token, a wrong code and a
//     wrong PIN all answer ErrInvalidCode;
//   - ErrReplayed is answered only when the code matched an already used
//     step and no fresh one, whatever the PIN: it is never a PIN oracle;
//   - the PIN is hashed whenever the user has one, whatever the code did, so
//     timing does not tell a right code from a wrong one.
//
// Attempts for one user are serialised within this process (see userLocks),
// so that a burst of parallel guesses is counted one by one and meets the
// lockout; across replicas at most one attempt per replica runs at a time.
func (s *Service) Verify(ctx context.Context, realm, user, code, pinCode, actor string) (Result, error) {
	if len(code) < otp.MinDigits || len(code) > otp.MaxDigits || otp.CheckCode(code, len(code)) != nil {
		return Result{}, ErrMalformedCode
	}
	unlock, err := s.locks.lock(ctx, realm, user)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	now := s.now()
	u, tokens, err := s.Store.GetUserTokens(ctx, realm, user)
	if errors.Is(err, store.ErrNotFound) {
		_ = s.Audit.Record(ctx, audit.VerifyFail, actor, user, map[string]string{"reason": "unknown_user"})
		return Result{}, ErrInvalidCode
	}
	if err != nil {
		return Result{}, err
	}
	if lock, locked := s.Policy.Locked(u.Failures, u.LastFailure, now); locked {
		return Result{}, &LockedError{lock}
	}
	type candidate struct {
		t store.Token
		m uint64
	}
	var fresh []candidate
	replayed := false
	for _, t := range tokens {
		if t.Status != store.TokenActive || otp.CheckCode(code, t.Digits) != nil {
			continue
		}
		m, err := s.match(t, code, now, false)
		if errors.Is(err, otp.ErrNoMatch) {
			continue
		}
		if err != nil {
			return Result{}, err
		}
		if t.Used && int64(m) <= t.LastUsed {
			replayed = true
			continue
		}
		fresh = append(fresh, candidate{t, m})
	}
	pinOK := u.PINHash == nil || pin.Check(u.PINHash, pinCode)
	if len(fresh) > 0 && pinOK {
		for _, c := range fresh {
			if err := s.Audit.Accept(ctx, c.t, int64(c.m), actor); errors.Is(err, store.ErrReplayed) {
				replayed = true // another replica took it first
				continue
			} else if err != nil {
				return Result{}, err
			}
			if u.Failures > 0 {
				if err := s.Store.ResetFailures(ctx, realm, user); err != nil {
					return Result{}, err
				}
			}
			return Result{TokenID: c.t.ID, Matched: c.m}, nil
		}
	}
	switch {
	case len(fresh) > 0 && !pinOK:
		return Result{}, s.fail(ctx, u, actor, "pin", now)
	case replayed && len(fresh) == 0:
		return Result{}, s.fail(ctx, u, actor, "replayed", now)
	}
	return Result{}, s.fail(ctx, u, actor, "code", now)
}

// match finds the step or counter code matches for token t: TOTP within the
// policy window around now, HOTP within the look-ahead after the last used
// counter (or from 0 for an unused token; wide selects the resync window).
func (s *Service) match(t store.Token, code string, now time.Time, wide bool) (uint64, error) {
	p, err := Params(t)
	if err != nil {
		return 0, err
	}
	seed, err := s.Seeds.Seed(t)
	if err != nil {
		return 0, err
	}
	if p.Type == otp.TypeTOTP {
		return p.Verify(seed, code, now, s.Policy.TOTPWindow)
	}
	next := uint64(0)
	if t.Used {
		next = uint64(t.LastUsed) + 1
	}
	look := s.Policy.HOTPLookahead
	if wide {
		look = s.Policy.ResyncWindow
	}
	return p.VerifyCounter(seed, code, next, look)
}

func (s *Service) fail(ctx context.Context, u store.User, actor, reason string, now time.Time) error {
	n, err := s.Store.RecordFailure(ctx, u.Realm, u.ID, now)
	if err != nil {
		return err
	}
	kind := audit.VerifyFail
	if reason == "replayed" {
		kind = audit.VerifyReplay
	}
	if err := s.Audit.Record(ctx, kind, actor, u.ID, map[string]any{"reason": reason, "failures": n}); err != nil {
		return err
	}
	if n == s.Policy.MaxFailures {
		if err := s.Audit.Record(ctx, audit.Lockout, actor, u.ID, map[string]any{"failures": n}); err != nil {
			return err
		}
	}
	if reason == "replayed" {
		return ErrReplayed
	}
	return ErrInvalidCode
}

// ResetLockout clears a user's failure counter (an admin action).
func (s *Service) ResetLockout(ctx context.Context, realm, user, actor string) error {
	if err := s.Store.ResetFailures(ctx, realm, user); err != nil {
		return err
	}
	return s.Audit.Record(ctx, audit.LockoutReset, actor, user, nil)
}

// NewTokenID returns a random token id such as "tok_k5v3q2mz7d4a".
func NewTokenID() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "tok_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}

// Enrol creates a pending token for user and returns it with its seed (to
// show once as an otpauth URI). It becomes active after [Service.Confirm].
func (s *Service) Enrol(ctx context.Context, realm, user string, p otp.Params, seedMode, actor string) (store.Token, []byte, error) {
	if err := p.Validate(); err != nil {
		return store.Token{}, nil, err
	}
	if seedMode == "" {
		seedMode = store.SeedDerived
	}
	id, err := NewTokenID()
	if err != nil {
		return store.Token{}, nil, err
	}
	t := store.Token{Realm: realm, UserID: user, ID: id, Type: p.Type.String(), Algorithm: p.Algorithm.String(),
		Digits: p.Digits, Period: int(p.Period), SeedMode: seedMode, Status: store.TokenPending, CreatedAt: s.now()}
	seed, err := s.Seeds.Assign(&t, p.Algorithm)
	if err != nil {
		return store.Token{}, nil, err
	}
	if err := s.Store.CreateToken(ctx, t); err != nil {
		return store.Token{}, nil, err
	}
	if err := s.Audit.Record(ctx, audit.TokenCreate, actor, user, map[string]any{"token": id, "type": t.Type, "seed": seedMode}); err != nil {
		return store.Token{}, nil, err
	}
	return t, seed, nil
}

// ErrNotPending is returned when confirming a token that is already active or disabled.
var ErrNotPending = errors.New("token is not pending confirmation")

// Confirm activates a pending token once the user proves they enrolled it by
// giving a current code. The code is consumed: it cannot be used again.
func (s *Service) Confirm(ctx context.Context, realm, user, tokenID, code, actor string) (Result, error) {
	t, err := s.Store.GetToken(ctx, realm, user, tokenID)
	if err != nil {
		return Result{}, err
	}
	if t.Status != store.TokenPending {
		return Result{}, ErrNotPending
	}
	if err := otp.CheckCode(code, t.Digits); err != nil {
		return Result{}, ErrMalformedCode
	}
	m, err := s.match(t, code, s.now(), true)
	if errors.Is(err, otp.ErrNoMatch) {
		return Result{}, ErrInvalidCode
	}
	if err != nil {
		return Result{}, err
	}
	if err := s.Store.AdvanceToken(ctx, realm, user, tokenID, int64(m)); err != nil {
		if errors.Is(err, store.ErrReplayed) {
			return Result{}, ErrReplayed
		}
		return Result{}, err
	}
	if err := s.Store.SetTokenStatus(ctx, realm, user, tokenID, store.TokenActive); err != nil {
		return Result{}, err
	}
	return Result{TokenID: tokenID, Matched: m}, s.Audit.Record(ctx, audit.TokenConfirm, actor, user, map[string]any{"token": tokenID})
}

// Resync re-aligns an HOTP token whose counter drifted past the look-ahead:
// code1 and code2 must be consecutive codes within the resync window. The
// token's last used counter moves to code2's.
func (s *Service) Resync(ctx context.Context, realm, user, tokenID, code1, code2, actor string) (Result, error) {
	t, err := s.Store.GetToken(ctx, realm, user, tokenID)
	if err != nil {
		return Result{}, err
	}
	if t.Type != "hotp" {
		return Result{}, fmt.Errorf("%w: resync is for HOTP tokens", ErrMalformedCode)
	}
	if otp.CheckCode(code1, t.Digits) != nil || otp.CheckCode(code2, t.Digits) != nil {
		return Result{}, ErrMalformedCode
	}
	m1, err := s.match(t, code1, s.now(), true)
	if errors.Is(err, otp.ErrNoMatch) {
		return Result{}, ErrInvalidCode
	}
	if err != nil {
		return Result{}, err
	}
	p, _ := Params(t)
	seed, err := s.Seeds.Seed(t)
	if err != nil {
		return Result{}, err
	}
	m2, err := p.VerifyCounter(seed, code2, m1+1, 0)
	if err != nil {
		return Result{}, ErrInvalidCode
	}
	if err := s.Store.AdvanceToken(ctx, realm, user, tokenID, int64(m2)); err != nil {
		if errors.Is(err, store.ErrReplayed) {
			return Result{}, ErrReplayed
		}
		return Result{}, err
	}
	return Result{TokenID: tokenID, Matched: m2}, s.Audit.Record(ctx, audit.TokenResync, actor, user, map[string]any{"token": tokenID, "counter": m2})
}

// SetPIN sets or changes a user's static PIN (4 to 12 digits).
func (s *Service) SetPIN(ctx context.Context, realm, user, p, actor string) error {
	h, err := pin.Hash(p)
	if err != nil {
		return err
	}
	if err := s.Store.SetPINHash(ctx, realm, user, h); err != nil {
		return err
	}
	return s.Audit.Record(ctx, audit.PINSet, actor, user, nil)
}
