package issuance

import (
	"context"

	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/otp"
)

// Refill issues the refill the sync service decided need's device earned
// (fieldsync.Service's Refill; fieldsync judged the proof of use from the
// bundles it recorded issuing): a bundle for the same token and device as
// the old one, as many entries as it had, starting after the token's
// online state. It is an ordinary request, asked by the device with the
// issuer's rights and checked like any other: the floor (no override), the
// PIN rule (a PIN user gets no refill: the server never holds the PIN),
// the lockout (a locked user gets none) and SyncLimit; recorded as issued
// and audited with the device as actor.
func (s *Service) Refill(ctx context.Context, need fieldsync.RefillNeed) ([]byte, error) {
	c := Caller{Realm: need.Device.Realm, Actor: "device:" + need.Device.ID}
	in := Request{User: need.Token.UserID, Token: need.Token.ID, Device: need.Device.ID}
	entries := need.Last - need.First + 1
	if need.Type == "totp" {
		// As many steps as before, from the first one not used online (the
		// bundle starts after the token's last used step).
		p, err := online.Params(need.Token)
		if err != nil {
			return nil, err
		}
		first := max(p.Step(s.now()), otp.NextCounter(need.Token.Used && need.Token.LastUsed >= 0, uint64(need.Token.LastUsed)))
		in.From, in.Until = otp.StepTime(first, p.Period, p.T0), otp.StepTime(first+entries, p.Period, p.T0)
	} else {
		in.Count = int(min(entries, bundlefmt.MaxEntries))
	}
	a, err := s.admit(ctx, c, in, SyncLimit, "the refill would take about %s of KDF work, too long for a refill: ask the issuer for a new bundle")
	if err != nil {
		return nil, err
	}
	release, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer release()
	out, err := s.issue(ctx, c.Actor, a.req, nil)
	return out.Bundle, err
}
