package offline_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

var ctx = context.Background()

// kinds returns the kinds of the device log's entries.
func kinds(t *testing.T, s *offline.Store) []string {
	t.Helper()
	es, err := devicelog.Since(ctx, s.DB(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Kind)
	}
	if bad, err := devicelog.Verify(ctx, s.DB(), s.DevicePublicKey()); err != nil {
		t.Fatalf("device log does not verify at %d: %v", bad, err)
	}
	return out
}

func tokenStatus(t *testing.T, s *offline.Store, user string) offline.TokenStatus {
	t.Helper()
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range st.Tokens {
		if ts.User == user {
			return ts
		}
	}
	t.Fatalf("no status for %s", user)
	return offline.TokenStatus{}
}

func TestHOTPVerifyOnce(t *testing.T) {
	s, _, _ := newStore(t, quickPolicy)
	res, err := s.Import(ctx, issue(t, hotpReq(0, 10)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != 10 || res.User != "alice" || res.Type != "hotp" {
		t.Fatalf("import result %+v", res)
	}
	p := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	codes := codesAt(t, p, seed, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	wrong := wrongCode(hotpCodes(t, 10)...)

	r, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: codes[0]})
	if err != nil {
		t.Fatalf("first code: %v", err)
	}
	if r.Counter != 0 || len(r.ReleaseKey()) != 32 {
		t.Fatalf("counter %d", r.Counter)
	}
	if v, err := r.Secret("door"); err != nil || string(v) != "4711" {
		t.Fatalf("released secret %q, %v", v, err)
	}
	// The same code again: used, refused, counted.
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: codes[0]}); !errors.Is(err, offline.ErrWrongCode) {
		t.Fatalf("replayed code: %v, want ErrWrongCode", err)
	}
	if ts := tokenStatus(t, s, "alice"); ts.Failures != 1 || *ts.LastUsed != 0 || ts.Remaining != 9 {
		t.Fatalf("after a replay: %+v", ts)
	}
	// Counter 3 is within the look-ahead (1..5): accepted, and the failure counter resets.
	if r, err := s.Verify(ctx, offline.Attempt{User: "alice", Realm: "acme", Token: "tok-1", Code: codes[3]}); err != nil || r.Counter != 3 {
		t.Fatalf("code 3: %v", err)
	}
	// Counter 2 was skipped: now behind the last used one.
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: codes[2]}); !errors.Is(err, offline.ErrWrongCode) {
		t.Fatalf("skipped code: %v", err)
	}
	// Counter 9 is beyond the look-ahead (4..8).
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: codes[9]}); !errors.Is(err, offline.ErrWrongCode) {
		t.Fatalf("code beyond the look-ahead: %v", err)
	}
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: wrong}); !errors.Is(err, offline.ErrWrongCode) {
		t.Fatalf("wrong code: %v", err)
	}
	for _, c := range []int{8, 9} {
		if r, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: codes[c]}); err != nil || r.Counter != uint64(c) {
			t.Fatalf("code %d: %v", c, err)
		}
	}
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: wrong}); !errors.Is(err, offline.ErrNoEntries) {
		t.Fatalf("after the last entry: %v, want ErrNoEntries", err)
	}
	want := []string{"init", "import", "verify.attempt", "verify.ok", "verify.attempt", "verify.fail", "verify.attempt", "verify.ok",
		"verify.attempt", "verify.fail", "verify.attempt", "verify.fail", "verify.attempt", "verify.fail",
		"verify.attempt", "verify.ok", "verify.attempt", "verify.ok", "verify.refused"}
	if got := kinds(t, s); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("log kinds\n got %v\nwant %v", got, want)
	}
}

func TestTOTPWithPIN(t *testing.T) {
	s, c, _ := newStore(t, quickPolicy)
	if _, err := s.Import(ctx, issue(t, totpReq("2468"))); err != nil {
		t.Fatal(err)
	}
	now := t0.Unix()
	codes := codesAt(t, otp.DefaultTOTP, seed, now-30, now, now+30, now+90)
	step := otp.DefaultTOTP.Step(t0)

	// Usage errors change nothing.
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[1]}); !errors.Is(err, offline.ErrPINRequired) {
		t.Fatalf("no PIN: %v", err)
	}
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: "12345", PIN: "2468"}); !errors.Is(err, otp.ErrMalformedCode) {
		t.Fatalf("5 digits: %v", err)
	}
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: "12345a", PIN: "2468"}); !errors.Is(err, otp.ErrMalformedCode) {
		t.Fatalf("a letter: %v", err)
	}
	if _, err := s.Verify(ctx, offline.Attempt{User: "carol", Code: codes[1], PIN: "2468"}); !errors.Is(err, offline.ErrUnknownUser) {
		t.Fatalf("unknown user: %v", err)
	}
	if ts := tokenStatus(t, s, "bob"); ts.Failures != 0 || ts.LastUsed != nil {
		t.Fatalf("usage errors changed state: %+v", ts)
	}
	// The wrong PIN with the right code counts.
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[1], PIN: "2469"}); !errors.Is(err, offline.ErrWrongCode) {
		t.Fatalf("wrong PIN: %v", err)
	}
	// Code + PIN: accepted once.
	r, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[1], PIN: "2468"})
	if err != nil || r.Counter != step {
		t.Fatalf("code+PIN: %v", err)
	}
	if v, _ := r.Secret("admin"); string(v) != "s3cret" {
		t.Fatalf("secret %q", v)
	}
	if ts := tokenStatus(t, s, "bob"); ts.Failures != 0 || *ts.LastUsed != step {
		t.Fatalf("after success: %+v", ts)
	}
	// The previous step's code is now behind the last used step; the current one is used.
	for _, code := range []string{codes[0], codes[1]} {
		if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: code, PIN: "2468"}); !errors.Is(err, offline.ErrWrongCode) {
			t.Fatalf("old or used code: %v", err)
		}
	}
	// The next step's code is within the window (+1).
	if r, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[2], PIN: "2468"}); err != nil || r.Counter != step+1 {
		t.Fatalf("next step: %v", err)
	}
	// Now step+1 is used and the window is step-1..step+1: nothing left to try.
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[1], PIN: "2468"}); !errors.Is(err, offline.ErrNoEntries) {
		t.Fatalf("window used up: %v", err)
	}
	// Two steps ahead is outside the window until the clock gets there.
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[3], PIN: "2468"}); !errors.Is(err, offline.ErrNoEntries) {
		t.Fatalf("code 3 steps ahead: %v", err)
	}
	c.Advance(90 * time.Second)
	if r, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[3], PIN: "2468"}); err != nil || r.Counter != step+3 {
		t.Fatalf("code at its time: %v", err)
	}
	// After the period: no entries. After NotAfter: out of validity.
	c.Set(t0.Add(51 * time.Minute))
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[1], PIN: "2468"}); !errors.Is(err, offline.ErrNoEntries) {
		t.Fatalf("after the period: %v", err)
	}
	c.Set(t0.Add(66 * time.Minute))
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[1], PIN: "2468"}); !errors.Is(err, offline.ErrOutOfValidity) {
		t.Fatalf("after NotAfter: %v", err)
	}
}

func TestWipeAfterMaxFailures(t *testing.T) {
	pol := quickPolicy
	pol.MaxFailures = 3
	s, _, _ := newStore(t, pol)
	if _, err := s.Import(ctx, issue(t, hotpReq(0, 10))); err != nil {
		t.Fatal(err)
	}
	other := hotpReq(0, 5)
	other.TokenID = "tok-9"
	if _, err := s.Import(ctx, issue(t, other)); err != nil {
		t.Fatal(err)
	}
	wrong := wrongCode(hotpCodes(t, 10)...)
	a := offline.Attempt{User: "alice", Token: "tok-1", Code: wrong}
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: wrong}); !errors.Is(err, offline.ErrAmbiguous) {
		t.Fatalf("two tokens, none named: %v", err)
	}
	for i := 1; i <= 2; i++ {
		_, err := s.Verify(ctx, a)
		if !errors.Is(err, offline.ErrWrongCode) {
			t.Fatalf("failure %d: %v", i, err)
		}
		if ts := tokenStatus(t, s, "alice"); ts.Failures != i {
			t.Fatalf("failures %d, want %d", ts.Failures, i)
		}
	}
	_, err := s.Verify(ctx, a)
	if !errors.Is(err, offline.ErrWiped) {
		t.Fatalf("third failure: %v, want ErrWiped", err)
	}
	// Both of alice's bundles are gone; the right code no longer works.
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range st.Tokens {
		if ts.Wiped.IsZero() || ts.Entries != 0 {
			t.Fatalf("after the wipe: %+v", ts)
		}
	}
	right := hotpCodes(t, 1)[0]
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Token: "tok-1", Code: right}); !errors.Is(err, offline.ErrWiped) {
		t.Fatalf("right code after the wipe: %v", err)
	}
	var n int
	s.DB().QueryRow(`SELECT count(*) FROM field_bundles`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d bundles left after the wipe", n)
	}
	// A newer bundle from the server lifts the wipe.
	req := hotpReq(0, 10)
	req.Serial = uint64(t0.UnixMicro()) + 1000
	if _, err := s.Import(ctx, issue(t, req)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Token: "tok-1", Code: right}); err != nil {
		t.Fatalf("after re-import: %v", err)
	}
	k := kinds(t, s)
	if strings.Count(strings.Join(k, " "), "wipe") != 1 {
		t.Fatalf("log %v should hold one wipe", k)
	}
}

func TestDelayGrows(t *testing.T) {
	pol := quickPolicy
	pol.DelayBase, pol.DelayMax = time.Second, 3*time.Second
	s, c, _ := newStore(t, pol)
	if _, err := s.Import(ctx, issue(t, hotpReq(0, 10))); err != nil {
		t.Fatal(err)
	}
	wrong := offline.Attempt{User: "alice", Code: wrongCode(hotpCodes(t, 10)...)}
	for i, delay := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
		if _, err := s.Verify(ctx, wrong); !errors.Is(err, offline.ErrWrongCode) {
			t.Fatalf("failure %d: %v", i+1, err)
		}
		// Too early: locked, and nothing changes but the log.
		c.Advance(delay - time.Millisecond)
		before := tokenStatus(t, s, "alice")
		if _, err := s.Verify(ctx, wrong); !errors.Is(err, offline.ErrLocked) {
			t.Fatalf("attempt %v after failure %d: %v, want ErrLocked", delay-time.Millisecond, i+1, err)
		}
		if after := tokenStatus(t, s, "alice"); after.Failures != before.Failures {
			t.Fatalf("a locked attempt counted")
		}
		c.Advance(time.Millisecond)
	}
	// The right code after the delay resets the counter.
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: hotpCodes(t, 1)[0]}); err != nil {
		t.Fatal(err)
	}
	if ts := tokenStatus(t, s, "alice"); ts.Failures != 0 || !ts.LockedUntil.IsZero() {
		t.Fatalf("after success: %+v", ts)
	}
}

// TestParallelAttemptsGetOneGuess: the failure is counted before the KDF
// runs, so parallel attempts cannot all get an answer before the lockout.
func TestParallelAttemptsGetOneGuess(t *testing.T) {
	pol := quickPolicy
	pol.DelayBase, pol.DelayMax = time.Minute, time.Hour
	s, _, _ := newStore(t, pol)
	if _, err := s.Import(ctx, issue(t, hotpReq(0, 10))); err != nil {
		t.Fatal(err)
	}
	wrong := offline.Attempt{User: "alice", Code: wrongCode(hotpCodes(t, 10)...)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Verify(ctx, wrong)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, offline.ErrWrongCode):
				counts["wrong"]++
			case errors.Is(err, offline.ErrLocked):
				counts["locked"]++
			default:
				counts[err.Error()]++
			}
		}()
	}
	wg.Wait()
	if counts["wrong"] != 1 || counts["locked"] != 5 {
		t.Fatalf("outcomes %v, want 1 wrong and 5 locked", counts)
	}
}

// TestParallelRightCodeOnce: of concurrent attempts with one right code, one wins.
func TestParallelRightCodeOnce(t *testing.T) {
	s, _, _ := newStore(t, quickPolicy)
	if _, err := s.Import(ctx, issue(t, hotpReq(0, 10))); err != nil {
		t.Fatal(err)
	}
	code := hotpCodes(t, 1)[0]
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: code}); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d attempts accepted one code", ok)
	}
}

func TestClockHighWaterMark(t *testing.T) {
	s, c, _ := newStore(t, quickPolicy)
	if _, err := s.Import(ctx, issue(t, totpReq(""))); err != nil {
		t.Fatal(err)
	}
	c.Advance(20 * time.Minute)
	codes := codesAt(t, otp.DefaultTOTP, seed, t0.Add(20*time.Minute).Unix(), t0.Unix(), t0.Add(16*time.Minute).Unix())
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[0]}); err != nil {
		t.Fatal(err)
	}
	// Back 20 minutes: refused, no state change but the log.
	c.Set(t0)
	before := tokenStatus(t, s, "bob")
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[1]}); !errors.Is(err, offline.ErrClockBack) {
		t.Fatalf("clock set back: %v", err)
	}
	if after := tokenStatus(t, s, "bob"); after.Failures != before.Failures || *after.LastUsed != *before.LastUsed {
		t.Fatal("a refused clock changed state")
	}
	if _, err := s.Import(ctx, issue(t, hotpReq(0, 3))); !errors.Is(err, offline.ErrClockBack) {
		t.Fatalf("import with the clock set back: %v", err)
	}
	// Back 4 minutes is within the tolerance (5 min): allowed, but the code
	// of that time is below the last used step.
	c.Set(t0.Add(16 * time.Minute))
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: codes[2]}); !errors.Is(err, offline.ErrNoEntries) {
		t.Fatalf("within tolerance: %v", err)
	}
}

// badBundles are the ways an import can be wrong, each with its error.
func badBundles(t *testing.T) map[string]struct {
	data []byte
	want error
} {
	good := issue(t, hotpReq(0, 5))
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0x04
	other := hotpReq(0, 5)
	other.Device = "dev-2"
	expired := hotpReq(0, 5)
	expired.NotBefore, expired.NotAfter = t0.Add(-48*time.Hour), t0.Add(-24*time.Hour)
	early := hotpReq(0, 5)
	early.NotBefore, early.NotAfter = t0.Add(24*time.Hour), t0.Add(48*time.Hour)
	foreign, _, err := bundleIssueWith(otherSigner(t), hotpReq(0, 5))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]struct {
		data []byte
		want error
	}{
		"flipped bit":   {flipped, offline.ErrMalformed}, // base64 or signature: either way refused
		"other device":  {issue(t, other), offline.ErrWrongDevice},
		"expired":       {issue(t, expired), offline.ErrExpired},
		"not yet valid": {issue(t, early), offline.ErrNotYetValid},
		"unknown key":   {foreign, offline.ErrUnknownKey},
		"truncated":     {good[:len(good)/2], offline.ErrMalformed},
		"trailing data": {append(append([]byte(nil), good...), "{}"...), offline.ErrMalformed},
		"oversize":      {make([]byte, offline.MaxBundleSize+1), offline.ErrTooLarge},
		"empty":         {nil, offline.ErrMalformed},
	}
}

func TestImportRefusesBadBundles(t *testing.T) {
	s, _, _ := newStore(t, quickPolicy)
	for name, tc := range badBundles(t) {
		t.Run(name, func(t *testing.T) {
			_, err := s.Import(ctx, tc.data)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, tc.want) && !(name == "flipped bit" && errors.Is(err, offline.ErrBadSignature)) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			st, err := s.Status(ctx)
			if err != nil || len(st.Tokens) != 0 {
				t.Fatalf("a refused bundle left state: %+v", st.Tokens)
			}
		})
	}
	// Every refusal is in the log, nothing else.
	for _, k := range kinds(t, s)[1:] {
		if k != "import.refused" {
			t.Fatalf("log holds %q", k)
		}
	}
}

func TestImportReplacesBySerial(t *testing.T) {
	s, _, _ := newStore(t, quickPolicy)
	r1, r2 := hotpReq(0, 5), hotpReq(5, 5)
	r1.Serial, r2.Serial = 100, 200
	b1, b2 := issue(t, r1), issue(t, r2)
	if _, err := s.Import(ctx, b2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, b1); !errors.Is(err, offline.ErrStale) {
		t.Fatalf("older serial: %v, want ErrStale", err)
	}
	if res, err := s.Import(ctx, b2); err != nil || !res.Unchanged {
		t.Fatalf("same bundle again: %+v, %v", res, err)
	}
	r3 := hotpReq(10, 5)
	r3.Serial = 300
	res, err := s.Import(ctx, issue(t, r3))
	if err != nil || res.Replaced != 200 || res.First != 10 {
		t.Fatalf("newer serial: %+v, %v", res, err)
	}
	if ts := tokenStatus(t, s, "alice"); ts.Serial != 300 || ts.First != 10 {
		t.Fatalf("status %+v", ts)
	}
}

func TestCorruptStore(t *testing.T) {
	t.Run("garbage database", func(t *testing.T) {
		s, _, dir := newStore(t, quickPolicy)
		s.Close()
		os.Remove(filepath.Join(dir, offline.DatabaseFile+"-wal"))
		os.Remove(filepath.Join(dir, offline.DatabaseFile+"-shm"))
		if err := os.WriteFile(filepath.Join(dir, offline.DatabaseFile), []byte("this is not a database, just text............................................................................................"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := offline.Open(ctx, dir, offline.Options{}); !errors.Is(err, offline.ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
	})
	t.Run("truncated database", func(t *testing.T) {
		s, _, dir := newStore(t, quickPolicy)
		if _, err := s.Import(ctx, issue(t, hotpReq(0, 5))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DB().Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			t.Fatal(err)
		}
		s.Close()
		path := filepath.Join(dir, offline.DatabaseFile)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, st.Size()/2); err != nil {
			t.Fatal(err)
		}
		s2, err := offline.Open(ctx, dir, offline.Options{})
		if err == nil {
			// quick_check may pass on some truncations; the data must then fail to read.
			_, err = s2.Verify(ctx, offline.Attempt{User: "alice", Code: "123456"})
			s2.Close()
		}
		if !errors.Is(err, offline.ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
	})
	t.Run("altered bundle row", func(t *testing.T) {
		s, _, _ := newStore(t, quickPolicy)
		if _, err := s.Import(ctx, issue(t, hotpReq(0, 5))); err != nil {
			t.Fatal(err)
		}
		var data []byte
		if err := s.DB().QueryRow(`SELECT data FROM field_bundles`).Scan(&data); err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 1
		if _, err := s.DB().Exec(`UPDATE field_bundles SET data = ?`, data); err != nil {
			t.Fatal(err)
		}
		_, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: hotpCodes(t, 1)[0]})
		if !errors.Is(err, offline.ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
		if ts := tokenStatus(t, s, "alice"); ts.Problem == "" || ts.Failures != 0 {
			t.Fatalf("status %+v", ts)
		}
	})
	t.Run("replaced device key", func(t *testing.T) {
		s, _, dir := newStore(t, quickPolicy)
		s.Close()
		key := filepath.Join(dir, offline.IdentityFile)
		os.Remove(key)
		if _, err := devicelog.LoadOrCreateIdentity(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := offline.Open(ctx, dir, offline.Options{}); !errors.Is(err, offline.ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
		os.Remove(key)
		if _, err := offline.Open(ctx, dir, offline.Options{}); !errors.Is(err, offline.ErrCorrupt) {
			t.Fatalf("missing key: %v, want ErrCorrupt", err)
		}
	})
	t.Run("altered log", func(t *testing.T) {
		s, _, dir := newStore(t, quickPolicy)
		s.Close()
		db, err := sqlitedb.Open(filepath.Join(dir, offline.DatabaseFile))
		if err != nil {
			t.Fatal(err)
		}
		db.Exec(`DROP TRIGGER device_log_no_update`)
		if _, err := db.Exec(`UPDATE device_log SET subject = 'mallory'`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		s2, err := offline.Open(ctx, dir, offline.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		st, err := s2.Status(ctx)
		if err != nil || st.LogProblem == "" {
			t.Fatalf("status %v: log problem %q", err, st.LogProblem)
		}
	})
	t.Run("not initialised", func(t *testing.T) {
		if _, err := offline.Open(ctx, t.TempDir(), offline.Options{}); !errors.Is(err, offline.ErrNotInitialised) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("init twice", func(t *testing.T) {
		_, _, dir := newStore(t, quickPolicy)
		_, err := offline.Init(ctx, dir, offline.Config{DeviceID: "dev-1", ServerKey: testSigner(t).Public}, offline.Options{})
		if !errors.Is(err, offline.ErrAlreadyInitialised) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestReopenKeepsState(t *testing.T) {
	s, c, dir := newStore(t, quickPolicy)
	if _, err := s.Import(ctx, issue(t, hotpReq(0, 5))); err != nil {
		t.Fatal(err)
	}
	code := hotpCodes(t, 1)[0]
	if _, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: code}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := offline.Open(ctx, dir, offline.Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.DeviceID() != "dev-1" || s2.Policy() != quickPolicy {
		t.Fatalf("reopened %q %+v", s2.DeviceID(), s2.Policy())
	}
	if _, err := s2.Verify(ctx, offline.Attempt{User: "alice", Code: code}); !errors.Is(err, offline.ErrWrongCode) {
		t.Fatalf("code used before reopening: %v", err)
	}
	if ch, err := s2.AdvanceUsed(ctx, offline.TokenKey{Realm: "acme", User: "alice", Token: "tok-1"}, 3, "online"); err != nil || !ch {
		t.Fatalf("AdvanceUsed: %v %v", ch, err)
	}
	if ch, _ := s2.AdvanceUsed(ctx, offline.TokenKey{Realm: "acme", User: "alice", Token: "tok-1"}, 2, "online"); ch {
		t.Fatal("AdvanceUsed went back")
	}
	if ts := tokenStatus(t, s2, "alice"); *ts.LastUsed != 3 || ts.Remaining != 1 {
		t.Fatalf("status %+v", ts)
	}
	// The log never holds a code.
	es, err := devicelog.Since(ctx, s2.DB(), 0, 0)
	if err != nil || len(es) == 0 {
		t.Fatalf("device log: %d entries, %v", len(es), err)
	}
	for _, e := range es {
		if strings.Contains(string(e.Data), code) {
			t.Fatalf("log entry %d holds the code: %s", e.Seq, e.Data)
		}
	}
	st, err := s2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := json.Marshal(st); err != nil {
		t.Fatal(err)
	}
}
