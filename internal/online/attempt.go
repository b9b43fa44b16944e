package online

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/store"
)

// errUnknownUser is guard's answer for a user that does not exist; it
// wraps store.ErrNotFound for callers that answer "not found".
var errUnknownUser = fmt.Errorf("online: unknown user: %w", store.ErrNotFound)

// failure is a failed attempt that counts towards the user's lockout:
// guard records it (verify.fail, or verify.replayed when reason is
// "replayed") and answers ErrInvalidCode or ErrReplayed.
type failure struct {
	reason string
	// data is added to the audit entry (never a secret).
	data map[string]any
}

func (f *failure) Error() string { return "online: failed attempt (" + f.reason + ")" }

// guard is the one way an attempt with a credential (a code, a PIN) is
// made: under the user's lock (see userLocks), refused while the user is
// locked out, and with every failure fn returns counted and audited before
// the answer. Verify, Login, Confirm, Resync and CheckPIN all go through it,
// so that none is a way around the lockout.
func (s *Service) guard(ctx context.Context, realm, user, actor string, fn func(u store.User, ts []store.Token, now time.Time) (Result, error)) (Result, error) {
	unlock, err := s.locks.lock(ctx, realm, user)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	now := s.now()
	u, ts, err := s.Store.GetUserTokens(ctx, realm, user)
	if errors.Is(err, store.ErrNotFound) {
		return Result{}, errUnknownUser
	}
	if err != nil {
		return Result{}, err
	}
	if lock, locked := s.Policy.Locked(u.Failures, u.LastFailure, now); locked {
		return Result{}, &LockedError{lock}
	}
	res, err := fn(u, ts, now)
	var f *failure
	if errors.As(err, &f) {
		return res, s.fail(ctx, u, actor, now, f)
	}
	return res, err
}

// fail counts a failure, audits it (and the lockout when it is reached)
// and returns the answer: ErrReplayed for a replay, ErrInvalidCode otherwise.
func (s *Service) fail(ctx context.Context, u store.User, actor string, now time.Time, f *failure) error {
	n, err := s.Store.RecordFailure(ctx, u.Realm, u.ID, now)
	if err != nil {
		return err
	}
	kind := audit.VerifyFail
	if f.reason == "replayed" {
		kind = audit.VerifyReplay
	}
	data := map[string]any{"reason": f.reason, "failures": n}
	for k, v := range f.data {
		data[k] = v
	}
	if err := s.Audit.Record(ctx, kind, actor, u.ID, data); err != nil {
		return err
	}
	if n == s.Policy.MaxFailures {
		if err := s.Audit.Record(ctx, audit.Lockout, actor, u.ID, map[string]any{"failures": n}); err != nil {
			return err
		}
	}
	if f.reason == "replayed" {
		return ErrReplayed
	}
	return ErrInvalidCode
}

// CheckPIN admits user to a PIN bundle: under the same per-user lock and
// lockout as Verify, it checks pinCode against the user's PIN (in one of
// the capped argon2id slots). A user without a PIN passes with an empty
// pinCode (only the lockout applies). A wrong PIN, or a PIN for a user
// without one, is a failure like a wrong code: counted, audited (reason
// "bundle_pin") and answered ErrInvalidCode. A right PIN does not reset the
// failure count: it proves one factor, not the two a verification does.
// Callers check the rest of their request first, so that an answer to a
// bad request never depends on the PIN.
func (s *Service) CheckPIN(ctx context.Context, realm, user, pinCode, actor string) error {
	_, err := s.guard(ctx, realm, user, actor, func(u store.User, _ []store.Token, _ time.Time) (Result, error) {
		if u.PINHash == nil && pinCode == "" {
			return Result{}, nil
		}
		ok, err := s.pinMatches(ctx, u.PINHash, pinCode)
		if err != nil {
			return Result{}, err
		}
		if !ok {
			return Result{}, &failure{reason: "bundle_pin"}
		}
		return Result{}, nil
	})
	return err
}
