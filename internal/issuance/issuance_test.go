package issuance_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/issuance"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

var ctx = context.Background()

const realm = "acme"

// carolPIN is the PIN of carol, a user with a PIN; wrongPIN is not.
const (
	carolPIN = "739104826153"
	wrongPIN = "5791357913"
)

var (
	hotp = otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	totp = otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	// cheapKDF keeps bundles fast; the floor is lowered to match, so the
	// floor rule still runs: 5 HOTP entries pass, 4 hours of TOTP do not.
	cheapKDF = cost.KDF{Time: 1, MemoryKiB: 64, Threads: 1}
	floor    = cost.Floor{PerEntry: time.Millisecond, MinMargin: 1e4}
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// recorder is the sync service's side of issuing: what was recorded as
// issued, per device.
type recorder struct {
	mu  sync.Mutex
	got map[string][][]byte
}

func (r *recorder) RecordIssued(_ context.Context, data []byte, device string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[device] = append(r.got[device], data)
	return nil
}

func (r *recorder) count(device string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got[device])
}

// harness is an issuance service on a real store, with the users alice
// (HOTP), bob (TOTP), carol (TOTP and a PIN) and dave (no token).
type harness struct {
	t     *testing.T
	st    store.Store
	on    *online.Service
	svc   *issuance.Service
	rec   *recorder
	clock *fakeClock
	seeds map[string][]byte
	toks  map[string]store.Token
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	st := storetest.Open(t, storetest.SQLitePath(t))
	m, err := keys.MasterFromBytes([]byte("outpost issuance test master k!!"))
	must(t, err)
	ck := &fakeClock{t: time.Date(2031, 11, 23, 12, 0, 10, 0, time.UTC)} // years ahead, mid-step
	al := &audit.Log{Store: st, Now: ck.Now}
	on := &online.Service{Store: st, Seeds: online.NewSeeds(m), Policy: online.DefaultPolicy, Audit: al, Now: ck.Now}
	h := &harness{t: t, st: st, on: on, rec: &recorder{got: map[string][][]byte{}}, clock: ck,
		seeds: map[string][]byte{}, toks: map[string]store.Token{}}
	h.svc = &issuance.Service{Store: st, Online: on, Audit: al, Signer: m.Signer(0), Record: h.rec,
		KDF: cheapKDF, Floor: &floor, Now: ck.Now, Cores: 2}
	must(t, st.CreateRealm(ctx, store.Realm{ID: realm, Name: "ACME"}))
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		must(t, st.CreateUser(ctx, store.User{Realm: realm, ID: u}))
	}
	h.enrol("alice", hotp)
	h.enrol("bob", totp)
	h.enrol("carol", totp)
	must(t, on.SetPIN(ctx, realm, "carol", carolPIN, "test"))
	return h
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// enrol gives user an active token; confirming it uses counter 0 (HOTP) or the current step.
func (h *harness) enrol(user string, p otp.Params) {
	h.t.Helper()
	tok, seed, err := h.on.Enrol(ctx, realm, user, p, store.SeedDerived, "test")
	must(h.t, err)
	code, err := p.Generate(seed, 0, h.clock.Now())
	must(h.t, err)
	_, err = h.on.Confirm(ctx, realm, user, tok.ID, code, "test")
	must(h.t, err)
	h.seeds[user], h.toks[user] = seed, tok
}

// token is user's (last enrolled) token as stored now.
func (h *harness) token(user string) store.Token {
	h.t.Helper()
	tok, err := h.st.GetToken(ctx, realm, user, h.toks[user].ID)
	must(h.t, err)
	return tok
}

// code is user's code for an HOTP counter, or for a TOTP token at the clock's time.
func (h *harness) code(user string, counter uint64) string {
	h.t.Helper()
	p := hotp
	if user != "alice" {
		p = totp
	}
	c, err := p.Generate(h.seeds[user], counter, h.clock.Now())
	must(h.t, err)
	return c
}

func (h *harness) failures(user string) int {
	h.t.Helper()
	u, err := h.st.GetUser(ctx, realm, user)
	must(h.t, err)
	return u.Failures
}

func (h *harness) audited(kind string) []eventlog.Entry {
	h.t.Helper()
	es, err := h.st.ListAudit(ctx, 0, 1000)
	must(h.t, err)
	var out []eventlog.Entry
	for _, e := range es {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func (h *harness) decode(data []byte, device string) *bundlefmt.Bundle {
	h.t.Helper()
	b, err := bundlefmt.Decode(data, []ed25519.PublicKey{h.svc.Signer.Public}, bundlefmt.Expect{Device: device, Now: h.clock.Now()})
	must(h.t, err)
	return b
}

// lock gives user as many failures as the policy allows.
func (h *harness) lock(user string) {
	h.t.Helper()
	for range h.on.Policy.MaxFailures {
		_, err := h.st.RecordFailure(ctx, realm, user, h.clock.Now())
		must(h.t, err)
	}
}

var (
	issuerCaller = issuance.Caller{Realm: realm, Actor: "api:issuer"}
	adminCaller  = issuance.Caller{Realm: realm, Actor: "api:admin", Admin: true}
)

// TestIssueRules: each rule of a bundle request, with what it may and may
// not count as a failed attempt.
func TestIssueRules(t *testing.T) {
	now := time.Date(2031, 11, 23, 12, 0, 10, 0, time.UTC)
	ten := func(r issuance.Request) issuance.Request {
		r.From, r.Until = now, now.Add(10*time.Minute)
		return r
	}
	for _, tc := range []struct {
		name   string
		caller issuance.Caller
		req    issuance.Request
		prep   func(h *harness)
		want   error
		// counted: the failure counter of the user afterwards.
		counted int
	}{
		{name: "HOTP window", caller: issuerCaller, req: issuance.Request{User: "alice", Device: "dev-1", Count: 5}},
		{name: "TOTP period", caller: issuerCaller, req: ten(issuance.Request{User: "bob", Device: "dev-1"})},
		{name: "unknown user", caller: issuerCaller, req: issuance.Request{User: "erin", Device: "dev-1", Count: 5}, want: issuance.ErrUnknownUser},
		{name: "user in another realm", caller: issuance.Caller{Realm: "other", Actor: "api:x"}, req: issuance.Request{User: "alice", Device: "dev-1", Count: 5},
			want: issuance.ErrUnknownUser},
		{name: "no active token", caller: issuerCaller, req: issuance.Request{User: "dave", Device: "dev-1", Count: 5}, want: issuance.ErrNoActiveToken},
		{name: "token named not the user's", caller: issuerCaller, req: issuance.Request{User: "alice", Token: "tok_nope", Device: "dev-1", Count: 5},
			want: issuance.ErrUnknownToken},
		{name: "two active tokens", caller: issuerCaller, req: issuance.Request{User: "alice", Device: "dev-1", Count: 5},
			prep: func(h *harness) { h.enrol("alice", hotp) }, want: issuance.ErrTokenRequired},
		{name: "HOTP given a period", caller: issuerCaller, req: ten(issuance.Request{User: "alice", Device: "dev-1"}), want: issuance.ErrInvalidWindow},
		{name: "TOTP given a count", caller: issuerCaller, req: issuance.Request{User: "bob", Device: "dev-1", Count: 5}, want: issuance.ErrInvalidWindow},
		{name: "too many secrets", caller: issuerCaller, req: issuance.Request{User: "alice", Device: "dev-1", Count: 5, Secrets: manySecrets(bundlefmt.MaxSecrets + 1)},
			want: issuance.ErrInvalidSecrets},
		{name: "secret too large", caller: issuerCaller, req: issuance.Request{User: "alice", Device: "dev-1", Count: 5,
			Secrets: map[string]string{"door": strings.Repeat("x", issuance.MaxSecretBytes+1)}}, want: issuance.ErrInvalidSecrets},
		{name: "below the floor", caller: issuerCaller, req: issuance.Request{User: "bob", Device: "dev-1", From: now, Until: now.Add(4 * time.Hour)},
			want: cost.ErrBelowFloor},
		{name: "override needs admin", caller: issuerCaller, req: issuance.Request{User: "bob", Device: "dev-1", From: now, Until: now.Add(4 * time.Hour), OverrideFloor: true},
			want: issuance.ErrNotAllowed},
		{name: "override by an admin", caller: adminCaller, req: issuance.Request{User: "bob", Device: "dev-1", From: now, Until: now.Add(4 * time.Hour), OverrideFloor: true}},
		{name: "PIN user without the PIN", caller: issuerCaller, req: ten(issuance.Request{User: "carol", Device: "dev-1"}), want: issuance.ErrPINRequired},
		{name: "PIN for a user without one", caller: issuerCaller, req: issuance.Request{User: "alice", Device: "dev-1", Count: 5, PIN: "1234"}, want: issuance.ErrNoPIN},
		{name: "malformed PIN", caller: issuerCaller, req: ten(issuance.Request{User: "carol", Device: "dev-1", PIN: "12ab"}), want: issuance.ErrInvalidPIN},
		{name: "right PIN", caller: issuerCaller, req: ten(issuance.Request{User: "carol", Device: "dev-1", PIN: carolPIN})},
		{name: "wrong PIN counts", caller: issuerCaller, req: ten(issuance.Request{User: "carol", Device: "dev-1", PIN: wrongPIN}),
			want: issuance.ErrPINMismatch, counted: 1},
		{name: "PIN checked last: a bad window with a wrong PIN is not counted", caller: issuerCaller,
			req: issuance.Request{User: "carol", Device: "dev-1", PIN: wrongPIN, Count: 5}, want: issuance.ErrInvalidWindow},
		{name: "PIN checked last: bad secrets with a wrong PIN are not counted", caller: issuerCaller,
			req: ten(issuance.Request{User: "carol", Device: "dev-1", PIN: wrongPIN, Secrets: manySecrets(bundlefmt.MaxSecrets + 1)}), want: issuance.ErrInvalidSecrets},
		{name: "PIN checked last: an override without admin with a wrong PIN is not counted", caller: issuerCaller,
			req: ten(issuance.Request{User: "carol", Device: "dev-1", PIN: wrongPIN, OverrideFloor: true}), want: issuance.ErrNotAllowed},
		{name: "locked user", caller: issuerCaller, req: issuance.Request{User: "alice", Device: "dev-1", Count: 5},
			prep: func(h *harness) { h.lock("alice") }, want: &online.LockedError{}, counted: online.DefaultPolicy.MaxFailures},
		{name: "locked user, right PIN", caller: issuerCaller, req: ten(issuance.Request{User: "carol", Device: "dev-1", PIN: carolPIN}),
			prep: func(h *harness) { h.lock("carol") }, want: &online.LockedError{}, counted: online.DefaultPolicy.MaxFailures},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.prep != nil {
				tc.prep(h)
			}
			out, err := h.svc.Issue(ctx, tc.caller, tc.req, nil)
			if !matches(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if msg := fmtErr(err); strings.Contains(msg, wrongPIN) || strings.Contains(msg, carolPIN) {
				t.Errorf("the error names the PIN: %v", err)
			}
			if tc.want == nil {
				b := h.decode(out.Bundle, "dev-1")
				if b.User != tc.req.User || b.Realm != realm || out.Report.Entries != b.Count() {
					t.Errorf("bundle %s/%s with %d entries, report %d", b.Realm, b.User, b.Count(), out.Report.Entries)
				}
				if b.PIN != (tc.req.PIN != "") {
					t.Errorf("PIN mixed in: %v", b.PIN)
				}
				if h.rec.count("dev-1") != 1 || len(h.audited(audit.BundleIssue)) != 1 {
					t.Errorf("recorded %d, audited %d: want 1 and 1", h.rec.count("dev-1"), len(h.audited(audit.BundleIssue)))
				}
				if overrides := len(h.audited(audit.FloorOverride)); overrides != btoi(tc.req.OverrideFloor) {
					t.Errorf("%d floor overrides audited", overrides)
				}
			} else if h.rec.count("dev-1") != 0 || len(h.audited(audit.BundleIssue)) != 0 {
				t.Error("a refused bundle was recorded or audited")
			}
			if u := tc.req.User; u != "erin" && tc.caller.Realm == realm && h.failures(u) != tc.counted {
				t.Errorf("%s has %d failures, want %d", u, h.failures(u), tc.counted)
			}
		})
	}
}

func matches(err, want error) bool {
	var le *online.LockedError
	if _, ok := want.(*online.LockedError); ok {
		return errors.As(err, &le)
	}
	if want == nil {
		return err == nil
	}
	return errors.Is(err, want)
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func manySecrets(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[string(rune('a'+i%26))+strings.Repeat("x", i/26)] = "s"
	}
	return m
}

// TestWindowAfterOnlineState: a bundle starts after the token's online
// state, and issuing it does not move that state.
func TestWindowAfterOnlineState(t *testing.T) {
	h := newHarness(t)
	if _, err := h.on.Verify(ctx, realm, "alice", h.code("alice", 3), "", "test"); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(30 * time.Second)
	step := totp.Step(h.clock.Now())
	if _, err := h.on.Verify(ctx, realm, "bob", h.code("bob", 0), "", "test"); err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now()
	for _, tc := range []struct {
		req       issuance.Request
		first     uint64
		used      int64
		count     int
		onlineNow int64
	}{
		{req: issuance.Request{User: "alice", Device: "dev-1", Count: 5}, first: 4, used: 3, count: 5, onlineNow: 3},
		{req: issuance.Request{User: "bob", Device: "dev-1", From: now.Add(-2 * time.Minute), Until: now.Add(10 * time.Minute)},
			first: step + 1, used: int64(step), count: 20, onlineNow: int64(step)},
	} {
		out, err := h.svc.Issue(ctx, issuerCaller, tc.req, nil)
		must(t, err)
		b := h.decode(out.Bundle, "dev-1")
		if b.First != tc.first || b.Used != tc.used || b.Count() != tc.count {
			t.Errorf("%s: entries %d+%d used %d, want %d+%d used %d", tc.req.User, b.First, b.Count(), b.Used, tc.first, tc.count, tc.used)
		}
		if got := h.token(tc.req.User).LastUsed; got != tc.onlineNow {
			t.Errorf("%s: issuing moved the online state to %d", tc.req.User, got)
		}
	}
}

// TestIssueTooSlowForSync: a bundle estimated past SyncLimit is refused on
// the waiting path before any work, and accepted as a job.
func TestIssueTooSlowForSync(t *testing.T) {
	h := newHarness(t)
	h.svc.KDF = cost.Default
	h.svc.Cores = 1
	req := issuance.Request{User: "alice", Device: "dev-1", Count: bundlefmt.MaxEntries, OverrideFloor: true}
	if _, err := h.svc.Issue(ctx, adminCaller, req, nil); !errors.Is(err, issuance.ErrTooSlow) {
		t.Fatalf("a slow bundle, waited for: %v", err)
	}
	h.svc.Slots = make(chan struct{}, 1)
	h.svc.Slots <- struct{}{} // never started: the test has no time for it
	h.svc.JobTimeout = 10 * time.Millisecond
	job, err := h.svc.Start(ctx, adminCaller, req)
	if err != nil || job.Estimate <= issuance.SyncLimit || job.Entries != bundlefmt.MaxEntries {
		t.Fatalf("as a job: %+v %v", job, err)
	}
	waitJob(t, h, adminCaller, job.ID, issuance.JobFailed)

	// A login bundle must compute within SyncLimit too; the code is not spent.
	h.clock.Add(30 * time.Second)
	now := h.clock.Now()
	login := issuance.LoginRequest{Request: issuance.Request{User: "carol", Device: "dev-1", PIN: carolPIN, From: now, Until: now.Add(40 * 24 * time.Hour)},
		Code: h.code("carol", 0)}
	if out, err := h.svc.Login(ctx, issuerCaller, login, nil); !errors.Is(err, issuance.ErrTooSlow) || out.Verified.TokenID != "" {
		t.Fatalf("a slow login bundle: %+v %v", out.Verified, err)
	}
	if h.failures("carol") != 0 || h.token("carol").LastUsed >= int64(totp.Step(now)) {
		t.Error("a refused login bundle counted a failure or spent the code")
	}
}

// waitJob polls job id until it reaches state.
func waitJob(t *testing.T, h *harness, c issuance.Caller, id, state string) issuance.JobStatus {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		st, err := h.svc.Job(ctx, c, id)
		must(t, err)
		if st.State == state {
			return st
		}
	}
	t.Fatalf("job %s never reached %s", id, state)
	return issuance.JobStatus{}
}

// TestJobs: a job reports its progress, hands out its bundle once done and
// only to its realm, is cancelled past its timeout, and at most MaxJobs
// wait at once.
func TestJobs(t *testing.T) {
	req := issuance.Request{User: "alice", Device: "dev-1", Count: 20}
	t.Run("progress", func(t *testing.T) {
		h := newHarness(t)
		h.svc.Slots = make(chan struct{}, 1)
		h.svc.Slots <- struct{}{} // the job waits for the slot
		job, err := h.svc.Start(ctx, issuerCaller, req)
		must(t, err)
		if job.Entries != 20 {
			t.Errorf("%d entries", job.Entries)
		}
		if st, err := h.svc.Job(ctx, issuerCaller, job.ID); err != nil || st != (issuance.JobStatus{State: issuance.JobRunning}) {
			t.Fatalf("waiting: %+v %v", st, err)
		}
		if _, err := h.svc.JobBundle(ctx, issuerCaller, job.ID); !errors.Is(err, issuance.ErrJobRunning) {
			t.Fatalf("bundle of a running job: %v", err)
		}
		<-h.svc.Slots
		st := waitJob(t, h, issuerCaller, job.ID, issuance.JobDone)
		if st.Done != 20 || st.Total != 20 {
			t.Errorf("done: %+v", st)
		}
		out, err := h.svc.JobBundle(ctx, issuerCaller, job.ID)
		must(t, err)
		if b := h.decode(out.Bundle, "dev-1"); b.Count() != 20 || out.Report.Entries != 20 {
			t.Errorf("%d entries", b.Count())
		}
		if h.rec.count("dev-1") != 1 || len(h.audited(audit.BundleIssue)) != 1 {
			t.Error("the job's bundle is not recorded and audited once")
		}
		other := issuance.Caller{Realm: "other", Actor: "api:x"}
		if _, err := h.svc.Job(ctx, other, job.ID); !errors.Is(err, issuance.ErrUnknownJob) {
			t.Errorf("another realm sees the job: %v", err)
		}
		if _, err := h.svc.JobBundle(ctx, other, job.ID); !errors.Is(err, issuance.ErrUnknownJob) {
			t.Errorf("another realm collects the bundle: %v", err)
		}
		h.clock.Add(61 * time.Minute)
		if _, err := h.svc.Job(ctx, issuerCaller, job.ID); !errors.Is(err, issuance.ErrUnknownJob) {
			t.Errorf("the job outlived an hour after it finished: %v", err)
		}
	})
	t.Run("cancelled past its timeout", func(t *testing.T) {
		h := newHarness(t)
		h.svc.Slots = make(chan struct{}, 1)
		h.svc.Slots <- struct{}{}
		h.svc.JobTimeout = 50 * time.Millisecond
		job, err := h.svc.Start(ctx, issuerCaller, req)
		must(t, err)
		st := waitJob(t, h, issuerCaller, job.ID, issuance.JobFailed)
		if !strings.Contains(st.Error, "deadline") {
			t.Errorf("failed with %q", st.Error)
		}
		if _, err := h.svc.JobBundle(ctx, issuerCaller, job.ID); !errors.Is(err, issuance.ErrJobFailed) {
			t.Errorf("bundle of a failed job: %v", err)
		}
		if h.rec.count("dev-1") != 0 || len(h.audited(audit.BundleIssue)) != 0 {
			t.Error("a cancelled job recorded or audited a bundle")
		}
	})
	t.Run("at most MaxJobs", func(t *testing.T) {
		h := newHarness(t)
		h.svc.Slots = make(chan struct{}, 1)
		h.svc.Slots <- struct{}{} // held to the end: the jobs wait, then time out untouched
		h.svc.JobTimeout = time.Minute
		for range issuance.MaxJobs {
			_, err := h.svc.Start(ctx, issuerCaller, req)
			must(t, err)
		}
		if _, err := h.svc.Start(ctx, issuerCaller, req); !errors.Is(err, issuance.ErrTooManyJobs) {
			t.Fatalf("job %d: %v", issuance.MaxJobs+1, err)
		}
	})
	t.Run("checked before it starts", func(t *testing.T) {
		h := newHarness(t)
		now := h.clock.Now()
		_, err := h.svc.Start(ctx, issuerCaller, issuance.Request{User: "carol", Device: "dev-1", From: now, Until: now.Add(time.Hour), PIN: wrongPIN})
		if !errors.Is(err, issuance.ErrPINMismatch) || h.failures("carol") != 1 {
			t.Fatalf("a job with a wrong PIN: %v, %d failures", err, h.failures("carol"))
		}
	})
}

// TestLogin: the PIN bundle of an online PIN + OTP login.
func TestLogin(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     issuance.LoginRequest
		want    error
		counted int
		// spent: the code was used online (a second login with it is a replay).
		spent bool
	}{
		{name: "right code and PIN", req: issuance.LoginRequest{Request: issuance.Request{User: "carol", Device: "dev-1", PIN: carolPIN}}, spent: true},
		{name: "wrong PIN", req: issuance.LoginRequest{Request: issuance.Request{User: "carol", Device: "dev-1", PIN: wrongPIN}},
			want: online.ErrInvalidCode, counted: 1},
		{name: "wrong code", req: issuance.LoginRequest{Request: issuance.Request{User: "carol", Device: "dev-1", PIN: carolPIN}, Code: "000000"},
			want: online.ErrInvalidCode, counted: 1},
		{name: "user without a PIN", req: issuance.LoginRequest{Request: issuance.Request{User: "bob", Device: "dev-1"}},
			want: online.ErrInvalidCode, counted: 1},
		{name: "override", req: issuance.LoginRequest{Request: issuance.Request{User: "carol", Device: "dev-1", PIN: carolPIN, OverrideFloor: true}},
			want: issuance.ErrNotAllowed},
		{name: "another token named: nothing spent", req: issuance.LoginRequest{Request: issuance.Request{User: "carol", Token: "tok_other", Device: "dev-1", PIN: carolPIN}},
			want: issuance.ErrTokenMismatch},
		{name: "a bad window: nothing spent", req: issuance.LoginRequest{Request: issuance.Request{User: "carol", Device: "dev-1", PIN: carolPIN, Count: 5}},
			want: issuance.ErrInvalidWindow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.clock.Add(30 * time.Second)
			user := tc.req.User
			if tc.req.Code == "" {
				tc.req.Code = h.code(user, 0)
			}
			step := totp.Step(h.clock.Now())
			out, err := h.svc.Login(ctx, issuerCaller, tc.req, nil)
			if !matches(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if (out.Verified.TokenID != "") != tc.spent {
				t.Errorf("verified %+v", out.Verified)
			}
			if h.failures(user) != tc.counted {
				t.Errorf("%d failures, want %d", h.failures(user), tc.counted)
			}
			if tc.want == nil {
				b := h.decode(out.Bundle, "dev-1")
				if !b.PIN || b.First != step+1 || b.Used != int64(step) || b.Count() != 240 {
					t.Errorf("login bundle: PIN %v, entries %d+%d, used %d: want a PIN, from step %d, 240 steps", b.PIN, b.First, b.Count(), b.Used, step+1)
				}
				if h.rec.count("dev-1") != 1 {
					t.Error("the login bundle is not recorded as issued")
				}
			}
			if tc.want == nil || tc.counted > 0 {
				return
			}
			// Refused after both factors: the code is still good.
			tc.req.Request = issuance.Request{User: user, Device: "dev-1", PIN: tc.req.PIN}
			if _, err := h.svc.Login(ctx, issuerCaller, tc.req, nil); err != nil {
				t.Errorf("the corrected login with the same code: %v", err)
			}
		})
	}
}

// TestRefill: the refill sync asks for is an ordinary request of the
// device's, as large as the bundle it replaces and starting after the
// token's online state, under the same PIN, lockout and floor rules.
func TestRefill(t *testing.T) {
	dev := store.Device{ID: "dev-1", Realm: realm}
	for _, tc := range []struct {
		name string
		need func(h *harness) fieldsync.RefillNeed
		prep func(h *harness)
		want error
		// first and count are the refill's entries.
		first func(h *harness) uint64
		count int
	}{
		{name: "HOTP: as many counters, after the last used", count: 4,
			prep: func(h *harness) {
				must(h.t, verifyErr(h.on.Verify(ctx, realm, "alice", h.code("alice", 4), "", "test")))
			},
			need: func(h *harness) fieldsync.RefillNeed {
				return fieldsync.RefillNeed{Device: dev, Token: h.token("alice"), Type: "hotp", FromSerial: 1, First: 1, Last: 4}
			},
			first: func(*harness) uint64 { return 5 }},
		{name: "TOTP: as many steps, after the last used", count: 20,
			need: func(h *harness) fieldsync.RefillNeed {
				s := totp.Step(h.clock.Now())
				return fieldsync.RefillNeed{Device: dev, Token: h.token("bob"), Type: "totp", FromSerial: 1, First: s - 19, Last: s}
			},
			first: func(h *harness) uint64 { return totp.Step(h.clock.Now()) + 1 }},
		{name: "no refill below the floor (no override)", want: cost.ErrBelowFloor,
			need: func(h *harness) fieldsync.RefillNeed {
				s := totp.Step(h.clock.Now())
				return fieldsync.RefillNeed{Device: dev, Token: h.token("bob"), Type: "totp", FromSerial: 1, First: s - 479, Last: s}
			}},
		{name: "no refill for a PIN user", want: issuance.ErrPINRequired,
			need: func(h *harness) fieldsync.RefillNeed {
				s := totp.Step(h.clock.Now())
				return fieldsync.RefillNeed{Device: dev, Token: h.token("carol"), Type: "totp", FromSerial: 1, First: s - 19, Last: s}
			}},
		{name: "no refill for a locked user", want: &online.LockedError{},
			prep: func(h *harness) { h.lock("alice") },
			need: func(h *harness) fieldsync.RefillNeed {
				return fieldsync.RefillNeed{Device: dev, Token: h.token("alice"), Type: "hotp", FromSerial: 1, First: 1, Last: 4}
			}},
		{name: "no refill of a deleted token", want: issuance.ErrUnknownToken,
			need: func(h *harness) fieldsync.RefillNeed {
				tok := h.token("alice")
				must(h.t, h.st.DeleteToken(ctx, realm, "alice", tok.ID))
				return fieldsync.RefillNeed{Device: dev, Token: tok, Type: "hotp", FromSerial: 1, First: 1, Last: 4}
			}},
		{name: "no refill across realms", want: issuance.ErrUnknownUser,
			need: func(h *harness) fieldsync.RefillNeed {
				return fieldsync.RefillNeed{Device: store.Device{ID: "dev-1", Realm: "other"}, Token: h.token("alice"), Type: "hotp", FromSerial: 1, First: 1, Last: 4}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.prep != nil {
				tc.prep(h)
			}
			data, err := h.svc.Refill(ctx, tc.need(h))
			if !matches(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				if h.rec.count("dev-1") != 0 {
					t.Error("a refused refill was recorded")
				}
				return
			}
			b := h.decode(data, "dev-1")
			if b.First != tc.first(h) || b.Count() != tc.count || b.PIN || len(b.Secrets) != 0 {
				t.Errorf("refill entries %d+%d: want %d+%d, no PIN, no secrets", b.First, b.Count(), tc.first(h), tc.count)
			}
			if h.rec.count("dev-1") != 1 {
				t.Error("the refill is not recorded as issued to the device")
			}
			if es := h.audited(audit.BundleIssue); len(es) != 1 || es[0].Actor != "device:dev-1" {
				t.Errorf("the refill is not audited as the device's: %+v", es)
			}
		})
	}
}

func verifyErr(_ online.Result, err error) error { return err }

// TestRefillThroughSync: the sync service asks this service for refills
// directly (fieldsync.Service.Refill), and this service records what it
// issues with the sync service: no HTTP between them. A device that used
// its bundle up gets one as large, after it.
func TestRefillThroughSync(t *testing.T) {
	h := newHarness(t)
	ss := h.st.(store.SyncStore)
	field := &fieldsync.Service{Store: h.st, Sync: ss, Audit: h.svc.Audit, Signer: h.svc.Signer, Now: h.clock.Now, Workers: 2,
		Refill: h.svc.Refill, RefillWait: time.Minute}
	h.svc.Record = field
	devStore, err := offline.Init(ctx, t.TempDir(), offline.Config{DeviceID: "van-1", ServerKey: h.svc.Signer.Public,
		Policy: offline.Policy{MaxFailures: 20, ClockTolerance: 5 * time.Minute, TOTPBack: 1, TOTPForward: 1, HOTPLookahead: 4}},
		offline.Options{Now: h.clock.Now, Workers: 2})
	must(t, err)
	defer devStore.Close()
	_, err = field.Register(ctx, realm, "van-1", devStore.DevicePublicKey(), "test")
	must(t, err)

	out, err := h.svc.Issue(ctx, issuerCaller, issuance.Request{User: "alice", Device: "van-1", Count: 4}, nil)
	must(t, err)
	_, err = devStore.Import(ctx, out.Bundle)
	must(t, err)
	for c := uint64(1); c <= 4; c++ {
		_, err := devStore.Verify(ctx, offline.Attempt{User: "alice", Code: h.code("alice", c)})
		must(t, err)
	}
	h.clock.Add(time.Second)
	up, _, err := devStore.PrepareUpload(ctx, offline.UploadOptions{})
	must(t, err)
	res, err := field.Receive(ctx, up, "test")
	must(t, err)
	rep, err := devStore.ApplyResponse(ctx, res.Signed)
	must(t, err)
	if len(rep.Imported) != 1 || rep.Imported[0].First != 5 || rep.Imported[0].Entries != 4 {
		t.Fatalf("refill %+v", rep)
	}
	if _, err := devStore.Verify(ctx, offline.Attempt{User: "alice", Code: h.code("alice", 7)}); err != nil {
		t.Fatalf("a refilled entry: %v", err)
	}
}

// TestPool: with a bundle pool, bundles, jobs and refills compute through
// it (never more than its workers at once), and a full queue refuses at
// once with ErrBusy, before any work, and leaves nothing behind.
func TestPool(t *testing.T) {
	h := newHarness(t)
	pool := workpool.New(workpool.Config{Workers: 1, Queue: 1})
	defer pool.Close()
	h.svc.Pool = pool
	req := issuance.Request{User: "alice", Device: "dev-1", Count: 8}
	hold, err := pool.Admit() // another bundle holds the only place
	must(t, err)
	if _, err := h.svc.Issue(ctx, issuerCaller, req, nil); !errors.Is(err, issuance.ErrBusy) {
		t.Fatalf("issue with a full queue: %v", err)
	}
	if _, err := h.svc.Start(ctx, issuerCaller, req); !errors.Is(err, issuance.ErrBusy) {
		t.Fatalf("job with a full queue: %v", err)
	}
	if h.rec.count("dev-1") != 0 || len(h.audited(audit.BundleIssue)) != 0 {
		t.Fatal("a refused bundle was recorded or audited")
	}
	hold()
	out, err := h.svc.Issue(ctx, issuerCaller, req, nil)
	must(t, err)
	if b := h.decode(out.Bundle, "dev-1"); b.Count() != 8 {
		t.Fatalf("%d entries", b.Count())
	}
	job, err := h.svc.Start(ctx, issuerCaller, req)
	must(t, err)
	waitJob(t, h, issuerCaller, job.ID, issuance.JobDone)
	if st := pool.Stats(); st.Peak != 1 || st.Queued != 0 {
		t.Fatalf("pool after the work: %+v, want peak 1 and nothing queued", st)
	}
}
