package online

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"sync"
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

	// MaxPINChecks caps the argon2id PIN checks running at once (0:
	// max(2, NumCPU)); a request waits up to PINWait (0: DefaultPINWait)
	// for a slot, then gets ErrBusy.
	MaxPINChecks int
	PINWait      time.Duration
	// CheckPINHash checks a PIN against its stored hash; nil is pin.Check.
	// (Tests wrap it to count and time the checks.)
	CheckPINHash func(hash []byte, pin string) bool
	// UnknownInterval is how often the tally of verifications for unknown
	// users is written to the audit log (0: DefaultUnknownInterval);
	// UnknownKey keys the HMAC of the user names it samples (nil: a random
	// key for this process). See FlushUnknown.
	UnknownInterval time.Duration
	UnknownKey      []byte
	// RowCacheSize bounds how many users' rows Verify keeps in memory so
	// that a right code needs no read (0: DefaultRowCacheSize; negative:
	// no cache). See rowCache for why a cache can never accept what the
	// store would refuse.
	RowCacheSize int

	locks        userLocks
	pins         pinGate
	unknown      unknownUsers
	unknownFails unknownFailures
	outage       writeOutage
	pad          writePad
	rowsOnce     sync.Once
	rows         *rowCache
}

func (s *Service) now() time.Time { return clock.Or(s.Now)() }

func (s *Service) rowCache() *rowCache {
	s.rowsOnce.Do(func() {
		n := s.RowCacheSize
		if n == 0 {
			n = DefaultRowCacheSize
		}
		s.rows = newRowCache(n)
	})
	return s.rows
}

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
//     step and no fresh one, whatever the PIN: it is never a PIN oracle. Its
//     audit entry (verify.replayed) names where and when the value was
//     first used (see FindFirstUse); the answer does not;
//   - every attempt that fails costs one argon2id PIN check: against the
//     user's PIN, or a dummy hash for a user without one and for an unknown
//     user, so the time a failure takes tells none of them apart (a
//     success without a PIN skips it: it reveals nothing the code did not);
//   - verifications for unknown users are tallied per realm and written as
//     one audit entry per interval (see FlushUnknown), so that guessing
//     names cannot grow the audit log without bound;
//   - an unknown user's failures are counted too (in memory, bounded:
//     unknownlock.go) and lock it out by the same Policy, so that the
//     lockout's answer does not tell whether a user exists.
//
// Attempts for one user are serialised within this process (see userLocks),
// so that a burst of parallel guesses is counted one by one and meets the
// lockout; across replicas at most one attempt per replica runs at a time.
func (s *Service) Verify(ctx context.Context, realm, user, code, pinCode, actor string) (Result, error) {
	return s.verify(ctx, realm, user, code, pinCode, actor, verifyOpts{})
}

// Login is Verify for the online PIN + OTP login that hands a device a
// PIN bundle. It differs in two ways: a user without a PIN fails like a
// wrong code (the bundle must mix a PIN in), and prepare runs with the
// matched token once the code and PIN are right, before the code is spent.
// prepare's error is returned as it is, with nothing counted or spent: a
// bad bundle request costs no code, and is answered only to a caller who
// proved both factors, so the failure answers stay one.
func (s *Service) Login(ctx context.Context, realm, user, code, pinCode, actor string, prepare func(store.Token) error) (Result, error) {
	return s.verify(ctx, realm, user, code, pinCode, actor, verifyOpts{requirePIN: true, prepare: prepare})
}

type verifyOpts struct {
	requirePIN bool
	prepare    func(store.Token) error
}

func (s *Service) verify(ctx context.Context, realm, user, code, pinCode, actor string, o verifyOpts) (Result, error) {
	if len(code) < otp.MinDigits || len(code) > otp.MaxDigits || otp.CheckCode(code, len(code)) != nil {
		return Result{}, ErrMalformedCode
	}
	s.flushUnknownIfDue(ctx)
	return s.guardOr(ctx, realm, user, actor, func(u store.User, ts []store.Token, now time.Time) (Result, error) {
		return s.check(ctx, u, ts, code, pinCode, actor, now, o)
	}, func(now time.Time) error {
		return s.unknownUser(ctx, realm, user, pinCode, actor, now)
	}, func(u store.User, ts []store.Token, now time.Time) (Result, bool, error) {
		return s.quick(ctx, u, ts, code, actor, now, o)
	})
}

// quick is verify's decision from cached rows (rowCache): it answers only
// a success, for a user without a PIN or failures whose code matches a
// fresh value, accepted under the cached version. Anything else — no
// match, a replay, ErrStale, a token or user gone — is left to check on a
// fresh read (done false), which then counts and audits what it must.
func (s *Service) quick(ctx context.Context, u store.User, ts []store.Token, code, actor string, now time.Time, o verifyOpts) (Result, bool, error) {
	if o.requirePIN || o.prepare != nil || u.PINHash != nil || u.Failures != 0 {
		return Result{}, false, nil
	}
	fresh, _, err := s.candidates(ts, code, now)
	if err != nil || len(fresh) == 0 {
		return Result{}, false, nil
	}
	res, lost, err := s.accept(ctx, u, fresh, actor, nil, u.Version)
	switch {
	case errors.Is(err, store.ErrStale) || errors.Is(err, store.ErrNotFound) || (err == nil && lost != nil):
		return Result{}, false, nil
	case err != nil:
		s.paceFailure(ctx)
		return Result{}, true, err
	}
	return res, true, nil
}

// paceFailure spends the argon2id check a failure spends, for a right code
// whose acceptance then failed (the database refused the write): the
// error answer (503) must take a wrong code's time, or its speed would
// tell a right code from a wrong one that was not counted either.
func (s *Service) paceFailure(ctx context.Context) {
	_, _ = s.pinMatches(ctx, nil, "")
}

// candidate is a token and the step or counter a code matched.
type candidate struct {
	t store.Token
	m uint64
}

// check is verify's decision for an existing user, under guard.
func (s *Service) check(ctx context.Context, u store.User, ts []store.Token, code, pinCode, actor string, now time.Time, o verifyOpts) (Result, error) {
	fresh, replay, err := s.candidates(ts, code, now)
	if err != nil {
		return Result{}, err
	}
	// One argon2id check on every path that can fail, so that failures take
	// the same time whoever the user is. A success of a user without a PIN
	// skips it: its timing tells the caller nothing the code did not prove,
	// and online verification keeps its throughput.
	pinOK := u.PINHash == nil && !o.requirePIN
	if !pinOK || len(fresh) == 0 {
		ok, err := s.pinMatches(ctx, u.PINHash, pinCode)
		if err != nil {
			return Result{}, err
		}
		pinOK = pinOK || ok
	}
	if len(fresh) > 0 && pinOK {
		res, lost, err := s.accept(ctx, u, fresh, actor, o.prepare, -1)
		if err != nil && u.PINHash == nil && !o.requirePIN {
			s.paceFailure(ctx) // skipped above for a user without a PIN
		}
		if err != nil || lost == nil {
			return res, err
		}
		return Result{}, s.replayFailure(ctx, lost.t, lost.m, "verify") // another replica took it first
	}
	switch {
	case len(fresh) > 0 && u.PINHash == nil:
		return Result{}, &failure{reason: "no_pin"}
	case len(fresh) > 0:
		return Result{}, &failure{reason: "pin"}
	case replay != nil:
		return Result{}, s.replayFailure(ctx, replay.t, replay.m, "verify")
	}
	return Result{}, &failure{reason: "code"}
}

// candidates matches code against the user's active tokens: fresh matches
// (above the last used value) and the first replay (at or below it).
func (s *Service) candidates(ts []store.Token, code string, now time.Time) (fresh []candidate, replay *candidate, err error) {
	for _, t := range ts {
		if t.Status != store.TokenActive || otp.CheckCode(code, t.Digits) != nil {
			continue
		}
		m, err := s.match(t, code, now, s.Policy.HOTPLookahead, true)
		if errors.Is(err, otp.ErrNoMatch) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if m < otp.NextCounter(t.Used, uint64(t.LastUsed)) {
			if replay == nil {
				replay = &candidate{t, m}
			}
			continue
		}
		fresh = append(fresh, candidate{t, m})
	}
	return fresh, replay, nil
}

// accept spends the first fresh match it can, with its verify.ok entry
// (store.AcceptCode), after prepare (when set) agreed. When another replica
// spent every one first, it returns the last such match as lost. With
// version >= 0 the user's version must still be that (else
// store.ErrStale, nothing spent).
func (s *Service) accept(ctx context.Context, u store.User, fresh []candidate, actor string, prepare func(store.Token) error, version int64) (Result, *candidate, error) {
	var lost *candidate
	for i, c := range fresh {
		if prepare != nil {
			if err := prepare(c.t); err != nil {
				return Result{}, nil, err
			}
		}
		if err := s.outage.wrote(s.Audit.Accept(ctx, c.t, int64(c.m), version, actor)); errors.Is(err, store.ErrReplayed) {
			lost = &fresh[i]
			continue
		} else if err != nil {
			return Result{}, nil, err
		}
		s.rowCache().used(u.Realm, u.ID, u.Version, c.t.ID, c.m)
		if u.Failures > 0 {
			s.rowCache().drop(u.Realm, u.ID) // the reset moves the version
			if err := s.Store.ResetFailures(ctx, u.Realm, u.ID); err != nil {
				return Result{}, nil, err
			}
		}
		return Result{TokenID: c.t.ID, Matched: c.m}, nil, nil
	}
	return Result{}, lost, nil
}

// unknownUser answers a verification for a user that does not exist like
// a known user's wrong code, under guard's lock: refused while its failures
// lock it out by the same Policy (LockedError), else after the same
// argon2id work a failure, counted in memory (unknownlock.go) and in the
// realm's tally rather than in an audit entry of its own; it waits as long
// as a known user's failure takes to record (writePad).
func (s *Service) unknownUser(ctx context.Context, realm, user, pinCode, actor string, now time.Time) error {
	if lock, locked := s.unknownFails.locked(s.Policy, realm, user, now); locked {
		return &LockedError{lock}
	}
	if _, err := s.pinMatches(ctx, nil, pinCode); err != nil {
		return err
	}
	s.tallyUnknown(realm, user, actor)
	if s.outage.refused.Load() {
		// A write was refused lately: write now, as a known user's failure
		// would, and answer as it would be answered (outage.go). The
		// tally is that write; it replaces writePad's wait.
		_ = s.FlushUnknown(ctx, true)
		if s.outage.refused.Load() {
			return errWritesRefused
		}
		s.unknownFails.fail(realm, user, now)
		return ErrInvalidCode
	}
	s.unknownFails.fail(realm, user, now)
	s.pad.wait(ctx)
	return ErrInvalidCode
}

// match finds the step or counter code matches for token t: TOTP within the
// policy window around now; HOTP within look counters after the last used
// one (or from 0 for an unused token) and, when back is set and none of
// those matched, within the HOTPLookahead counters up to the last used one
// (a replay, which the caller tells by the value).
func (s *Service) match(t store.Token, code string, now time.Time, look int, back bool) (uint64, error) {
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
	m, err := p.VerifyCounter(seed, code, otp.NextCounter(t.Used, uint64(t.LastUsed)), look)
	if !errors.Is(err, otp.ErrNoMatch) || !back || !t.Used {
		return m, err
	}
	lo, last := otp.Window{Back: s.Policy.HOTPLookahead}.Range(uint64(t.LastUsed))
	return p.VerifyRange(seed, code, lo, last)
}

// ResetLockout clears a user's failure counter (an admin action).
func (s *Service) ResetLockout(ctx context.Context, realm, user, actor string) error {
	s.rowCache().drop(realm, user)
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
	s.rowCache().drop(realm, user)
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
// It is an attempt like Verify's (see guard): refused while the user is
// locked out, a wrong code counted and audited. HOTP codes are searched in
// the verification look-ahead (counters 0 to HOTPLookahead), not the
// resync window: confirming is no wider a guess than verifying.
func (s *Service) Confirm(ctx context.Context, realm, user, tokenID, code, actor string) (Result, error) {
	return s.guard(ctx, realm, user, actor, func(_ store.User, ts []store.Token, now time.Time) (Result, error) {
		t, err := findToken(ts, tokenID)
		if err != nil {
			return Result{}, err
		}
		if t.Status != store.TokenPending {
			return Result{}, ErrNotPending
		}
		if err := otp.CheckCode(code, t.Digits); err != nil {
			return Result{}, ErrMalformedCode
		}
		m, err := s.match(t, code, now, s.Policy.HOTPLookahead, false)
		if err := s.spend(ctx, t, m, err, "confirm"); err != nil {
			return Result{}, err
		}
		if err := s.Store.SetTokenStatus(ctx, realm, user, tokenID, store.TokenActive); err != nil {
			return Result{}, err
		}
		return Result{TokenID: tokenID, Matched: m}, s.Audit.Record(ctx, audit.TokenConfirm, actor, user, map[string]any{"token": tokenID, "matched": m})
	})
}

// Resync re-aligns an HOTP token whose counter drifted past the look-ahead:
// code1 and code2 must be consecutive codes within the resync window. The
// token's last used counter moves to code2's. It is an attempt like
// Verify's (see guard): refused while the user is locked out, a wrong pair
// counted and audited.
func (s *Service) Resync(ctx context.Context, realm, user, tokenID, code1, code2, actor string) (Result, error) {
	return s.guard(ctx, realm, user, actor, func(_ store.User, ts []store.Token, now time.Time) (Result, error) {
		t, err := findToken(ts, tokenID)
		if err != nil {
			return Result{}, err
		}
		if t.Type != "hotp" {
			return Result{}, fmt.Errorf("%w: resync is for HOTP tokens", ErrMalformedCode)
		}
		if otp.CheckCode(code1, t.Digits) != nil || otp.CheckCode(code2, t.Digits) != nil {
			return Result{}, ErrMalformedCode
		}
		m2, err := s.resyncMatch(t, code1, code2, now)
		if err := s.spend(ctx, t, m2, err, "resync"); err != nil {
			return Result{}, err
		}
		return Result{TokenID: tokenID, Matched: m2}, s.Audit.Record(ctx, audit.TokenResync, actor, user, map[string]any{"token": tokenID, "counter": m2})
	})
}

// resyncMatch finds code1 in the resync window and returns code2's
// counter, which must directly follow it (otp.ErrNoMatch otherwise).
func (s *Service) resyncMatch(t store.Token, code1, code2 string, now time.Time) (uint64, error) {
	m1, err := s.match(t, code1, now, s.Policy.ResyncWindow, false)
	if err != nil {
		return 0, err
	}
	p, err := Params(t)
	if err != nil {
		return 0, err
	}
	seed, err := s.Seeds.Seed(t)
	if err != nil {
		return 0, err
	}
	return p.VerifyCounter(seed, code2, m1+1, 0)
}

// spend records m, what op's code matched for t (matchErr the match's
// error), as t's last used value (store.AdvanceToken). No match, or a value
// already used (a replay), is a failure of op, counted.
func (s *Service) spend(ctx context.Context, t store.Token, m uint64, matchErr error, op string) error {
	if errors.Is(matchErr, otp.ErrNoMatch) {
		return &failure{reason: "code", data: map[string]any{"op": op, "token": t.ID}}
	}
	if matchErr != nil {
		return matchErr
	}
	err := s.Store.AdvanceToken(ctx, t.Realm, t.UserID, t.ID, int64(m))
	if errors.Is(err, store.ErrReplayed) {
		return s.replayFailure(ctx, t, m, op)
	}
	return err
}

// findToken picks tokenID from the user's tokens.
func findToken(ts []store.Token, tokenID string) (store.Token, error) {
	for _, t := range ts {
		if t.ID == tokenID {
			return t, nil
		}
	}
	return store.Token{}, fmt.Errorf("%w: token %q", store.ErrNotFound, tokenID)
}

// SetPIN sets or changes a user's static PIN (4 to 12 digits).
func (s *Service) SetPIN(ctx context.Context, realm, user, p, actor string) error {
	h, err := pin.Hash(p)
	if err != nil {
		return err
	}
	s.rowCache().drop(realm, user)
	if err := s.Store.SetPINHash(ctx, realm, user, h); err != nil {
		return err
	}
	return s.Audit.Record(ctx, audit.PINSet, actor, user, nil)
}

// User returns a user (store.ErrNotFound when realm has none of that id).
func (s *Service) User(ctx context.Context, realm, id string) (store.User, error) {
	return s.Store.GetUser(ctx, realm, id)
}

// Users returns up to limit users of realm with ids after after, in id order.
func (s *Service) Users(ctx context.Context, realm, after string, limit int) ([]store.User, error) {
	return s.Store.ListUsers(ctx, realm, after, limit)
}

// Tokens returns a user's tokens (store.ErrNotFound when the user does not
// exist, rather than an empty list).
func (s *Service) Tokens(ctx context.Context, realm, user string) ([]store.Token, error) {
	_, ts, err := s.Store.GetUserTokens(ctx, realm, user)
	return ts, err
}
