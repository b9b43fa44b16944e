package server

import (
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/store"
)

// authCacheTTL is how long an API client lookup is reused. Disabling a
// client takes effect at once on the replica that disabled it and within
// this long on the others.
const authCacheTTL = 10 * time.Second

// authCacheMax bounds the cache; it is cleared when full (tokens are few).
const authCacheMax = 10000

// authCache maps an API token's HMAC to its client, so that the hot path
// (POST /v1/verify) does not query the database to authenticate.
type authCache struct {
	mu sync.Mutex
	m  map[string]authEntry
}

type authEntry struct {
	c       store.APIClient
	expires time.Time
}

func (a *authCache) get(hash []byte, now time.Time) (store.APIClient, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.m[string(hash)]
	if !ok || now.After(e.expires) {
		return store.APIClient{}, false
	}
	return e.c, true
}

func (a *authCache) put(hash []byte, c store.APIClient, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil || len(a.m) >= authCacheMax {
		a.m = make(map[string]authEntry)
	}
	a.m[string(hash)] = authEntry{c: c, expires: now.Add(authCacheTTL)}
}

// drop forgets a client (after it is disabled).
func (a *authCache) drop(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, e := range a.m {
		if e.c.ID == id {
			delete(a.m, k)
		}
	}
}
