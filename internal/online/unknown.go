package online

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/clock"
)

// DefaultUnknownInterval is how often the unknown-user tally is written.
const DefaultUnknownInterval = time.Minute

// Bounds of the unknown-user tally's memory: realms tallied apart (the
// rest share one row, realm "*"), and the user names and API clients each
// realm's entry samples. However many names are guessed, the tally holds
// at most maxUnknownRealms × (maxUnknownSample + maxUnknownActors) strings.
const (
	maxUnknownRealms = 1024
	maxUnknownSample = 16
	maxUnknownActors = 8
)

// unknownTally is one realm's verifications for unknown users in the
// current interval: the audit entry verify.unknown_user is made of it.
type unknownTally struct {
	Realm string    `json:"realm"`
	Count uint64    `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Users are HMAC-SHA256 (keyed, truncated to 16 bytes, hex) of up to
	// maxUnknownSample distinct names: enough to see whether one name is
	// tried again and again or many are swept, without storing what an
	// attacker typed (a password pasted into the user field, say).
	Users []string `json:"users_hmac"`
	// Actors are up to maxUnknownActors API clients that asked.
	Actors []string `json:"actors"`
}

// unknownUsers tallies verifications for unknown users per realm, in
// memory, and writes one audit entry per realm per interval (by the
// service's clock). A burst of guessed names thus adds O(realms) entries
// per interval to the audit log, not one each. The zero value is ready.
type unknownUsers struct {
	mu     sync.Mutex
	key    []byte
	start  time.Time
	realms map[string]*unknownTally
}

func (s *Service) unknownInterval() time.Duration {
	if s.UnknownInterval > 0 {
		return s.UnknownInterval
	}
	return DefaultUnknownInterval
}

// tallyUnknown counts one verification for user, unknown in realm.
func (s *Service) tallyUnknown(realm, user, actor string) {
	now := s.now()
	u := &s.unknown
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.key == nil {
		u.key = s.UnknownKey
		if u.key == nil {
			u.key = make([]byte, 32)
			_, _ = rand.Read(u.key)
		}
	}
	if u.realms == nil {
		u.realms, u.start = map[string]*unknownTally{}, now
	}
	t := u.realms[realm]
	if t == nil {
		if len(u.realms) >= maxUnknownRealms {
			realm = "*"
		}
		if t = u.realms[realm]; t == nil {
			t = &unknownTally{Realm: realm, First: now}
			u.realms[realm] = t
		}
	}
	t.Count++
	t.Last = now
	m := hmac.New(sha256.New, u.key)
	m.Write([]byte(realm + "\x00" + user))
	addSample(&t.Users, hex.EncodeToString(m.Sum(nil)[:16]), maxUnknownSample)
	addSample(&t.Actors, actor, maxUnknownActors)
}

func addSample(set *[]string, v string, limit int) {
	if len(*set) < limit && !slices.Contains(*set, v) {
		*set = append(*set, v)
	}
}

// take removes and returns the tallies when an interval has passed since
// the first of them (or always, with force).
func (u *unknownUsers) take(now time.Time, interval time.Duration, force bool) []*unknownTally {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.realms) == 0 || (!force && now.Sub(u.start) < interval) {
		return nil
	}
	out := make([]*unknownTally, 0, len(u.realms))
	for _, t := range u.realms {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Realm < out[j].Realm })
	u.realms = nil
	return out
}

// giveBack returns tallies whose entry could not be written, so that
// nothing is lost: the next flush writes them (their interval is over).
func (u *unknownUsers) giveBack(ts []*unknownTally) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.realms == nil {
		u.realms, u.start = map[string]*unknownTally{}, ts[0].First
	}
	for _, t := range ts {
		if t.First.Before(u.start) {
			u.start = t.First
		}
		cur := u.realms[t.Realm]
		if cur == nil {
			u.realms[t.Realm] = t
			continue
		}
		cur.Count += t.Count
		cur.First = t.First
		for _, v := range t.Users {
			addSample(&cur.Users, v, maxUnknownSample)
		}
		for _, v := range t.Actors {
			addSample(&cur.Actors, v, maxUnknownActors)
		}
	}
}

// FlushUnknown writes the unknown-user tallies to the audit log, one
// verify.unknown_user entry per realm, if UnknownInterval has passed since
// the oldest (by the service's clock), or always with force (at shutdown).
// Verify calls it too, so a busy server writes them without help; an idle
// one relies on its caller (`outpost serve` calls it every few seconds).
// Tallies whose entry could not be written are kept for the next call.
func (s *Service) FlushUnknown(ctx context.Context, force bool) error {
	now := s.now()
	ts := s.unknown.take(now, s.unknownInterval(), force)
	for i, t := range ts {
		if err := s.outage.wrote(s.Audit.Record(ctx, audit.VerifyUnknownUser, "outpost", t.Realm, t)); err != nil {
			s.unknown.giveBack(ts[i:])
			return err
		}
	}
	return nil
}

// flushUnknownIfDue is FlushUnknown on a verification's path: a failure
// to write keeps the tallies and does not fail the verification.
func (s *Service) flushUnknownIfDue(ctx context.Context) {
	_ = s.FlushUnknown(ctx, false)
}

// FlushUnknownEvery calls FlushUnknown (not forced) every tick until ctx
// ends; `outpost serve` runs it so that an idle server writes its tallies
// too. The ticker only wakes it: whether an interval has passed is the
// service's clock's to say.
func (s *Service) FlushUnknownEvery(ctx context.Context, tick time.Duration) {
	clock.Every(ctx, tick, func() { _ = s.FlushUnknown(ctx, false) })
}
