package online

import (
	"context"
	"hash/maphash"
	"sync"
)

// userLocks serialises verification attempts per user: 1,024 striped
// one-slot semaphores keyed by a hash of realm and user. Without it, a burst
// of parallel guesses would all read the same failure count and all be
// evaluated before the first failure is recorded, getting far more guesses
// than the lockout allows. Unrelated users share a stripe rarely, and then
// only wait for each other's few milliseconds. The zero value is ready.
type userLocks struct {
	once  sync.Once
	seed  maphash.Seed
	slots [1024]chan struct{}
}

// lock waits for the user's slot (or ctx) and returns the release function.
func (l *userLocks) lock(ctx context.Context, realm, user string) (func(), error) {
	l.once.Do(func() {
		l.seed = maphash.MakeSeed()
		for i := range l.slots {
			l.slots[i] = make(chan struct{}, 1)
		}
	})
	var h maphash.Hash
	h.SetSeed(l.seed)
	h.WriteString(realm)
	h.WriteByte(0)
	h.WriteString(user)
	c := l.slots[h.Sum64()%uint64(len(l.slots))]
	select {
	case c <- struct{}{}:
		return func() { <-c }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
