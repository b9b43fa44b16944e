package online

// Unit tests of Service's verification rules, where they live: a real
// SQLite store in t.TempDir() (newTestService) and a clock pinned years
// ahead, with codes made by the otp package. internal/server checks the same
// rules through the HTTP API; these check them without it, one rule a table.

import (
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/otp"
)

const actor = "api:test"

var hotp6 = otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}

// fixture is a service on a fresh SQLite store, realm r1, and its clock.
type fixture struct {
	t  *testing.T
	s  *Service
	at *time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	s, at, _ := newTestService(t, storetest.SQLitePath(t))
	return &fixture{t: t, s: s, at: at}
}

// user creates id in r1, with pinCode as its PIN unless it is empty.
func (f *fixture) user(id, pinCode string) {
	f.t.Helper()
	if err := f.s.Store.CreateUser(ctx, store.User{Realm: "r1", ID: id}); err != nil {
		f.t.Fatal(err)
	}
	if pinCode == "" {
		return
	}
	if err := f.s.SetPIN(ctx, "r1", id, pinCode, actor); err != nil {
		f.t.Fatal(err)
	}
}

// testToken is an enrolled token, its seed and its parameters.
type testToken struct {
	store.Token
	seed []byte
	p    otp.Params
}

// token enrols a token of user and puts it in status without spending a
// code (an active token is unused: its first code is free).
func (f *fixture) token(user string, p otp.Params, status string) testToken {
	f.t.Helper()
	tok, seed, err := f.s.Enrol(ctx, "r1", user, p, "", actor)
	if err != nil {
		f.t.Fatal(err)
	}
	if status != store.TokenPending {
		if err := f.s.Store.SetTokenStatus(ctx, "r1", user, tok.ID, status); err != nil {
			f.t.Fatal(err)
		}
		tok.Status = status
	}
	return testToken{tok, seed, p}
}

// value is the HOTP counter n, or the TOTP step n steps from the clock's.
func (f *fixture) value(tk testToken, n int) uint64 {
	if tk.p.Type == otp.TypeTOTP {
		return uint64(int64(tk.p.Step(*f.at)) + int64(n))
	}
	return uint64(n)
}

// code is tk's code at value(tk, n).
func (f *fixture) code(tk testToken, n int) string {
	f.t.Helper()
	c, err := tk.p.CodeAt(tk.seed, f.value(tk, n))
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// wrong is a well-formed code of tk that matches none of its values from
// -20 to ResyncWindow: a wrong guess in every window.
func (f *fixture) wrong(tk testToken) string {
	f.t.Helper()
	near := map[string]bool{}
	for n := -20; n <= f.s.Policy.ResyncWindow+20; n++ {
		if n >= 0 || tk.p.Type == otp.TypeTOTP {
			near[f.code(tk, n)] = true
		}
	}
	for d := range 10 {
		c := string(slices.Repeat([]byte{byte('0' + d)}, tk.p.Digits))
		if !near[c] {
			return c
		}
	}
	f.t.Fatal("no wrong code found")
	return ""
}

func (f *fixture) verify(user, code, pinCode string) (Result, error) {
	return f.s.Verify(ctx, "r1", user, code, pinCode, actor)
}

func (f *fixture) failures(user string) int {
	f.t.Helper()
	u, err := f.s.Store.GetUser(ctx, "r1", user)
	if err != nil {
		f.t.Fatal(err)
	}
	return u.Failures
}

// stored is tk as the store has it now.
func (f *fixture) stored(tk testToken) store.Token {
	f.t.Helper()
	got, err := f.s.Store.GetToken(ctx, "r1", tk.UserID, tk.ID)
	if err != nil {
		f.t.Fatal(err)
	}
	return got
}

// audit is the audit entries of kind, oldest first.
func (f *fixture) audit(kind string) []eventlog.Entry {
	f.t.Helper()
	return auditKinds(f.t, f.s.Store)[kind]
}

// reasons lists the reason of each verify.fail and verify.replayed entry.
func (f *fixture) reasons() []string {
	f.t.Helper()
	var out []string
	for _, e := range append(f.audit(audit.VerifyFail), f.audit(audit.VerifyReplay)...) {
		var d struct {
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(e.Data, &d); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, d.Reason)
	}
	return out
}

// isLocked reports whether err is a LockedError, hard or not as hard says.
func isLocked(err error, hard bool) bool {
	var le *LockedError
	return errors.As(err, &le) && le.Hard == hard
}

// TestVerifyOnceEver: a code is accepted once, ever; the same code again,
// and any code at or below the last used step or counter, is a replay,
// counted and audited with its first use; the next one is accepted.
func TestVerifyOnceEver(t *testing.T) {
	for _, p := range []otp.Params{otp.DefaultTOTP, hotp6} {
		t.Run(p.Type.String(), func(t *testing.T) {
			f := newFixture(t)
			f.user("u", "")
			tk := f.token("u", p, store.TokenActive)
			steps := []struct {
				n       int
				want    error
				matched int // value n when accepted
			}{
				{0, nil, 0},
				{0, ErrReplayed, 0},
				{1, nil, 1},
				{1, ErrReplayed, 0},
				{0, ErrReplayed, 0}, // below the last used value
			}
			for i, st := range steps {
				res, err := f.verify("u", f.code(tk, st.n), "")
				if !errors.Is(err, st.want) {
					t.Fatalf("step %d (value %+d): %v, want %v", i, st.n, err, st.want)
				}
				if err == nil && (res.TokenID != tk.ID || res.Matched != f.value(tk, st.matched)) {
					t.Fatalf("step %d: %+v, want token %s value %d", i, res, tk.ID, f.value(tk, st.matched))
				}
			}
			if got := f.stored(tk); !got.Used || uint64(got.LastUsed) != f.value(tk, 1) {
				t.Fatalf("stored last used %d (used %v), want %d", got.LastUsed, got.Used, f.value(tk, 1))
			}
			// The second success reset the counter; two replays since.
			if n := f.failures("u"); n != 2 {
				t.Fatalf("%d failures, want 2", n)
			}
			if ok, rp := len(f.audit(audit.VerifyOK)), f.audit(audit.VerifyReplay); ok != 2 || len(rp) != 3 {
				t.Fatalf("%d verify.ok and %d verify.replayed entries, want 2 and 3", ok, len(rp))
			}
			var d struct {
				FirstUsed FirstUse `json:"first_used"`
			}
			if err := json.Unmarshal(f.audit(audit.VerifyReplay)[0].Data, &d); err != nil || d.FirstUsed.Where != "online" || !d.FirstUsed.At.Equal(*f.at) {
				t.Fatalf("replay entry's first use %+v, %v; want online at %s", d.FirstUsed, err, *f.at)
			}
		})
	}
}

// TestTOTPWindow: a TOTP code matches within one step either side of the
// clock's (DefaultPolicy); two steps away it is a wrong code, counted.
func TestTOTPWindow(t *testing.T) {
	for _, c := range []struct {
		offset int
		want   error
	}{
		{-3, ErrInvalidCode},
		{-2, ErrInvalidCode},
		{-1, nil},
		{0, nil},
		{1, nil},
		{2, ErrInvalidCode},
	} {
		f := newFixture(t)
		f.user("u", "")
		tk := f.token("u", otp.DefaultTOTP, store.TokenActive)
		res, err := f.verify("u", f.code(tk, c.offset), "")
		if !errors.Is(err, c.want) {
			t.Fatalf("step %+d: %v, want %v", c.offset, err, c.want)
		}
		wantFailures := 0
		if c.want != nil {
			wantFailures = 1
		} else if res.Matched != f.value(tk, c.offset) {
			t.Fatalf("step %+d matched %d, want %d", c.offset, res.Matched, f.value(tk, c.offset))
		}
		if n := f.failures("u"); n != wantFailures {
			t.Fatalf("step %+d: %d failures, want %d", c.offset, n, wantFailures)
		}
	}
}

// TestHOTPLookahead: an HOTP code matches the HOTPLookahead (10) counters
// after the next expected one; one further is a wrong code. A code up to
// HOTPLookahead behind the last used counter is a replay; further behind,
// a wrong code.
func TestHOTPLookahead(t *testing.T) {
	for _, c := range []struct {
		name    string
		used    []int // counters used first
		counter int
		want    error
	}{
		{"unused token, counter 0", nil, 0, nil},
		{"unused token, last of the look-ahead", nil, 10, nil},
		{"unused token, past the look-ahead", nil, 11, ErrInvalidCode},
		{"next after 5", []int{5}, 6, nil},
		{"last of the look-ahead after 5", []int{5}, 16, nil},
		{"past the look-ahead after 5", []int{5}, 17, ErrInvalidCode},
		{"the used counter", []int{5}, 5, ErrReplayed},
		{"skipped, behind the used counter", []int{5}, 0, ErrReplayed},
		{"10 behind the used counter", []int{10, 20}, 10, ErrReplayed},
		{"11 behind the used counter", []int{10, 20}, 9, ErrInvalidCode},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.user("u", "")
			tk := f.token("u", hotp6, store.TokenActive)
			for _, u := range c.used {
				if _, err := f.verify("u", f.code(tk, u), ""); err != nil {
					t.Fatalf("counter %d: %v", u, err)
				}
			}
			res, err := f.verify("u", f.code(tk, c.counter), "")
			if !errors.Is(err, c.want) {
				t.Fatalf("counter %d: %v, want %v", c.counter, err, c.want)
			}
			if err == nil && res.Matched != uint64(c.counter) {
				t.Fatalf("matched %d, want %d", res.Matched, c.counter)
			}
		})
	}
}

// TestResync: two consecutive HOTP codes within the resync window move the
// token's counter to the second's; anything else is a wrong pair, counted
// (or a malformed request, not counted).
func TestResync(t *testing.T) {
	for _, c := range []struct {
		name   string
		c1, c2 int
		want   error
		counts bool
	}{
		{"consecutive past the look-ahead", 100, 101, nil, false},
		{"consecutive at the window's end", 499, 500, nil, false},
		{"not consecutive", 100, 102, ErrInvalidCode, true},
		{"reversed", 101, 100, ErrInvalidCode, true},
		{"the same code twice", 100, 100, ErrInvalidCode, true},
		{"past the resync window", 600, 601, ErrInvalidCode, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.user("u", "")
			tk := f.token("u", hotp6, store.TokenActive)
			res, err := f.s.Resync(ctx, "r1", "u", tk.ID, f.code(tk, c.c1), f.code(tk, c.c2), actor)
			if !errors.Is(err, c.want) {
				t.Fatalf("resync %d, %d: %v, want %v", c.c1, c.c2, err, c.want)
			}
			if n := f.failures("u"); (n == 1) != c.counts {
				t.Fatalf("%d failures after %v", n, err)
			}
			if err != nil {
				if got := f.stored(tk); got.Used {
					t.Fatalf("a refused resync moved the counter to %d", got.LastUsed)
				}
				return
			}
			if res.Matched != uint64(c.c2) || f.stored(tk).LastUsed != int64(c.c2) || len(f.audit(audit.TokenResync)) != 1 {
				t.Fatalf("resync %+v, stored %d, want %d and a token.resync entry", res, f.stored(tk).LastUsed, c.c2)
			}
			// Both codes are spent; the next one verifies.
			for _, n := range []int{c.c1, c.c2} {
				if _, err := f.verify("u", f.code(tk, n), ""); !errors.Is(err, ErrReplayed) {
					t.Fatalf("counter %d after the resync: %v, want ErrReplayed", n, err)
				}
			}
			if res, err := f.verify("u", f.code(tk, c.c2+1), ""); err != nil || res.Matched != uint64(c.c2+1) {
				t.Fatalf("counter %d after the resync: %+v, %v", c.c2+1, res, err)
			}
		})
	}
}

// TestResyncBadRequests: a resync of a TOTP token, of a malformed code or
// of an unknown token is refused before any code is tried, and not counted.
func TestResyncBadRequests(t *testing.T) {
	f := newFixture(t)
	f.user("u", "")
	h := f.token("u", hotp6, store.TokenActive)
	tt := f.token("u", otp.DefaultTOTP, store.TokenActive)
	for _, c := range []struct {
		name, token, c1, c2 string
		want                error
	}{
		{"totp token", tt.ID, f.code(tt, 0), f.code(tt, 1), ErrMalformedCode},
		{"short code", h.ID, "12345", f.code(h, 101), ErrMalformedCode},
		{"letter", h.ID, f.code(h, 100), "12345a", ErrMalformedCode},
		{"8 digits for a 6-digit token", h.ID, "12345678", "12345679", ErrMalformedCode},
		{"unknown token", "tok_nope", f.code(h, 100), f.code(h, 101), store.ErrNotFound},
	} {
		if _, err := f.s.Resync(ctx, "r1", "u", c.token, c.c1, c.c2, actor); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if n := f.failures("u"); n != 0 {
		t.Fatalf("bad requests counted %d failures", n)
	}
}

// TestPINAndOTP: a user with a PIN verifies with code and PIN; a wrong or
// missing PIN fails like a wrong code, counted, and does not spend the code.
func TestPINAndOTP(t *testing.T) {
	const right = "48291630"
	for _, c := range []struct {
		name, userPIN, pin string
		want               error
		reason             string
	}{
		{"code and PIN", right, right, nil, ""},
		{"wrong PIN", right, "48291631", ErrInvalidCode, "pin"},
		{"missing PIN", right, "", ErrInvalidCode, "pin"},
		{"no PIN for a user without one", "", "", nil, ""},
		// Verify checks a PIN only for a user who has one: the code alone
		// is this user's credential (Login and CheckPIN refuse it).
		{"PIN for a user without one", "", right, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.user("u", c.userPIN)
			tk := f.token("u", otp.DefaultTOTP, store.TokenActive)
			code := f.code(tk, 0)
			_, err := f.verify("u", code, c.pin)
			if !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
			if err == nil {
				return
			}
			if n, rs := f.failures("u"), f.reasons(); n != 1 || len(rs) != 1 || rs[0] != c.reason {
				t.Fatalf("%d failures, reasons %v; want 1, [%s]", n, rs, c.reason)
			}
			if f.stored(tk).Used {
				t.Fatal("a failed PIN spent the code")
			}
			// The code is still good with the right PIN (or none).
			if _, err := f.verify("u", code, c.userPIN); err != nil {
				t.Fatalf("the code with the right PIN after a failure: %v", err)
			}
			if n := f.failures("u"); n != 0 {
				t.Fatalf("a success left %d failures", n)
			}
		})
	}
}

// TestGrowingDelayAndLockout: FreeFailures failures are free; each further
// one makes the user wait Policy.Delay, and at MaxFailures the user is
// locked until ResetLockout. A refused attempt is not counted, even with
// the right code, and the lockout is audited once.
func TestGrowingDelayAndLockout(t *testing.T) {
	f := newFixture(t)
	f.user("u", "")
	tk := f.token("u", otp.DefaultTOTP, store.TokenActive)
	pol := f.s.Policy
	wrong := f.wrong(tk)
	for i := 1; i <= pol.MaxFailures; i++ {
		if _, err := f.verify("u", wrong, ""); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("failure %d: %v", i, err)
		}
		if i == pol.MaxFailures {
			break
		}
		d := pol.Delay(i)
		if (d == 0) != (i <= pol.FreeFailures) {
			t.Fatalf("delay %v after failure %d (%d free)", d, i, pol.FreeFailures)
		}
		if d == 0 {
			continue
		}
		_, err := f.verify("u", f.code(tk, 0), "")
		var le *LockedError
		if !errors.As(err, &le) || le.Hard || le.RetryAfter != d {
			t.Fatalf("during the delay after failure %d: %v, want a wait of %v", i, err, d)
		}
		*f.at = f.at.Add(d - time.Second)
		if _, err := f.verify("u", wrong, ""); !isLocked(err, false) {
			t.Fatalf("a second before the delay ends: %v", err)
		}
		*f.at = f.at.Add(time.Second)
	}
	if n := f.failures("u"); n != pol.MaxFailures {
		t.Fatalf("%d failures counted, want %d (refusals are not counted)", n, pol.MaxFailures)
	}
	*f.at = f.at.Add(24 * time.Hour)
	if _, err := f.verify("u", f.code(tk, 0), ""); !isLocked(err, true) {
		t.Fatalf("locked user with the right code a day later: %v", err)
	}
	if n := len(f.audit(audit.Lockout)); n != 1 {
		t.Fatalf("%d lockout entries, want 1", n)
	}
	if err := f.s.ResetLockout(ctx, "r1", "u", "admin:test"); err != nil {
		t.Fatal(err)
	}
	if n := f.failures("u"); n != 0 || len(f.audit(audit.LockoutReset)) != 1 {
		t.Fatalf("after the reset: %d failures, %d lockout.reset entries", n, len(f.audit(audit.LockoutReset)))
	}
	if _, err := f.verify("u", f.code(tk, 0), ""); err != nil {
		t.Fatalf("after the reset: %v", err)
	}
}

// TestSuccessResetsFailures: a success clears the failures before the delay starts.
func TestSuccessResetsFailures(t *testing.T) {
	f := newFixture(t)
	f.user("u", "")
	tk := f.token("u", hotp6, store.TokenActive)
	for range f.s.Policy.FreeFailures {
		if _, err := f.verify("u", f.wrong(tk), ""); !errors.Is(err, ErrInvalidCode) {
			t.Fatal(err)
		}
	}
	if _, err := f.verify("u", f.code(tk, 0), ""); err != nil {
		t.Fatal(err)
	}
	if n := f.failures("u"); n != 0 {
		t.Fatalf("%d failures after a success", n)
	}
}

// TestAnswers: a malformed code is refused before the user is looked up
// and counts nothing; a wrong code, an unknown user, a code of another
// length than the user's token and a user without an active token all
// answer ErrInvalidCode; only a used value answers ErrReplayed.
func TestAnswers(t *testing.T) {
	f := newFixture(t)
	f.user("u", "")
	tk := f.token("u", hotp6, store.TokenActive)
	used := f.code(tk, 0)
	if _, err := f.verify("u", used, ""); err != nil {
		t.Fatal(err)
	}
	f.user("idle", "")
	for _, c := range []struct {
		name, user, code string
		want             error
		failures         int // counted for u
	}{
		{"5 digits", "u", "12345", ErrMalformedCode, 0},
		{"11 digits", "u", "12345678901", ErrMalformedCode, 0},
		{"a letter", "u", "12345a", ErrMalformedCode, 0},
		{"empty", "u", "", ErrMalformedCode, 0},
		{"malformed, unknown user", "ghost", "12", ErrMalformedCode, 0},
		{"wrong code", "u", f.wrong(tk), ErrInvalidCode, 1},
		{"8 digits for a 6-digit token", "u", "12345678", ErrInvalidCode, 1},
		{"unknown user", "ghost", f.code(tk, 1), ErrInvalidCode, 0},
		{"user without a token", "idle", f.code(tk, 1), ErrInvalidCode, 0},
		{"replay", "u", used, ErrReplayed, 1},
	} {
		before := f.failures("u")
		_, err := f.verify(c.user, c.code, "")
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		for _, other := range []error{ErrMalformedCode, ErrInvalidCode, ErrReplayed} {
			if other != c.want && errors.Is(err, other) {
				t.Errorf("%s: %v is also %v", c.name, err, other)
			}
		}
		if got := f.failures("u") - before; got != c.failures {
			t.Errorf("%s: counted %d failures", c.name, got)
		}
	}
	if n := f.failures("idle"); n != 1 {
		t.Fatalf("the user without a token has %d failures, want 1", n)
	}
	if tl := f.s.unknown.realms["r1"]; tl == nil || tl.Count != 1 {
		t.Fatalf("unknown-user tally %+v, want 1 (the malformed attempt is not tallied)", tl)
	}
}

// TestPendingAndDisabledTokens: only an active token verifies; a pending
// one is activated by Confirm with a current code, which it consumes.
func TestPendingAndDisabledTokens(t *testing.T) {
	for _, status := range []string{store.TokenPending, store.TokenDisabled} {
		f := newFixture(t)
		f.user("u", "")
		tk := f.token("u", hotp6, status)
		if _, err := f.verify("u", f.code(tk, 0), ""); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("%s token: %v, want ErrInvalidCode", status, err)
		}
		if n := f.failures("u"); n != 1 {
			t.Fatalf("%s token: %d failures, want 1", status, n)
		}
		_, err := f.s.Confirm(ctx, "r1", "u", tk.ID, f.code(tk, 0), actor)
		if status == store.TokenDisabled {
			if !errors.Is(err, ErrNotPending) {
				t.Fatalf("confirming a disabled token: %v", err)
			}
			continue
		}
		if err != nil || f.stored(tk).Status != store.TokenActive {
			t.Fatalf("confirm: %v, status %s", err, f.stored(tk).Status)
		}
		if _, err := f.verify("u", f.code(tk, 0), ""); !errors.Is(err, ErrReplayed) {
			t.Fatalf("the confirming code again: %v, want ErrReplayed", err)
		}
		if _, err := f.s.Confirm(ctx, "r1", "u", tk.ID, f.code(tk, 1), actor); !errors.Is(err, ErrNotPending) {
			t.Fatalf("confirming an active token: %v", err)
		}
	}
}

// TestConfirmAndResyncAreAttempts: a wrong confirmation or resync is a
// failure like a wrong code (counted, audited with its op); a locked user
// can do neither; an HOTP confirmation searches the verification
// look-ahead, not the resync window; a malformed code counts nothing.
func TestConfirmAndResyncAreAttempts(t *testing.T) {
	f := newFixture(t)
	f.user("u", "")
	pend := f.token("u", hotp6, store.TokenPending)
	act := f.token("u", hotp6, store.TokenActive)
	confirm := func(n int) error {
		_, err := f.s.Confirm(ctx, "r1", "u", pend.ID, f.code(pend, n), actor)
		return err
	}
	resync := func() error {
		_, err := f.s.Resync(ctx, "r1", "u", act.ID, f.code(act, 100), f.code(act, 101), actor)
		return err
	}
	if _, err := f.s.Confirm(ctx, "r1", "u", pend.ID, "12345", actor); !errors.Is(err, ErrMalformedCode) || f.failures("u") != 0 {
		t.Fatalf("malformed confirmation: %v, %d failures", err, f.failures("u"))
	}
	if err := confirm(11); !errors.Is(err, ErrInvalidCode) || f.failures("u") != 1 {
		t.Fatalf("confirm with counter 11 (past the look-ahead): %v, %d failures", err, f.failures("u"))
	}
	if _, err := f.s.Resync(ctx, "r1", "u", act.ID, f.code(act, 100), f.code(act, 102), actor); !errors.Is(err, ErrInvalidCode) || f.failures("u") != 2 {
		t.Fatalf("bad resync: %v, %d failures", err, f.failures("u"))
	}
	ops := map[string]int{}
	for _, e := range f.audit(audit.VerifyFail) {
		var d struct{ Op, Token string }
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatal(err)
		}
		ops[d.Op]++
	}
	if ops["confirm"] != 1 || ops["resync"] != 1 {
		t.Fatalf("failure entries by op %v, want one confirm and one resync", ops)
	}
	if err := f.s.Store.ResetFailures(ctx, "r1", "u"); err != nil {
		t.Fatal(err)
	}
	for i := range f.s.Policy.MaxFailures {
		*f.at = f.at.Add(f.s.Policy.Delay(i))
		if _, err := f.verify("u", f.wrong(act), ""); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	if err := confirm(0); !isLocked(err, true) {
		t.Fatalf("a locked user confirms: %v", err)
	}
	if err := resync(); !isLocked(err, true) {
		t.Fatalf("a locked user resyncs: %v", err)
	}
	if err := f.s.ResetLockout(ctx, "r1", "u", "admin:test"); err != nil {
		t.Fatal(err)
	}
	if err := confirm(10); err != nil {
		t.Fatalf("confirm with counter 10 (the look-ahead's last): %v", err)
	}
	if err := resync(); err != nil {
		t.Fatalf("resync after the reset: %v", err)
	}
}

// TestParallelAttemptsMeetTheLockout: parallel wrong codes for one user are
// evaluated one by one, so the burst gets exactly the attempts the policy
// allows: FreeFailures+1 before the first delay, or MaxFailures without
// delays; the rest are refused, uncounted.
func TestParallelAttemptsMeetTheLockout(t *testing.T) {
	noDelay := DefaultPolicy
	noDelay.BaseDelay, noDelay.MaxDelay = 0, 0
	for _, c := range []struct {
		name      string
		pol       Policy
		evaluated int
		hard      bool
	}{
		{"default policy", DefaultPolicy, DefaultPolicy.FreeFailures + 1, false},
		{"no delays", noDelay, noDelay.MaxFailures, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.s.Policy = c.pol
			f.user("u", "")
			tk := f.token("u", otp.DefaultTOTP, store.TokenActive)
			wrong := f.wrong(tk)
			const n = 40
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { _, errs[i] = f.verify("u", wrong, "") })
			}
			wg.Wait()
			invalid, locked := 0, 0
			for _, err := range errs {
				switch {
				case errors.Is(err, ErrInvalidCode):
					invalid++
				case isLocked(err, c.hard):
					locked++
				default:
					t.Errorf("unexpected answer %v", err)
				}
			}
			if invalid != c.evaluated || locked != n-c.evaluated || f.failures("u") != c.evaluated {
				t.Fatalf("%d parallel guesses: %d evaluated, %d refused, %d counted; want %d evaluated", n, invalid, locked, f.failures("u"), c.evaluated)
			}
		})
	}
}

// TestCheckPIN: admission to a PIN bundle checks the PIN under the
// lockout; a wrong PIN, or one for a user without a PIN, is a counted
// failure; a right PIN does not reset the count (one factor, not two).
func TestCheckPIN(t *testing.T) {
	const right = "2468"
	for _, c := range []struct {
		name, userPIN, pin string
		want               error
	}{
		{"right PIN", right, right, nil},
		{"wrong PIN", right, "2469", ErrInvalidCode},
		{"missing PIN", right, "", ErrInvalidCode},
		{"no PIN for a user without one", "", "", nil},
		{"PIN for a user without one", "", right, ErrInvalidCode},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.user("u", c.userPIN)
			tk := f.token("u", hotp6, store.TokenActive)
			if _, err := f.verify("u", f.wrong(tk), ""); !errors.Is(err, ErrInvalidCode) {
				t.Fatal(err)
			}
			err := f.s.CheckPIN(ctx, "r1", "u", c.pin, actor)
			if !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
			want, rs := 1, f.reasons()
			if c.want != nil {
				want = 2
				if rs[len(rs)-1] != "bundle_pin" {
					t.Fatalf("failure reasons %v, want bundle_pin last", rs)
				}
			}
			if n := f.failures("u"); n != want {
				t.Fatalf("%d failures, want %d", n, want)
			}
		})
	}
	t.Run("locked or unknown user", func(t *testing.T) {
		f := newFixture(t)
		f.user("u", right)
		if err := f.s.CheckPIN(ctx, "r1", "ghost", "", actor); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown user: %v", err)
		}
		for i := range f.s.Policy.MaxFailures {
			*f.at = f.at.Add(f.s.Policy.Delay(i))
			if err := f.s.CheckPIN(ctx, "r1", "u", "0000", actor); !errors.Is(err, ErrInvalidCode) {
				t.Fatalf("failure %d: %v", i+1, err)
			}
		}
		if err := f.s.CheckPIN(ctx, "r1", "u", right, actor); !isLocked(err, true) {
			t.Fatalf("locked user with the right PIN: %v", err)
		}
	})
}

// TestLogin: the PIN + OTP login needs both factors even from a user
// without a PIN; prepare runs with the matched token once both are right,
// before the code is spent, and its error costs nothing.
func TestLogin(t *testing.T) {
	const right = "97531864"
	errPrepare := errors.New("bundle request refused")
	for _, c := range []struct {
		name, userPIN, pin string
		prepareErr         error
		want               error
		prepared, spent    bool
		failures           int
	}{
		{"code and PIN", right, right, nil, nil, true, true, 0},
		{"prepare refuses", right, right, errPrepare, errPrepare, true, false, 0},
		{"wrong PIN", right, "97531865", nil, ErrInvalidCode, false, false, 1},
		{"user without a PIN", "", "", nil, ErrInvalidCode, false, false, 1},
		{"user without a PIN, given one", "", right, nil, ErrInvalidCode, false, false, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.user("u", c.userPIN)
			tk := f.token("u", hotp6, store.TokenActive)
			var prepared []string
			res, err := f.s.Login(ctx, "r1", "u", f.code(tk, 3), c.pin, actor, func(t store.Token) error {
				prepared = append(prepared, t.ID)
				return c.prepareErr
			})
			if !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
			if (len(prepared) == 1 && prepared[0] == tk.ID) != c.prepared || len(prepared) > 1 {
				t.Fatalf("prepare ran for %v", prepared)
			}
			if got := f.stored(tk); got.Used != c.spent || (c.spent && (got.LastUsed != 3 || res.Matched != 3)) {
				t.Fatalf("token after login: used %v, last %d; result %+v", got.Used, got.LastUsed, res)
			}
			if n := f.failures("u"); n != c.failures {
				t.Fatalf("%d failures, want %d", n, c.failures)
			}
		})
	}
}

// TestVerifyPicksTheMatchingToken: of a user's tokens, the one the code
// matches is used, and only its counter moves.
func TestVerifyPicksTheMatchingToken(t *testing.T) {
	f := newFixture(t)
	f.user("u", "")
	a := f.token("u", hotp6, store.TokenActive)
	b := f.token("u", otp.DefaultTOTP, store.TokenActive)
	c := f.token("u", otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA256, Digits: 8}, store.TokenActive)
	for _, tk := range []testToken{b, c, a} {
		res, err := f.verify("u", f.code(tk, 1), "")
		if err != nil || res.TokenID != tk.ID || res.Matched != f.value(tk, 1) {
			t.Fatalf("token %s: %+v, %v", tk.ID, res, err)
		}
	}
	for _, tk := range []testToken{a, b, c} {
		if got := f.stored(tk); uint64(got.LastUsed) != f.value(tk, 1) {
			t.Fatalf("token %s last used %d, want %d", tk.ID, got.LastUsed, f.value(tk, 1))
		}
	}
}
