package online

import (
	"context"
	"crypto/rand"
	"errors"
	"runtime"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/pin"
)

// ErrBusy is returned when a PIN check waited longer than the service's
// PINWait for one of the MaxPINChecks slots. Nothing was counted or changed:
// the caller may retry (HTTP answers 503 with Retry-After).
var ErrBusy = errors.New("online: too many PIN checks in progress, retry shortly")

// DefaultPINWait is how long a request waits for a PIN check slot by default.
const DefaultPINWait = 2 * time.Second

// pinGate caps the argon2id PIN checks running at once in this process:
// each holds pin.Cost's memory (19 MiB) and a core for tens of
// milliseconds, so 200 parallel requests would otherwise take gigabytes.
// It also keeps the dummy hash that users without a PIN, and unknown
// users, are checked against, so that every verification costs one argon2id.
type pinGate struct {
	once  sync.Once
	slots chan struct{}
	dummy []byte
	err   error
}

func (g *pinGate) init(n int) {
	g.once.Do(func() {
		g.slots = make(chan struct{}, n)
		// A random PIN nobody knows, hashed with the current cost: the
		// check of it costs what a real user's costs. Its answer is never used.
		var b [pin.MaxLen]byte
		if _, err := rand.Read(b[:]); err != nil {
			g.err = err
			return
		}
		for i := range b {
			b[i] = '0' + b[i]%10
		}
		g.dummy, g.err = pin.Hash(string(b[:]))
	})
}

// maxPINChecks is the cap: MaxPINChecks, or max(2, NumCPU).
func (s *Service) maxPINChecks() int {
	if s.MaxPINChecks > 0 {
		return s.MaxPINChecks
	}
	return max(2, runtime.NumCPU())
}

// pinMatches reports whether p matches hash, in one of the capped slots.
// A nil hash (no PIN, or no user) is checked against the dummy hash and
// never matches; the time taken is the same.
func (s *Service) pinMatches(ctx context.Context, hash []byte, p string) (bool, error) {
	s.pins.init(s.maxPINChecks())
	if s.pins.err != nil {
		return false, s.pins.err
	}
	release, err := s.pins.acquire(ctx, s.PINWait)
	if err != nil {
		return false, err
	}
	defer release()
	check := s.CheckPINHash
	if check == nil {
		check = pin.Check
	}
	if hash == nil {
		check(s.pins.dummy, p)
		return false, nil
	}
	return check(hash, p), nil
}

// acquire waits up to wait (DefaultPINWait when 0) for a slot. The wait is
// load shedding, not a decision about a credential, so it runs on the
// runtime's timer rather than the service's clock.
func (g *pinGate) acquire(ctx context.Context, wait time.Duration) (func(), error) {
	release := func() { <-g.slots }
	select {
	case g.slots <- struct{}{}:
		return release, nil
	default:
	}
	if wait <= 0 {
		wait = DefaultPINWait
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		return release, nil
	case <-t.C:
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
