package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/pin"
	"github.com/outpost-auth/outpost/offline"
)

// Tests of issue 9, items 5 to 7: no oracle, no unbounded guessing, and a
// replayed code named in the audit log.

// auditOf returns the audit entries of kind, oldest first.
func (f *fixture) auditOf(kind string) []eventlog.Entry {
	f.t.Helper()
	var out []eventlog.Entry
	for after := uint64(0); ; {
		es, err := f.st.ListAudit(context.Background(), after, 1000)
		if err != nil {
			f.t.Fatal(err)
		}
		if len(es) == 0 {
			return out
		}
		for _, e := range es {
			if e.Kind == kind {
				out = append(out, e)
			}
		}
		after = es[len(es)-1].Seq
	}
}

func (f *fixture) failures(user string) int {
	f.t.Helper()
	u, err := f.st.GetUser(context.Background(), DefaultRealm, user)
	if err != nil {
		f.t.Fatal(err)
	}
	return u.Failures
}

// wrongCode is a code that matches none of uri's codes near the fixture's clock.
func (f *fixture) wrongCode(uri string) string {
	for _, c := range []string{"000000", "111111", "222222"} {
		if !slices.Contains([]string{f.codeAt(uri, -1), f.codeAt(uri, 0), f.codeAt(uri, 1)}, c) {
			return c
		}
	}
	panic("unreachable")
}

// firstUsed is the first_used of the last verify.replayed entry.
func (f *fixture) firstUsed() map[string]any {
	f.t.Helper()
	es := f.auditOf(audit.VerifyReplay)
	if len(es) == 0 {
		f.t.Fatal("no verify.replayed entry")
	}
	var d struct {
		FirstUsed map[string]any `json:"first_used"`
	}
	if err := json.Unmarshal(es[len(es)-1].Data, &d); err != nil {
		f.t.Fatal(err)
	}
	return d.FirstUsed
}

const replayedBody = `{"error":{"code":"replayed","message":"this code was already used; wait for the next one"}}`

// checkReplayed: the client learns "replayed" and nothing more; the audit
// entry names where and when the code was first used.
func checkReplayed(t *testing.T, f *fixture, r resp, where string, at time.Time) {
	t.Helper()
	if r.status != 401 || strings.TrimSpace(string(r.raw)) != replayedBody {
		t.Fatalf("replay answered %d %s, want 401 %s", r.status, r.raw, replayedBody)
	}
	fu := f.firstUsed()
	atText, _ := fu["at"].(string)
	got, _ := time.Parse(time.RFC3339Nano, atText)
	if fu["where"] != where || !got.Equal(at.Truncate(time.Microsecond)) {
		t.Fatalf("first_used %v, want %s at %s", fu, where, at)
	}
}

// TestReplayNamesFirstUse (item 7): a code used online, or offline and
// synced, answers replayed online, and the audit entry says where and when
// it was first used, for HOTP as for TOTP.
func TestReplayNamesFirstUse(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name+"/online", func(t *testing.T) {
			f := newFixture(t, dsn(t))
			verifier := f.client("verifier")
			for _, typ := range []string{"totp", "hotp"} {
				user := "rep-" + typ
				uri := f.enrol(user, map[string]any{"type": typ})
				f.clock.Add(30 * time.Second)
				code := f.codeAt(uri, 0)
				if typ == "hotp" {
					code = f.codeAt(uri, 4)
				}
				at := f.clock.Now()
				if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": user, "code": code}); r.status != 200 {
					t.Fatalf("%s first use: %d %s", typ, r.status, r.raw)
				}
				f.clock.Add(10 * time.Second)
				r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": user, "code": code})
				checkReplayed(t, f, r, "online", at)
			}
		})
		t.Run(name+"/offline", func(t *testing.T) {
			f := syncFixture(t, dsn(t))
			verifier := f.client("verifier")
			dev := f.fieldDevice("van-9")
			for _, typ := range []string{"totp", "hotp"} {
				user := "dev-" + typ
				uri := f.enrol(user, map[string]any{"type": typ})
				body := map[string]any{"user": user, "device": "van-9", "count": 10}
				code := hotpCode(t, uri, 3)
				if typ == "totp" {
					// The next step: enrolment's confirmation used this one,
					// and a bundle starts after the online state.
					f.clock.Add(30 * time.Second)
					now := f.clock.Now()
					body = map[string]any{"user": user, "device": "van-9", "from": now.Add(-time.Minute), "until": now.Add(10 * time.Minute)}
					code = f.codeAt(uri, 0)
				}
				r := f.call(f.admin, "POST", "/v1/offline/bundles", body)
				if r.status != 200 {
					t.Fatalf("bundle: %d %s", r.status, r.raw)
				}
				if _, err := dev.Import(ctx, r.raw); err != nil {
					t.Fatal(err)
				}
				at := f.clock.Now()
				if _, err := dev.Verify(ctx, offline.Attempt{User: user, Code: code}); err != nil {
					t.Fatalf("%s offline: %v", typ, err)
				}
				if _, err := dev.Sync(ctx, f.syncClient()); err != nil {
					t.Fatal(err)
				}
				r = f.call(verifier, "POST", "/v1/verify", map[string]string{"user": user, "code": code})
				checkReplayed(t, f, r, "device:van-9", at)
			}
		})
	}
}

// TestOfflineLoginAnswersAlike (item 5): an unknown user, a user without a
// token or a PIN, a wrong code and a wrong PIN get one answer, naming no
// token, and each failure of a known user is counted like a verification's.
func TestOfflineLoginAnswersAlike(t *testing.T) {
	f := bundleFixture(t)
	verifier := f.client("verifier")
	const p = "582039174628"
	remember(p)
	uri := f.enrol("pia", map[string]any{"type": "totp"})
	f.mustCall(204, f.admin, "PUT", "/v1/users/pia/pin", map[string]string{"pin": p})
	noPIN := f.enrol("nopin", map[string]any{"type": "totp"})
	f.mustCall(201, f.admin, "POST", "/v1/users", map[string]any{"id": "notoken"})
	f.mustCall(204, f.admin, "PUT", "/v1/users/notoken/pin", map[string]string{"pin": p})
	f.clock.Add(30 * time.Second)
	login := func(user, code, pin string) resp {
		return f.call(verifier, "POST", "/v1/offline/login", map[string]any{"user": user, "code": code, "pin": pin, "device": "dev-4"})
	}
	cases := []struct {
		name, user, code, pin string
		counted               bool
	}{
		{"unknown user", "ghost", f.codeAt(uri, 0), p, false},
		{"no token", "notoken", f.codeAt(uri, 0), p, true},
		{"no PIN", "nopin", f.codeAt(noPIN, 0), p, true},
		{"wrong code", "pia", f.wrongCode(uri), p, true},
		{"wrong PIN", "pia", f.codeAt(uri, 0), "582039174620", true},
	}
	var first resp
	for i, c := range cases {
		before := 0
		if c.counted {
			before = f.failures(c.user)
		}
		r := login(c.user, c.code, c.pin)
		if i == 0 {
			first = r
		}
		if r.status != 401 || r.errCode() != "invalid_code" || !bytes.Equal(r.raw, first.raw) || strings.Contains(string(r.raw), "tok_") {
			t.Errorf("%s: %d %s, want what %q got: %d %s", c.name, r.status, r.raw, cases[0].name, first.status, first.raw)
		}
		if c.counted && f.failures(c.user) != before+1 {
			t.Errorf("%s: failures %d -> %d, want counted", c.name, before, f.failures(c.user))
		}
	}
	// Right code and PIN, wrong bundle request: a clear error, nothing spent, nothing counted.
	code := f.codeAt(uri, 0)
	r := f.call(verifier, "POST", "/v1/offline/login", map[string]any{"user": "pia", "code": code, "pin": p, "device": "dev-4", "count": 5})
	if r.status != 400 || r.errCode() != "invalid_window" || strings.Contains(string(r.raw), "tok_") {
		t.Fatalf("bad window after a right login: %d %s", r.status, r.raw)
	}
	if r := login("pia", code, p); r.status != 200 {
		t.Fatalf("the same code after a refused request: %d %s", r.status, r.raw)
	}
	if n := f.failures("pia"); n != 0 {
		t.Fatalf("pia has %d failures after a successful login", n)
	}
}

// TestBundlePINCheckedLast (item 5): on POST /v1/offline/bundles a bad
// request is answered alike whatever the PIN (it is not even checked), and
// a wrong PIN is a failure like a wrong code: serialised per user,
// counted, audited, locked out.
func TestBundlePINCheckedLast(t *testing.T) {
	f := bundleFixture(t)
	issuer := f.client("issuer")
	const p = "738201945612"
	remember(p)
	f.enrol("pia", map[string]any{"type": "totp"})
	f.mustCall(204, f.admin, "PUT", "/v1/users/pia/pin", map[string]string{"pin": p})
	now := f.clock.Now()
	good := func() map[string]any {
		return map[string]any{"user": "pia", "device": "dev-2", "from": now, "until": now.Add(10 * time.Minute)}
	}
	var checks atomic.Int32
	f.srv.svc.CheckPINHash = func(h []byte, s string) bool { checks.Add(1); return pin.Check(h, s) }
	bad := map[string]func(map[string]any){
		"count for totp":    func(b map[string]any) { b["count"] = 5 },
		"until before from": func(b map[string]any) { b["until"] = now.Add(-time.Hour) },
		"too many secrets": func(b map[string]any) {
			m := map[string]string{}
			for i := range 17 {
				m[string(rune('a'+i))] = "x"
			}
			b["secrets"] = m
		},
		"no device":     func(b map[string]any) { b["device"] = "" },
		"override":      func(b map[string]any) { b["override_floor"] = true },
		"unknown token": func(b map[string]any) { b["token"] = "tok_nope" },
		"malformed pin": func(b map[string]any) { b["pin"] = "12ab" },
		"bad device":    func(b map[string]any) { b["device"] = "a/b" },
		"unknown user":  func(b map[string]any) { b["user"] = "nobody" },
	}
	for name, mod := range bad {
		var bodies []string
		for _, pn := range []string{p, "738201945610"} {
			b := good()
			b["pin"] = pn
			mod(b)
			r := f.call(issuer, "POST", "/v1/offline/bundles", b)
			if r.status < 400 {
				t.Fatalf("%s: %d", name, r.status)
			}
			bodies = append(bodies, string(r.raw))
		}
		if bodies[0] != bodies[1] {
			t.Errorf("%s: right PIN %s, wrong PIN %s: the answer depends on the PIN", name, bodies[0], bodies[1])
		}
	}
	if n := f.failures("pia"); n != 0 || checks.Load() != 0 {
		t.Fatalf("bad requests: %d failures, %d PIN checks; want none", n, checks.Load())
	}
	// A wrong PIN on a good request: counted and audited.
	b := good()
	b["pin"] = "738201945610"
	if r := f.call(issuer, "POST", "/v1/offline/bundles", b); r.status != 400 || r.errCode() != "pin_mismatch" || f.failures("pia") != 1 {
		t.Fatalf("wrong PIN: %d %s, %d failures", r.status, r.raw, f.failures("pia"))
	}
	// A burst of parallel wrong PINs meets the lockout one by one.
	statuses := parallelStatuses(30, func() resp { return f.call(issuer, "POST", "/v1/offline/bundles", b) })
	if statuses[400] > f.srv.cfg.Policy.MaxFailures-1 || statuses[400]+statuses[429] != 30 {
		t.Fatalf("30 parallel wrong PINs: %v; at most %d may be checked", statuses, f.srv.cfg.Policy.MaxFailures-1)
	}
	for i := 0; f.failures("pia") < f.srv.cfg.Policy.MaxFailures; i++ {
		f.clock.Add(10 * time.Minute)
		b["from"], b["until"] = f.clock.Now(), f.clock.Now().Add(10*time.Minute)
		if r := f.call(issuer, "POST", "/v1/offline/bundles", b); r.status != 400 || i > 20 {
			t.Fatalf("wrong PIN after the delay: %d %s", r.status, r.raw)
		}
	}
	b["pin"] = p
	if r := f.call(issuer, "POST", "/v1/offline/bundles", b); r.status != 429 || r.errCode() != "locked" {
		t.Fatalf("locked user with the right PIN: %d %s", r.status, r.raw)
	}
	if len(f.auditOf(audit.Lockout)) != 1 || len(f.auditOf(audit.VerifyFail)) != f.srv.cfg.Policy.MaxFailures {
		t.Fatalf("audit: %d lockout, %d verify.fail entries", len(f.auditOf(audit.Lockout)), len(f.auditOf(audit.VerifyFail)))
	}
}

// cheapPINs makes PIN hashes (and the dummy, hashed at a service's first
// check) cost kib KiB of argon2id for this test.
func cheapPINs(t *testing.T, kib uint32) {
	old := pin.Cost
	pin.Cost.Time, pin.Cost.MemoryKiB = 1, kib
	t.Cleanup(func() { pin.Cost = old })
}

// pinUsers creates n users with a TOTP token and a PIN, and returns their ids.
func pinUsers(f *fixture, prefix string, n int) []string {
	var ids []string
	for i := range n {
		id := prefix + string(rune('a'+i))
		f.enrol(id, map[string]any{"type": "totp"})
		if r := f.call(f.admin, "PUT", "/v1/users/"+id+"/pin", map[string]string{"pin": "90817263"}); r.status != 204 {
			f.t.Fatalf("pin: %d %s", r.status, r.raw)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestPINChecksAreCapped (item 5): many concurrent requests that check a
// PIN, on /v1/offline/bundles and /v1/verify, never run more argon2id
// checks at once than the cap, and every PIN check goes through it.
func TestPINChecksAreCapped(t *testing.T) {
	cheapPINs(t, 1024)
	f := bundleFixture(t)
	f.srv.svc.MaxPINChecks, f.srv.svc.PINWait = 2, time.Minute
	issuer, verifier := f.client("issuer"), f.client("verifier")
	users := pinUsers(f, "cap-", 10)
	var cur, peak, calls atomic.Int32
	f.srv.svc.CheckPINHash = func(h []byte, s string) bool {
		n := cur.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(10 * time.Millisecond)
		cur.Add(-1)
		calls.Add(1)
		return pin.Check(h, s)
	}
	now := f.clock.Now()
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(2)
		go func() {
			defer wg.Done()
			f.call(issuer, "POST", "/v1/offline/bundles", map[string]any{"user": u, "device": "d-1", "pin": "11112222",
				"from": now, "until": now.Add(10 * time.Minute)})
		}()
		go func() {
			defer wg.Done()
			f.call(verifier, "POST", "/v1/verify", map[string]any{"user": u, "code": "123456", "pin": "11112222"})
		}()
	}
	wg.Wait()
	if peak.Load() > 2 || calls.Load() != int32(2*len(users)) {
		t.Fatalf("%d PIN checks, at most %d at once; want %d checks, at most 2 at once", calls.Load(), peak.Load(), 2*len(users))
	}
}

// TestPINCheckBusy (item 5): a request that cannot get a PIN check slot in
// time is answered 503 with Retry-After, and nothing is counted.
func TestPINCheckBusy(t *testing.T) {
	cheapPINs(t, 1024)
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	f.srv.svc.MaxPINChecks, f.srv.svc.PINWait = 1, 20*time.Millisecond
	verifier := f.client("verifier")
	users := pinUsers(f, "busy-", 2)
	hold, held := make(chan struct{}), make(chan struct{}, 1)
	f.srv.svc.CheckPINHash = func(h []byte, s string) bool {
		select {
		case held <- struct{}{}:
			<-hold
		default:
		}
		return pin.Check(h, s)
	}
	done := make(chan resp)
	go func() {
		done <- f.call(verifier, "POST", "/v1/verify", map[string]any{"user": users[0], "code": "123456", "pin": "11112222"})
	}()
	for len(held) == 0 {
		time.Sleep(time.Millisecond)
	}
	r := f.call(verifier, "POST", "/v1/verify", map[string]any{"user": users[1], "code": "123456", "pin": "11112222"})
	close(hold)
	<-done
	if r.status != 503 || r.errCode() != "busy" || r.header.Get("Retry-After") != "1" || f.failures(users[1]) != 0 {
		t.Fatalf("busy: %d %s Retry-After=%q, %d failures", r.status, r.raw, r.header.Get("Retry-After"), f.failures(users[1]))
	}
}

// TestConfirmAndResyncAreAttempts (item 5): confirming and resynchronising
// a token are attempts like a verification: failures counted and audited,
// a locked user refused, and an HOTP confirmation searches the
// verification look-ahead, not the resync window.
func TestConfirmAndResyncAreAttempts(t *testing.T) {
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	issuer := f.client("issuer")
	f.mustCall(201, f.admin, "POST", "/v1/users", map[string]any{"id": "cal"})
	r := f.call(f.admin, "POST", "/v1/users/cal/tokens", map[string]any{"type": "hotp"})
	uri, tid := r.body["otpauth_uri"].(string), r.body["id"].(string)
	confirm := func(code string) resp {
		return f.call(issuer, "POST", "/v1/users/cal/tokens/"+tid+"/confirm", map[string]string{"code": code})
	}
	if r := confirm(hotpCode(t, uri, 50)); r.status != 401 || r.errCode() != "invalid_code" || f.failures("cal") != 1 {
		t.Fatalf("confirm with counter 50: %d %s, %d failures; want refused and counted", r.status, r.raw, f.failures("cal"))
	}
	for i := 2; i <= f.srv.cfg.Policy.MaxFailures; i++ {
		f.clock.Add(f.srv.cfg.Policy.Delay(i - 1))
		if r := confirm("000000"); r.status != 401 {
			t.Fatalf("confirm failure %d: %d %s", i, r.status, r.raw)
		}
	}
	if r := confirm(hotpCode(t, uri, 0)); r.status != 429 || r.errCode() != "locked" {
		t.Fatalf("locked user confirms: %d %s", r.status, r.raw)
	}
	resync := map[string]string{"code1": hotpCode(t, uri, 100), "code2": hotpCode(t, uri, 101)}
	if r := f.call(issuer, "POST", "/v1/users/cal/tokens/"+tid+"/resync", resync); r.status != 429 {
		t.Fatalf("locked user resyncs: %d %s", r.status, r.raw)
	}
	if n := len(f.auditOf(audit.Lockout)); n != 1 {
		t.Fatalf("%d lockout entries", n)
	}
	for _, e := range f.auditOf(audit.VerifyFail) {
		if !strings.Contains(string(e.Data), `"op":"confirm"`) {
			t.Fatalf("failure entry %s does not say it was a confirmation", e.Data)
		}
	}
	f.mustCall(204, f.admin, "DELETE", "/v1/users/cal/lockout", nil)
	if r := confirm(hotpCode(t, uri, 0)); r.status != 200 {
		t.Fatalf("confirm after reset: %d %s", r.status, r.raw)
	}
	bad := map[string]string{"code1": hotpCode(t, uri, 100), "code2": hotpCode(t, uri, 102)}
	if r := f.call(issuer, "POST", "/v1/users/cal/tokens/"+tid+"/resync", bad); r.status != 401 || f.failures("cal") != 1 {
		t.Fatalf("bad resync: %d %s, %d failures; want counted", r.status, r.raw, f.failures("cal"))
	}
}

// medianOf returns the median of d.
func medianOf(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestVerifyTimingAlike (item 5): an unknown user, a user without a PIN and
// a user with one take the same time to be refused on /v1/verify: each
// costs one argon2id check (a dummy hash for the first two), and an
// unknown user's waits as long as a known user's failure takes to record.
// Medians of interleaved calls, with one KDF for all (16 MiB, t=1: larger
// than the jitter of the durable writes on a loaded machine), so that the
// noise hits every kind alike.
func TestVerifyTimingAlike(t *testing.T) {
	cheapPINs(t, 16*1024)
	f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
	verifier := f.client("verifier")
	uri := f.enrol("tpin", map[string]any{"type": "totp"})
	f.mustCall(204, f.admin, "PUT", "/v1/users/tpin/pin", map[string]string{"pin": "48151623"})
	f.enrol("tnopin", map[string]any{"type": "totp"})
	wrong := f.wrongCode(uri)
	kinds := []struct{ name, user string }{{"unknown", "tghost"}, {"no PIN", "tnopin"}, {"PIN", "tpin"}}
	// A shared 2-core machine can slow one round's samples for a while: a
	// round whose medians differ by more than the bounds is measured again,
	// up to three times. A real difference (before the fix: 0.08 and 0.20)
	// fails every round.
	var problems []string
	for round := range 3 {
		problems = timingRound(t, f, verifier, kinds, wrong, round)
		if len(problems) == 0 {
			return
		}
		t.Logf("round %d: %s", round, strings.Join(problems, "; "))
	}
	t.Errorf("the time tells users apart in three rounds: %s", strings.Join(problems, "; "))
}

// timingRound measures 21 interleaved wrong-code verifies of each kind
// (after two of warm-up) and returns the kinds whose median is outside
// 0.67–1.5 of the PIN user's.
func timingRound(t *testing.T, f *fixture, verifier string, kinds []struct{ name, user string }, wrong string, round int) []string {
	const n = 21
	times := make([][]time.Duration, len(kinds))
	for i := range n + 2 {
		for k, kind := range kinds {
			user := kind.user
			if user == "tghost" {
				// A name unknown users' lockout has not met (it has no reset).
				user = fmt.Sprintf("tghost-%d-%d", round, i)
			}
			start := time.Now()
			r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": user, "code": wrong, "pin": "11223344"})
			d := time.Since(start)
			if r.status != 401 || r.errCode() != "invalid_code" {
				t.Fatalf("%s: %d %s", kind.name, r.status, r.raw)
			}
			if kind.user != "tghost" {
				must(t, f.st.ResetFailures(ctx, DefaultRealm, kind.user))
			}
			if i >= 2 { // two rounds of warm-up
				times[k] = append(times[k], d)
			}
		}
	}
	var problems []string
	base := medianOf(times[2])
	for k, kind := range kinds {
		m := medianOf(times[k])
		ratio := float64(m) / float64(base)
		t.Logf("%-8s median %v (ratio to PIN user %.2f)", kind.name, m, ratio)
		if ratio < 0.67 || ratio > 1.5 {
			problems = append(problems, fmt.Sprintf("%s: median %v against %v for a user with a PIN", kind.name, m, base))
		}
	}
	return problems
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
