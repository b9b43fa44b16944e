package online

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/pin"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/otp"
)

var ctx = context.Background()

// failingAppends fails the next n audit appends, and every acceptance
// with acceptErr while it is set.
type failingAppends struct {
	store.Store
	mu        sync.Mutex
	n         int
	acceptErr error
}

func (f *failingAppends) AcceptCode(ctx context.Context, realm, user, id string, used, version int64, e eventlog.Entry) (eventlog.Entry, error) {
	f.mu.Lock()
	err := f.acceptErr
	f.mu.Unlock()
	if err != nil {
		return eventlog.Entry{}, err
	}
	return f.Store.AcceptCode(ctx, realm, user, id, used, version, e)
}

func (f *failingAppends) AppendAudit(ctx context.Context, e eventlog.Entry) (eventlog.Entry, error) {
	f.mu.Lock()
	fail := f.n > 0
	f.n--
	f.mu.Unlock()
	if fail {
		return eventlog.Entry{}, errors.New("disk full")
	}
	return f.Store.AppendAudit(ctx, e)
}

// newTestService returns a service on dsn with realms r1 and r2 and a user
// r1/known; *at is its clock (read by this test's goroutine only).
func newTestService(t *testing.T, dsn string) (*Service, *time.Time, *failingAppends) {
	t.Helper()
	old := pin.Cost
	pin.Cost.Time, pin.Cost.MemoryKiB = 1, 64 // the tally, not argon2id, is under test
	t.Cleanup(func() { pin.Cost = old })
	st := storetest.Open(t, dsn)
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2031, 3, 4, 5, 0, 0, 0, time.UTC) // years ahead: no test may lean on the wall clock
	now := func() time.Time { return at }
	fs := &failingAppends{Store: st}
	s := &Service{Store: st, Seeds: NewSeeds(m), Policy: DefaultPolicy, Audit: &audit.Log{Store: fs, Now: now}, Now: now}
	for _, r := range []string{"r1", "r2"} {
		if err := st.CreateRealm(ctx, store.Realm{ID: r, Name: r}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateUser(ctx, store.User{Realm: "r1", ID: "known"}); err != nil {
		t.Fatal(err)
	}
	return s, &at, fs
}

func auditKinds(t *testing.T, st store.Store) map[string][]eventlog.Entry {
	t.Helper()
	out := map[string][]eventlog.Entry{}
	for after := uint64(0); ; {
		es, err := st.ListAudit(ctx, after, store.MaxListLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return out
		}
		for _, e := range es {
			out[e.Kind] = append(out[e.Kind], e)
		}
		after = es[len(es)-1].Seq
	}
}

// TestUnknownUsersTallied (issue 9, item 6): 10,000 verifications for
// unknown users add O(1) audit entries: one tally per realm per interval,
// with a bounded sample of keyed hashes of the names and none in the clear.
// A tally whose entry cannot be written is kept, not lost. Each name is
// tried 100 times: after FreeFailures it is delayed like a known user
// (unknownlock.go), and the attempts refused so are not evaluated, nor tallied.
func TestUnknownUsersTallied(t *testing.T) {
	for _, eng := range []struct {
		name string
		dsn  func(testing.TB) string
	}{{"sqlite", storetest.SQLitePath}, {"postgres", storetest.PostgresDSN}} {
		t.Run(eng.name, func(t *testing.T) {
			s, at, fs := newTestService(t, eng.dsn(t))
			const n = 10000
			evaluated := uint64(0)
			for i := range n {
				realm, user := "r1", fmt.Sprintf("ghost-%03d", i%100)
				if i%10 == 0 {
					realm = "r2"
				}
				var locked *LockedError
				switch _, err := s.Verify(ctx, realm, user, "123456", "", "api:c1"); {
				case errors.Is(err, ErrInvalidCode):
					evaluated++
				case !errors.As(err, &locked):
					t.Fatalf("verify %d: %v", i, err)
				}
				*at = at.Add(time.Millisecond)
			}
			if evaluated < 100*uint64(DefaultPolicy.FreeFailures) || evaluated == n {
				t.Fatalf("%d of %d verifications of 100 unknown names evaluated: the lockout does not apply to them", evaluated, n)
			}
			if got := auditKinds(t, s.Store); len(got) != 0 {
				t.Fatalf("within the interval: %d kinds of entries, want none yet", len(got))
			}
			*at = at.Add(DefaultUnknownInterval)
			fs.n = 1
			if err := s.FlushUnknown(ctx, false); err == nil {
				t.Fatal("the failing write went unnoticed")
			}
			// The next verification, of anyone, writes the tally that was kept.
			if _, err := s.Verify(ctx, "r1", "known", "123456", "", "api:c1"); !errors.Is(err, ErrInvalidCode) {
				t.Fatal(err)
			}
			got := auditKinds(t, s.Store)
			es := got[audit.VerifyUnknownUser]
			if len(es) != 2 || len(got[audit.VerifyFail]) != 1 {
				t.Fatalf("%d verify.unknown_user and %d verify.fail entries for %d verifications, want 2 and 1", len(es), len(got[audit.VerifyFail]), n)
			}
			total := uint64(0)
			for _, e := range es {
				var tally unknownTally
				if err := json.Unmarshal(e.Data, &tally); err != nil {
					t.Fatal(err)
				}
				total += tally.Count
				want := map[string]int{"r1": maxUnknownSample, "r2": 10}[tally.Realm] // r2 saw 10 names
				if len(tally.Users) != want || len(tally.Actors) != 1 || strings.Contains(string(e.Data), "ghost") {
					t.Fatalf("tally %s: want %d hashed names, 1 actor, no name in the clear", e.Data, want)
				}
			}
			if total != evaluated {
				t.Fatalf("tallies count %d verifications, want %d", total, evaluated)
			}
		})
	}
}

// TestUnknownTallyMemoryBounded: however many realms and names are
// guessed, the tally keeps at most maxUnknownRealms realms (one more, "*",
// for the rest) and bounded samples.
func TestUnknownTallyMemoryBounded(t *testing.T) {
	s := &Service{Now: func() time.Time { return time.Date(2031, 3, 4, 5, 0, 0, 0, time.UTC) }}
	for i := range 3 * maxUnknownRealms {
		s.tallyUnknown(fmt.Sprintf("realm-%d", i), fmt.Sprintf("user-%d", i), fmt.Sprintf("api:%d", i))
		s.tallyUnknown("realm-0", fmt.Sprintf("user-%d", i), fmt.Sprintf("api:%d", i))
	}
	if len(s.unknown.realms) != maxUnknownRealms+1 {
		t.Fatalf("%d realms tallied, want %d", len(s.unknown.realms), maxUnknownRealms+1)
	}
	for _, r := range []string{"realm-0", "*"} {
		tl := s.unknown.realms[r]
		if len(tl.Users) != maxUnknownSample || len(tl.Actors) != maxUnknownActors {
			t.Fatalf("%s: %d names, %d actors", r, len(tl.Users), len(tl.Actors))
		}
	}
}

// TestRefusedAcceptancePaced: when the database refuses a right code's
// acceptance (store.ErrUnavailable: the server answers 503), the answer
// takes the argon2id check a wrong code's answer takes, on the cached
// path and on the fresh one, so that its speed does not tell a right code
// from a wrong one (neither was counted); and the code is not spent.
func TestRefusedAcceptancePaced(t *testing.T) {
	s, _, fs := newTestService(t, storetest.SQLitePath(t))
	var checks atomic.Int64
	s.CheckPINHash = func(h []byte, p string) bool { checks.Add(1); return pin.Check(h, p) }
	tok, seed, err := s.Enrol(ctx, "r1", "known", otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}, "", actor)
	if err != nil {
		t.Fatal(err)
	}
	code := func(n uint64) string {
		c, err := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}.CodeAt(seed, n)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := s.Store.SetTokenStatus(ctx, "r1", "known", tok.ID, store.TokenActive); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(ctx, "r1", "known", code(0), "", actor); err != nil { // warms the row cache
		t.Fatal(err)
	}
	refused := fmt.Errorf("%w (too many clients)", store.ErrUnavailable)
	fs.mu.Lock()
	fs.acceptErr = refused
	fs.mu.Unlock()
	for _, path := range []string{"cached", "fresh"} {
		if path == "fresh" {
			s.rowCache().drop("r1", "known")
		}
		before := checks.Load()
		if _, err := s.Verify(ctx, "r1", "known", code(1), "", actor); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%s: %v, want ErrUnavailable", path, err)
		}
		if n := checks.Load() - before; n != 1 {
			t.Errorf("%s: %d argon2id checks for a refused right code, want 1 (a failure's)", path, n)
		}
	}
	fs.mu.Lock()
	fs.acceptErr = nil
	fs.mu.Unlock()
	if _, err := s.Verify(ctx, "r1", "known", code(1), "", actor); err != nil {
		t.Fatalf("after: %v (the refused code was spent?)", err)
	}
}
