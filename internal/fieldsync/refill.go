package fieldsync

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/otp"
)

// Refill (privacyIDEA's "refill", done safely). A token is due for a refill
// when, by the server's own count, fewer than RefillBelow of the entries of
// the bundle the device stands on remain: HOTP counters after the highest
// one used anywhere, TOTP steps after the current one. Everything is judged
// from the server's records, never from the device's word:
//
//   - the bundle is the one the server recorded issuing to this device
//     (store.IssuedBundle) and the device's log showed importing, checked
//     against that record; its type, range, PIN and secrets are the
//     record's;
//   - proof of use: the server accepted, from this device's signed log, a
//     code of that very bundle inside its issued range. A bare OTP, a
//     forged import or a counter outside the range never earns a bundle;
//   - the refill is bound to the device key (the upload that asks for it is
//     signed by it, and the bundle is bound to the device id).
//
// What cannot be refilled, and why (the answer says so, per token):
//   - a PIN bundle: the server holds the PIN only as an argon2id hash and
//     cannot mix it into new entries; the user runs 'outpost field login'
//     (online PIN + OTP), which returns a PIN bundle;
//   - a bundle with static secrets: the server does not keep their values;
//     the issuer issues a new bundle;
//   - a wiped token, or a token no longer active.
//
// One refill is computed per sync (each costs seconds of KDF work); a
// device with several due tokens gets the next one at its next sync. A
// refill issued but not imported (the answer was lost) is sent again, not
// issued twice.

// maxRefillsPerSync bounds the refills started in one sync.
const maxRefillsPerSync = 1

// refillRun is one sync's refill decisions.
type refillRun struct {
	s       *Service
	out     *outcome
	now     time.Time
	started int
}

func (s *Service) refill(ctx context.Context, out *outcome, u *syncproto.Upload, now time.Time) {
	if s.Refill == nil {
		return
	}
	r := &refillRun{s: s, out: out, now: now}
	for i := range u.Tokens {
		r.token(ctx, &u.Tokens[i])
	}
}

func (r *refillRun) no(k syncproto.TokenKey, format string, a ...any) {
	reason := fmt.Sprintf(format, a...)
	if len(reason) > syncproto.MaxReason {
		reason = reason[:syncproto.MaxReason-3] + "..."
	}
	r.out.resp.NoRefill = append(r.out.resp.NoRefill, syncproto.NoRefill{TokenKey: k, Reason: reason})
}

// token decides the refill of one token the device reports holding.
func (r *refillRun) token(ctx context.Context, st *syncproto.TokenState) {
	k := st.Key()
	t, ok := r.out.tokens[k]
	dt, b := r.out.dts[k], r.out.current[k]
	if st.Type == "" || !ok || dt == nil || b == nil || t.Status != store.TokenActive || !r.s.due(t, b, r.now) {
		return
	}
	switch {
	case st.Wiped || dt.Wiped:
		r.no(k, "wiped: the user must authenticate online ('outpost field login') to get a new bundle")
	case st.Serial != b.Serial || dt.UsedSerial != b.Serial:
		r.no(k, "no proof of use: the server has not accepted from this device's log a code of bundle serial %d inside its issued range", b.Serial)
	case b.PIN:
		r.no(k, "pin: the server cannot refill a PIN bundle (it never holds the PIN): run 'outpost field login' with the user's PIN and code")
	case b.Secrets > 0:
		r.no(k, "secrets: the bundle carries static secrets the server does not keep: ask the issuer for a new bundle")
	default:
		r.give(ctx, k, RefillNeed{Device: r.out.device, Token: t, Type: b.Type, FromSerial: b.Serial, First: b.First, Last: b.Last})
	}
}

// due reports whether, by the server's count, fewer than RefillBelow of
// issued bundle b's entries remain.
func (s *Service) due(t store.Token, b *store.IssuedBundle, now time.Time) bool {
	p, err := online.Params(t)
	if err != nil {
		return false
	}
	below := s.RefillBelow
	if below <= 0 {
		below = DefaultRefillBelow
	}
	from := b.First // first entry still usable
	if p.Type == otp.TypeTOTP {
		from = p.Step(now)
	} else if t.Used && t.LastUsed >= 0 && uint64(t.LastUsed)+1 > from {
		from = uint64(t.LastUsed) + 1
	}
	remaining := uint64(0)
	if from <= b.Last {
		remaining = b.Last - from + 1
	}
	return remaining == 0 || float64(remaining) < below*float64(b.Last-b.First+1)
}

// give answers a due refill: the stored one, a finished or pending job's,
// or a new job.
func (r *refillRun) give(ctx context.Context, k syncproto.TokenKey, need RefillNeed) {
	s := r.s
	if len(r.out.resp.Refills) >= syncproto.MaxRefills {
		r.no(k, "this answer carries as many refills as it may: sync again for this one")
		return
	}
	if got, err := s.Sync.GetRefill(ctx, k.Realm, need.Device.ID, k.User, k.Token, need.FromSerial); err == nil {
		r.out.resp.Refills = append(r.out.resp.Refills, syncproto.Refill{TokenKey: k, Bundle: got.Bundle})
		return
	} else if !errors.Is(err, store.ErrNotFound) {
		r.no(k, "refill lookup failed: sync again later")
		return
	}
	if r.started >= maxRefillsPerSync {
		r.no(k, "another refill was computed in this sync: sync again for this one")
		return
	}
	r.started++
	data, err := s.issueRefill(ctx, need)
	if err != nil {
		r.no(k, "%v", err)
		return
	}
	r.out.resp.Refills = append(r.out.resp.Refills, syncproto.Refill{TokenKey: k, Bundle: data})
}

func (s *Service) issueRefill(ctx context.Context, need RefillNeed) ([]byte, error) {
	k := need.Token
	data, err := s.Refill(ctx, need)
	if err != nil {
		return nil, fmt.Errorf("refill refused: %w", err)
	}
	h, _, err := artifact.Verify(data, artifact.Keys{s.Signer.Public}, artifact.Expect{Subject: need.Device.ID})
	if err != nil {
		return nil, fmt.Errorf("refill failed: %w", err)
	}
	rf := store.Refill{Realm: k.Realm, Device: need.Device.ID, UserID: k.UserID, TokenID: k.ID, FromSerial: need.FromSerial,
		Serial: h.Serial, Bundle: data, IssuedAt: s.now()}
	err = s.Sync.PutRefill(ctx, rf)
	if errors.Is(err, store.ErrExists) {
		// Another replica refilled it first: hand out that one.
		got, gerr := s.Sync.GetRefill(ctx, k.Realm, need.Device.ID, k.UserID, k.ID, need.FromSerial)
		return got.Bundle, gerr
	}
	if err != nil {
		return nil, errors.New("refill could not be stored: sync again later")
	}
	return data, nil
}
