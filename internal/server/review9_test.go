package server

import (
	"path/filepath"
	"testing"
)

// Review of issue 9 (an attacker's read): holes found, one test each.

// TestLockoutIsNoUserOracle: a verifier-scoped client, which cannot list
// users, learns whether a user exists from the lockout alone. A known
// user's failures are counted and after FreeFailures the answer becomes
// 429 "locked" (Retry-After); an unknown user's failures are only tallied,
// so the answer stays 401 invalid_code forever. Five wrong codes per name
// enumerate users on /v1/verify (and /v1/offline/login alike), whatever the
// first answers' bodies and timings hide.
func TestLockoutIsNoUserOracle(t *testing.T) {
	cheapPINs(t, 1024)
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	verifier := f.client("verifier")
	uri := f.enrol("known", map[string]any{"type": "totp"})
	wrong := f.wrongCode(uri)
	answers := func(user string) []string {
		var out []string
		for range f.srv.cfg.Policy.FreeFailures + 2 {
			r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": user, "code": wrong})
			out = append(out, r.errCode())
		}
		return out
	}
	known, unknown := answers("known"), answers("ghost")
	for i := range known {
		if known[i] != unknown[i] {
			t.Fatalf("attempt %d: a known user is answered %q, an unknown one %q: the lockout tells who exists (known %v, unknown %v)",
				i+1, known[i], unknown[i], known, unknown)
		}
	}
}
