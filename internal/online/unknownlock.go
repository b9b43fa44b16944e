package online

import (
	"hash/maphash"
	"sync"
	"time"
)

// Unknown users lock out like known ones. A known user's failures are
// counted in the store, and after FreeFailures each one imposes a delay
// (429 with Retry-After) up to the hard lock at MaxFailures; an unknown
// user's used to be tallied only, so that it answered invalid_code forever:
// a few wrong codes per name told a verifier which users exist. Now the
// failures of unknown (realm, user) pairs are counted too, in memory, and
// the same Policy decides the same answers from them.
//
// The count is bounded: at most maxUnknownFailures pairs, each forgotten
// unknownFailureTTL after its last failure (by the service's clock). When
// full, forgotten pairs go first, then the one whose last failure is
// oldest. Pairs are kept as a keyed 64-bit hash of realm and name, never
// the name (what an attacker typed may be a password): about 6 MiB when
// full. The count is per process: each replica counts its own, and a
// restart forgets it (docs/server.md, issue 9).
const (
	maxUnknownFailures = 65536
	unknownFailureTTL  = 24 * time.Hour
)

// unknownFailure is one unknown pair's consecutive failures, the last at last.
type unknownFailure struct {
	failures int
	last     time.Time
}

// unknownFailures counts failures of unknown users. The zero value is ready.
type unknownFailures struct {
	mu   sync.Mutex
	once sync.Once
	seed maphash.Seed
	m    map[uint64]unknownFailure
}

func (u *unknownFailures) key(realm, user string) uint64 {
	u.once.Do(func() { u.seed = maphash.MakeSeed() })
	var h maphash.Hash
	h.SetSeed(u.seed)
	h.WriteString(realm)
	h.WriteByte(0)
	h.WriteString(user)
	return h.Sum64()
}

// locked is Policy.Locked for an unknown user.
func (u *unknownFailures) locked(p Policy, realm, user string, now time.Time) (Lock, bool) {
	k := u.key(realm, user)
	u.mu.Lock()
	f, ok := u.m[k]
	u.mu.Unlock()
	if !ok || now.Sub(f.last) > unknownFailureTTL {
		return Lock{}, false
	}
	return p.Locked(f.failures, f.last, now)
}

// fail counts one failure of an unknown user at now.
func (u *unknownFailures) fail(realm, user string, now time.Time) {
	k := u.key(realm, user)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[uint64]unknownFailure{}
	}
	f, ok := u.m[k]
	if ok && now.Sub(f.last) > unknownFailureTTL {
		f = unknownFailure{}
	}
	if !ok && len(u.m) >= maxUnknownFailures {
		u.evict(now)
	}
	f.failures++
	f.last = now
	u.m[k] = f
}

// evict makes room for one pair: it forgets the pairs past their time and,
// if none was, the one whose last failure is oldest. u.mu is held.
func (u *unknownFailures) evict(now time.Time) {
	var oldest uint64
	var at time.Time
	n := len(u.m)
	for k, f := range u.m {
		if now.Sub(f.last) > unknownFailureTTL {
			delete(u.m, k)
			continue
		}
		if at.IsZero() || f.last.Before(at) {
			oldest, at = k, f.last
		}
	}
	if len(u.m) == n {
		delete(u.m, oldest)
	}
}
