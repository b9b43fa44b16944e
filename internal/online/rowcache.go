package online

import (
	"slices"
	"sync"

	"github.com/outpost-auth/outpost/internal/store"
)

// DefaultRowCacheSize is how many users' rows a Service keeps when
// RowCacheSize is 0: about 600 bytes each with one token, so some 40 MB.
const DefaultRowCacheSize = 65536

// rowCache keeps, per replica, the rows a verification reads (a user and
// its tokens, with the user's Version) for users without a PIN, so that a
// right code needs no read before its acceptance.
//
// The cache is trusted for one thing only: to accept. A cached entry
// answers a verification only when the code matches a fresh value of an
// active token of a user with no PIN and no failures, and the acceptance's
// conditional UPDATE checks, atomically with the write, that the user's
// Version is still the cached one (store.AcceptCode): a change made
// anywhere — another replica, the admin API, a failure counted elsewhere —
// moves the Version and the acceptance fails with store.ErrStale. Every
// other outcome (no fresh match, a replay, a stale version, a user with a
// PIN or failures) drops the entry and decides from a fresh read, as
// without the cache, so that no refusal, failure count or lockout is ever
// decided from cached rows. A token's last used value may lag in the cache
// (AcceptCode does not move the Version): the conditional UPDATE still
// accepts a value at most once, and a lagging entry only costs a fresh read.
//
// This replica's own changes (SetPIN, Enrol, Confirm, ResetLockout,
// deletions) drop the entry too, so that its next verification reads
// instead of meeting ErrStale; that is economy, not the guarantee: the
// version is.
//
// Entries hold what a read returns (seeds only as ciphertext, or not at
// all when derived). Size is bounded: when full, an arbitrary entry goes.
type rowCache struct {
	mu   sync.Mutex
	max  int // <= 0: off
	rows map[rowKey]cachedRows
}

type rowKey struct{ realm, user string }

type cachedRows struct {
	u  store.User
	ts []store.Token
}

func newRowCache(max int) *rowCache {
	return &rowCache{max: max, rows: make(map[rowKey]cachedRows)}
}

// get returns a copy of the cached rows of user in realm.
func (c *rowCache) get(realm, user string) (store.User, []store.Token, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.rows[rowKey{realm, user}]
	return r.u, slices.Clone(r.ts), ok
}

// put caches u and ts as read from the store, if the quick path can use
// them (no PIN, no failures); else it drops what was cached for u.
func (c *rowCache) put(u store.User, ts []store.Token) {
	k := rowKey{u.Realm, u.ID}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max <= 0 || u.PINHash != nil || u.Failures != 0 || len(ts) == 0 {
		delete(c.rows, k)
		return
	}
	if _, ok := c.rows[k]; !ok && len(c.rows) >= c.max {
		for old := range c.rows {
			delete(c.rows, old)
			break
		}
	}
	c.rows[k] = cachedRows{u: u, ts: slices.Clone(ts)}
}

// used records that token id of the cached user accepted value m, if the
// entry is still the one of that version.
func (c *rowCache) used(realm, user string, version int64, id string, m uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.rows[rowKey{realm, user}]
	if !ok || r.u.Version != version {
		return
	}
	for i := range r.ts {
		if r.ts[i].ID == id {
			r.ts[i].LastUsed, r.ts[i].Used = int64(m), true
		}
	}
}

// drop forgets user in realm.
func (c *rowCache) drop(realm, user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.rows, rowKey{realm, user})
}
