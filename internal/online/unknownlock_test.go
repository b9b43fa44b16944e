package online

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// answer names Verify's answer: "invalid", "delayed", "hard" or the error.
func answer(err error) string {
	var l *LockedError
	switch {
	case errors.Is(err, ErrInvalidCode):
		return "invalid"
	case errors.As(err, &l) && l.Hard:
		return "hard"
	case errors.As(err, &l):
		return "delayed"
	}
	return fmt.Sprint(err)
}

// An unknown user is answered like a known one at every step of the
// lockout: free failures, delays (and an attempt after one), the hard lock.
func TestUnknownUserLocksLikeKnown(t *testing.T) {
	for _, eng := range []struct {
		name string
		dsn  func(testing.TB) string
	}{{"sqlite", storetest.SQLitePath}, {"postgres", storetest.PostgresDSN}} {
		t.Run(eng.name, func(t *testing.T) {
			s, at, _ := newTestService(t, eng.dsn(t))
			p := s.Policy
			// The steps: each attempt, then how long the clock moves.
			var steps []time.Duration
			for i := 1; i <= p.MaxFailures+1; i++ {
				steps = append(steps, 0)          // at once: delayed once past the free failures
				steps = append(steps, p.Delay(i)) // after the delay: evaluated again
			}
			run := func(realm, user string) []string {
				var out []string
				for _, d := range steps {
					_, err := s.Verify(ctx, realm, user, "123456", "", "api:c1")
					out = append(out, answer(err))
					*at = at.Add(d + time.Millisecond)
				}
				return out
			}
			known, unknown, other := run("r1", "known"), run("r1", "ghost"), run("r2", "known")
			for i := range known {
				if known[i] != unknown[i] || known[i] != other[i] {
					t.Fatalf("attempt %d: known %q, unknown %q, unknown in another realm %q\nknown   %v\nunknown %v", i+1, known[i], unknown[i], other[i], known, unknown)
				}
			}
			if known[len(known)-1] != "hard" {
				t.Fatalf("never locked: %v", known)
			}
			// Forgotten a day after the last failure (the known user stays locked).
			*at = at.Add(unknownFailureTTL + time.Second)
			if _, err := s.Verify(ctx, "r1", "ghost", "123456", "", "api:c1"); answer(err) != "invalid" {
				t.Fatalf("an unknown user a day after its last failure: %v", err)
			}
		})
	}
}

// However many names are guessed, at most maxUnknownFailures pairs are
// counted; the ones past their time go first, then the oldest.
func TestUnknownFailuresBounded(t *testing.T) {
	var u unknownFailures
	t0 := time.Date(2031, 3, 4, 5, 0, 0, 0, time.UTC)
	for i := range maxUnknownFailures {
		u.fail("r", fmt.Sprint(i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	u.fail("r", "0", t0.Add(time.Hour)) // 0 is now the newest
	later := t0.Add(2 * time.Hour)
	for i := range 3 {
		u.fail("r", fmt.Sprint("new-", i), later)
	}
	if len(u.m) != maxUnknownFailures {
		t.Fatalf("%d pairs counted, at most %d", len(u.m), maxUnknownFailures)
	}
	for name, kept := range map[string]bool{"0": true, "1": false, "2": false, "3": false, "4": true, "new-2": true} {
		if _, ok := u.m[u.key("r", name)]; ok != kept {
			t.Errorf("%s kept %v, want %v", name, ok, kept)
		}
	}
	// A day on, every old pair is past its time: one sweep forgets them all.
	u.fail("r", "late", later.Add(unknownFailureTTL+time.Second))
	if len(u.m) != 1 {
		t.Fatalf("%d pairs after the sweep, want 1", len(u.m))
	}
}
