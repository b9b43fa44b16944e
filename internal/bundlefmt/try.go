package bundlefmt

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/outpost-auth/outpost/otp"
)

// MaxTry bounds how many entries one Try may evaluate.
const MaxTry = 64

// ErrNoMatch means the code (with the PIN) opened no entry in the range tried.
var ErrNoMatch = errors.New("offline: the code does not match")

// Try runs the KDF for every counter (or step) in [lo, hi] — the window the
// caller chose, never the whole list — on up to workers goroutines
// (0 = GOMAXPROCS), and returns the lowest counter whose entry the code and
// PIN open, with the release key. A wrong code costs exactly hi-lo+1 KDF
// evaluations; a right one may stop earlier. The code's format is checked
// first (otp.ErrMalformedCode), so a malformed code costs nothing.
//
// Try keeps no state: one-time use, the error counter and the clock rules
// are the [Store]'s job.
func (b *Bundle) Try(ctx context.Context, lo, hi uint64, code, pin string, workers int) (uint64, []byte, error) {
	if err := otp.CheckCode(code, b.Params.Digits); err != nil {
		return 0, nil, err
	}
	if lo < b.First || hi > b.Last() || hi < lo || hi-lo >= MaxTry {
		return 0, nil, fmt.Errorf("offline: Try range [%d, %d] outside the bundle's [%d, %d] or wider than %d", lo, hi, b.First, b.Last(), MaxTry)
	}
	n := int(hi-lo) + 1
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, n)
	var (
		mu      sync.Mutex
		next    = lo
		found   = false
		best    uint64
		release []byte
		wg      sync.WaitGroup
	)
	// take hands out counters in order, skipping those above a match already found.
	take := func() (uint64, bool) {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil || next > hi || (found && next > best) {
			return 0, false
		}
		c := next
		next++
		return c, true
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, ok := take()
				if !ok {
					return
				}
				key, ok := b.OpenEntry(c, code, pin)
				if !ok {
					continue
				}
				mu.Lock()
				if !found || c < best {
					clear(release)
					found, best, release = true, c, key
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if found {
		return best, release, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	return 0, nil, ErrNoMatch
}
