package online

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
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
	return s.guardOr(ctx, realm, user, actor, fn, nil, nil)
}

// guardOr is guard with unknown, when set, answering for a user that does
// not exist, under the same lock (Verify and Login: see unknownUser); guard
// answers errUnknownUser. With quick set and the user's rows in the row
// cache, quick runs first on the cached rows and answers when it says done
// (it may only accept: see rowCache); else, or when it does not, fn
// decides from a fresh read.
func (s *Service) guardOr(ctx context.Context, realm, user, actor string, fn func(u store.User, ts []store.Token, now time.Time) (Result, error),
	unknown func(now time.Time) error, quick func(u store.User, ts []store.Token, now time.Time) (Result, bool, error)) (Result, error) {
	unlock, err := s.locks.lock(ctx, realm, user)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	now := s.now()
	rows := s.rowCache()
	if quick != nil {
		if u, ts, ok := rows.get(realm, user); ok {
			if res, done, err := quick(u, ts, now); done {
				return res, err
			}
			rows.drop(realm, user)
		}
	}
	u, ts, err := s.Store.GetUserTokens(ctx, realm, user)
	if errors.Is(err, store.ErrNotFound) {
		rows.drop(realm, user)
		if unknown != nil {
			return Result{}, unknown(now)
		}
		return Result{}, errUnknownUser
	}
	if err != nil {
		return Result{}, err
	}
	rows.put(u, ts)
	if lock, locked := s.Policy.Locked(u.Failures, u.LastFailure, now); locked {
		return Result{}, &LockedError{lock}
	}
	res, err := fn(u, ts, now)
	var f *failure
	if errors.As(err, &f) {
		rows.drop(realm, user) // the failure moves the user's version
		return res, s.fail(ctx, u, actor, now, f)
	}
	if quick == nil {
		rows.drop(realm, user) // Confirm, Resync: fn may have changed what was read
	}
	return res, err
}

// fail counts a failure, audits it (and the lockout when it is reached)
// and returns the answer: ErrReplayed for a replay, ErrInvalidCode otherwise.
// How long the writes took feeds writePad.
func (s *Service) fail(ctx context.Context, u store.User, actor string, now time.Time, f *failure) error {
	start := time.Now() // for writePad only: a timing that decides nothing
	if err := s.outage.wrote(s.recordFailure(ctx, u, actor, now, f)); err != nil {
		return err
	}
	s.pad.observe(time.Since(start))
	if f.reason == "replayed" {
		return ErrReplayed
	}
	return ErrInvalidCode
}

func (s *Service) recordFailure(ctx context.Context, u store.User, actor string, now time.Time, f *failure) error {
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
		return s.Audit.Record(ctx, audit.Lockout, actor, u.ID, map[string]any{"failures": n})
	}
	return nil
}

// maxWritePad bounds writePad's wait, should the database stall.
const maxWritePad = time.Second

// writePad estimates the median time recording a known user's failure
// takes (the failure count and the audit entry, durable writes), so that
// an unknown user's failure, which writes nothing (it is tallied in
// memory), waits as long: the time a failure takes does not tell whether
// the user exists. The estimate moves a sixteenth of itself towards each
// observation (a streaming median: slow fsyncs do not drag it up as they
// would a mean). The zero value is ready.
type writePad struct {
	median atomic.Int64 // nanoseconds
}

func (p *writePad) observe(d time.Duration) {
	for {
		old := p.median.Load()
		step := max(old/16, int64(time.Microsecond))
		next := old
		switch {
		case old == 0:
			next = int64(d)
		case int64(d) > old:
			next = old + step
		case int64(d) < old:
			next = max(old-step, 1)
		}
		if p.median.CompareAndSwap(old, next) {
			return
		}
	}
}

// wait sleeps for the estimate (at most maxWritePad) or until ctx ends.
func (p *writePad) wait(ctx context.Context) {
	d := min(time.Duration(p.median.Load()), maxWritePad)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
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
