// Package backoff is Outpost's growing delay after failed attempts, written
// once for every verifier: online (internal/online), the field device
// (offline) and the site (site). Each keeps its own counter and policy;
// all of them ask [Delay] how long the next attempt must wait.
//
//	wait := backoff.Delay(time.Second, 5*time.Minute, n) // 1 s, 2 s, 4 s … 5 min
package backoff

import "time"

// Delay is the wait after the n-th delayed failure: base doubled n-1 times,
// at most max. It is 0 when n < 1 or base <= 0 (delays disabled), and never
// overflows, whatever n.
func Delay(base, max time.Duration, n int) time.Duration {
	if n < 1 || base <= 0 {
		return 0
	}
	d := base
	for i := 1; i < n && d < max; i++ {
		if d > max/2 {
			return max
		}
		d *= 2
	}
	return min(d, max)
}
