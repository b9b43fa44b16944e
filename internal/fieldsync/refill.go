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
// when, by the server's own count, fewer than RefillBelow of its bundle's
// entries remain: HOTP counters after the highest one used anywhere, TOTP
// steps after the current one. A refill is bound to the device key (the
// upload that asks for it is signed by it, and the bundle is bound to the
// device id) and to proof of use: the server must hold the device's signed
// log entries saying it imported that very bundle (by serial) and accepted
// a code from it. A bare OTP never earns a bundle.
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

// maxRefillsPerSync bounds the bundles computed in one sync.
const maxRefillsPerSync = 1

func (s *Service) refill(ctx context.Context, out *outcome, u *syncproto.Upload, now time.Time) {
	if s.Refill == nil {
		return
	}
	below := s.RefillBelow
	if below <= 0 {
		below = DefaultRefillBelow
	}
	issued := 0
	for i := range u.Tokens {
		st := &u.Tokens[i]
		k := st.Key()
		t, ok := out.tokens[k]
		dt := out.dts[k]
		if st.Type == "" || !ok || dt == nil || t.Status != store.TokenActive {
			continue
		}
		p, err := online.Params(t)
		if err != nil {
			continue
		}
		entries := st.Last - st.First + 1
		var from uint64 // first entry still usable
		if p.Type == otp.TypeTOTP {
			from = p.Step(now)
		} else {
			from = st.First
			if t.Used && t.LastUsed >= 0 && uint64(t.LastUsed)+1 > from {
				from = uint64(t.LastUsed) + 1
			}
		}
		remaining := uint64(0)
		if from <= st.Last {
			remaining = st.Last - from + 1
		}
		if remaining > 0 && float64(remaining) >= below*float64(entries) {
			continue
		}
		no := func(format string, a ...any) {
			out.resp.NoRefill = append(out.resp.NoRefill, syncproto.NoRefill{TokenKey: k, Reason: fmt.Sprintf(format, a...)})
		}
		switch {
		case st.Wiped:
			no("wiped: the user must authenticate online ('outpost field login') to get a new bundle")
			continue
		case dt.Serial != st.Serial || dt.UsedSerial != st.Serial:
			no("no proof of use: the server has not received this device's log entries importing bundle serial %d and accepting a code from it", st.Serial)
			continue
		case st.PIN:
			no("pin: the server cannot refill a PIN bundle (it never holds the PIN): run 'outpost field login' with the user's PIN and code")
			continue
		case st.Secrets > 0:
			no("secrets: the bundle carries static secrets the server does not keep: ask the issuer for a new bundle")
			continue
		}
		if r, err := s.Sync.GetRefill(ctx, k.Realm, out.device.ID, k.User, k.Token, st.Serial); err == nil {
			out.resp.Refills = append(out.resp.Refills, syncproto.Refill{TokenKey: k, Bundle: r.Bundle})
			continue
		} else if !errors.Is(err, store.ErrNotFound) {
			no("refill lookup failed: sync again later")
			continue
		}
		if issued >= maxRefillsPerSync || len(out.resp.Refills) >= syncproto.MaxRefills {
			no("another refill was computed in this sync: sync again for this one")
			continue
		}
		issued++
		data, err := s.Refill(ctx, RefillNeed{Device: out.device, Token: t, Type: st.Type, FromSerial: st.Serial, First: st.First, Last: st.Last})
		if err != nil {
			no("refill refused: %v", err)
			continue
		}
		h, _, err := artifact.Verify(data, artifact.Keys{s.Signer.Public}, artifact.Expect{Subject: out.device.ID})
		if err != nil {
			no("refill failed: %v", err)
			continue
		}
		r := store.Refill{Realm: k.Realm, Device: out.device.ID, UserID: k.User, TokenID: k.Token, FromSerial: st.Serial,
			Serial: h.Serial, Bundle: data, IssuedAt: now}
		if err := s.Sync.PutRefill(ctx, r); errors.Is(err, store.ErrExists) {
			// Another replica refilled it first: send that one.
			if r2, err := s.Sync.GetRefill(ctx, k.Realm, out.device.ID, k.User, k.Token, st.Serial); err == nil {
				r = r2
			}
		} else if err != nil {
			no("refill could not be stored: sync again later")
			continue
		}
		out.resp.Refills = append(out.resp.Refills, syncproto.Refill{TokenKey: k, Bundle: r.Bundle})
	}
}
