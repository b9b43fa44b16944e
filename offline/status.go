package offline

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/otp"
)

// TokenStatus is one token's bundle and state on the device.
type TokenStatus struct {
	TokenKey
	// Bundle fields; empty when the token was wiped.
	Type      string    `json:"type,omitempty"`
	Digits    int       `json:"digits,omitempty"`
	PIN       bool      `json:"pin"`
	Serial    uint64    `json:"serial,omitempty"`
	First     uint64    `json:"first,omitempty"`
	Last      uint64    `json:"last,omitempty"`
	Entries   int       `json:"entries"`
	Remaining int       `json:"remaining"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	Secrets   []string  `json:"secrets,omitempty"`
	// State data block.
	LastUsed    *uint64   `json:"last_used,omitempty"`
	Failures    int       `json:"failures"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	Wiped       time.Time `json:"wiped,omitzero"`
	// Problem is set when the stored bundle no longer verifies.
	Problem string `json:"problem,omitempty"`
}

// Status is what 'outpost field status' shows.
type Status struct {
	Device         string        `json:"device"`
	DeviceKeyID    string        `json:"device_key_id"`
	ServerKeyIDs   []string      `json:"server_key_ids"`
	Policy         Policy        `json:"policy"`
	ClockHighWater time.Time     `json:"clock_high_water"`
	Tokens         []TokenStatus `json:"tokens"`
	LogEntries     uint64        `json:"log_entries"`
	LogHead        string        `json:"log_head,omitempty"`
	// LogProblem is set when the device log's chain or signatures do not verify.
	LogProblem string `json:"log_problem,omitempty"`
}

// Status reports the device, every token's bundle and state, and the device
// log, re-verifying every stored bundle and the whole log chain. Damage is
// reported in the Problem fields rather than as an error, so that a damaged
// store can still be inspected.
func (s *Store) Status(ctx context.Context) (Status, error) {
	st := Status{Device: s.device, DeviceKeyID: s.id.KeyID, Policy: s.policy}
	for _, k := range s.servers {
		st.ServerKeyIDs = append(st.ServerKeyIDs, keys.KeyID(k))
	}
	var v []byte
	if err := s.db.QueryRowContext(ctx, `SELECT v FROM field_meta WHERE k = 'clock_hwm_us'`).Scan(&v); err != nil {
		return st, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	hwm, _ := strconv.ParseInt(string(v), 10, 64)
	st.ClockHighWater = time.UnixMicro(hwm).UTC()
	rows, err := s.db.QueryContext(ctx, `SELECT realm, usr, token FROM field_tokens ORDER BY realm, usr, token`)
	if err != nil {
		return st, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	var ks []TokenKey
	for rows.Next() {
		var k TokenKey
		if err := rows.Scan(&k.Realm, &k.User, &k.Token); err != nil {
			rows.Close()
			return st, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		ks = append(ks, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	now := s.now()
	for _, k := range ks {
		st.Tokens = append(st.Tokens, s.tokenStatus(ctx, k, now))
	}
	last, err := devicelog.Last(ctx, s.db)
	if err != nil {
		st.LogProblem = err.Error()
	} else if last != nil {
		st.LogEntries, st.LogHead = last.Seq, hex.EncodeToString(last.Hash)
	}
	if bad, err := devicelog.Verify(ctx, s.db, s.id.Public); err != nil {
		st.LogProblem = fmt.Sprintf("entry %d: %v", bad, err)
	}
	return st, nil
}

// Lookup resolves a user (with realm and token when the user has several
// tokens here) the way Verify does, and returns that token's status: which
// static secrets its bundle carries, whether it needs a PIN, how many
// entries are left.
func (s *Store) Lookup(ctx context.Context, realm, user, token string) (TokenStatus, error) {
	k, err := s.resolve(ctx, Attempt{Realm: realm, User: user, Token: token})
	if err != nil {
		return TokenStatus{}, err
	}
	return s.tokenStatus(ctx, k, s.now()), nil
}

func (s *Store) tokenStatus(ctx context.Context, k TokenKey, now time.Time) TokenStatus {
	ts := TokenStatus{TokenKey: k}
	state, err := s.readState(ctx, s.db, k)
	if err != nil {
		ts.Problem = err.Error()
		return ts
	}
	if state.lastUsed >= 0 {
		u := uint64(state.lastUsed)
		ts.LastUsed = &u
	}
	ts.Failures = state.failures
	if state.lockedUntil > now.UnixMicro() {
		ts.LockedUntil = time.UnixMicro(state.lockedUntil).UTC()
	}
	if state.wiped != 0 {
		ts.Wiped = time.UnixMicro(state.wiped).UTC()
	}
	b, err := s.loadBundle(ctx, s.db, k)
	switch {
	case err != nil:
		ts.Problem = err.Error()
	case b != nil:
		ts.Type, ts.Digits, ts.PIN, ts.Serial = b.OTP.Type, b.Params.Digits, b.PIN, b.Serial
		ts.First, ts.Last, ts.Entries = b.First, b.Last(), b.Count()
		ts.NotBefore, ts.NotAfter, ts.Secrets = b.NotBefore, b.NotAfter, b.SecretNames()
		ts.Remaining = s.remaining(b, state, now)
	}
	return ts
}

// remaining counts the entries still usable at now: above the last used
// counter and, for TOTP, not in the past beyond the window.
func (s *Store) remaining(b *bundlefmt.Bundle, st tokenState, now time.Time) int {
	from := st.next(b)
	if b.Params.Type == otp.TypeTOTP {
		lo, _ := otp.Window{Back: s.policy.TOTPBack}.Range(b.Params.Step(now))
		from = max(from, lo)
	}
	if from > b.Last() {
		return 0
	}
	return int(b.Last() - from + 1)
}

// Unlock is Verify for a code that opens static secrets: it checks, before
// the code is used, that the user's bundle carries secrets and, when name is
// not empty, the secret name (an error wrapping ErrNoSecret otherwise, with
// nothing counted); then verifies a as Verify does and decrypts the named
// secret, or every secret, with the released key.
func (s *Store) Unlock(ctx context.Context, a Attempt, name string) (*Result, map[string][]byte, error) {
	ts, err := s.Lookup(ctx, a.Realm, a.User, a.Token)
	if err != nil {
		return nil, nil, err
	}
	if name != "" && !slices.Contains(ts.Secrets, name) {
		return nil, nil, fmt.Errorf("%w: the bundle of %s carries no secret %q (it has: %s); the code was not used",
			ErrNoSecret, ts.TokenKey, ident.Clip(name), strings.Join(ts.Secrets, ", "))
	}
	if len(ts.Secrets) == 0 && ts.Wiped.IsZero() {
		return nil, nil, fmt.Errorf("%w: the bundle of %s carries no static secret (verify the code instead); the code was not used", ErrNoSecret, ts.TokenKey)
	}
	res, err := s.Verify(ctx, a)
	if err != nil {
		return nil, nil, err
	}
	names := res.SecretNames()
	if name != "" {
		names = []string{name}
	}
	secrets := make(map[string][]byte, len(names))
	for _, n := range names {
		v, err := res.Secret(n)
		if err != nil {
			return res, nil, err
		}
		secrets[n] = v
	}
	return res, secrets, nil
}
