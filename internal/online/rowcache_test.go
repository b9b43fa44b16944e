package online

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/otp"
)

// countingStore counts the reads verification makes.
type countingStore struct {
	store.Store
	reads atomic.Int64
}

func (c *countingStore) GetUserTokens(ctx context.Context, realm, id string) (store.User, []store.Token, error) {
	c.reads.Add(1)
	return c.Store.GetUserTokens(ctx, realm, id)
}

// replicas returns two services on one database through two stores (as two
// `outpost serve` processes have), with the same master key and clock, and
// b's store counting reads.
func replicas(t *testing.T, dsn func(testing.TB) string) (a, b *Service, bStore *countingStore) {
	t.Helper()
	d := dsn(t)
	a, _, _ = newTestService(t, d)
	bStore = &countingStore{Store: storetest.Open(t, d)}
	b = &Service{Store: bStore, Seeds: a.Seeds, Policy: a.Policy, Audit: a.Audit, Now: a.Now}
	return a, b, bStore
}

// TestRowCacheAcrossReplicas: replica b verifies from its cached rows only
// what the store still allows. Each case warms b's cache with a right code,
// changes the user or token on replica a (or in the store, as an admin
// would), and b's next verification must answer as if it had read the rows.
func TestRowCacheAcrossReplicas(t *testing.T) {
	for _, eng := range []struct {
		name string
		dsn  func(testing.TB) string
	}{{"sqlite", storetest.SQLitePath}, {"postgres", storetest.PostgresDSN}} {
		t.Run(eng.name, func(t *testing.T) {
			a, b, bStore := replicas(t, eng.dsn)
			cases := []struct {
				name   string
				change func(t *testing.T, user string, tk testToken)
				// code is the counter b offers after the change.
				code uint64
				want func(error) bool
			}{
				{"token disabled", func(t *testing.T, user string, tk testToken) {
					mustDo(t, a.Store.SetTokenStatus(ctx, "r1", user, tk.ID, store.TokenDisabled))
				}, 1, func(err error) bool { return errors.Is(err, ErrInvalidCode) }},
				{"locked out", func(t *testing.T, user string, _ testToken) {
					for range a.Policy.MaxFailures {
						_, err := a.Store.RecordFailure(ctx, "r1", user, a.now())
						mustDo(t, err)
					}
				}, 1, func(err error) bool { return isLocked(err, true) }},
				{"PIN set", func(t *testing.T, user string, _ testToken) {
					mustDo(t, a.SetPIN(ctx, "r1", user, "4711", actor))
				}, 1, func(err error) bool { return errors.Is(err, ErrInvalidCode) }},
				{"code used", func(t *testing.T, user string, tk testToken) {
					_, err := a.Verify(ctx, "r1", user, codeAt(t, tk, 1), "", actor)
					mustDo(t, err)
				}, 1, func(err error) bool { return errors.Is(err, ErrReplayed) }},
				{"token deleted", func(t *testing.T, user string, tk testToken) {
					mustDo(t, a.Store.DeleteToken(ctx, "r1", user, tk.ID))
				}, 1, func(err error) bool { return errors.Is(err, ErrInvalidCode) }},
				{"user deleted", func(t *testing.T, user string, _ testToken) {
					mustDo(t, a.Store.DeleteUser(ctx, "r1", user))
				}, 1, func(err error) bool { return errors.Is(err, ErrInvalidCode) }},
				{"nothing", func(*testing.T, string, testToken) {}, 1, func(err error) bool { return err == nil }},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					user := "u-" + c.name
					mustDo(t, a.Store.CreateUser(ctx, store.User{Realm: "r1", ID: user}))
					tk := activeToken(t, a, user)
					if _, err := b.Verify(ctx, "r1", user, codeAt(t, tk, 0), "", actor); err != nil {
						t.Fatalf("warming b's cache: %v", err)
					}
					c.change(t, user, tk)
					_, err := b.Verify(ctx, "r1", user, codeAt(t, tk, c.code), "", actor)
					if !c.want(err) {
						t.Fatalf("b after %s elsewhere: %v", c.name, err)
					}
				})
			}
			// The quick path: a cached user's right code needs no read.
			mustDo(t, a.Store.CreateUser(ctx, store.User{Realm: "r1", ID: "steady"}))
			tk := activeToken(t, a, "steady")
			for n := range 5 {
				before := bStore.reads.Load()
				if _, err := b.Verify(ctx, "r1", "steady", codeAt(t, tk, uint64(n)), "", actor); err != nil {
					t.Fatalf("code %d: %v", n, err)
				}
				if reads := bStore.reads.Load() - before; n > 0 && reads != 0 {
					t.Fatalf("code %d of a cached user read the store %d times", n, reads)
				}
			}
			// A replay of a cached user's code is still a replay, counted.
			if _, err := b.Verify(ctx, "r1", "steady", codeAt(t, tk, 4), "", actor); !errors.Is(err, ErrReplayed) {
				t.Fatalf("replay through the cache: %v", err)
			}
			if u, _ := a.Store.GetUser(ctx, "r1", "steady"); u.Failures != 1 {
				t.Fatalf("the replay counted %d failures, want 1", u.Failures)
			}
		})
	}
}

func activeToken(t *testing.T, s *Service, user string) testToken {
	t.Helper()
	p := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	tok, seed, err := s.Enrol(ctx, "r1", user, p, "", actor)
	mustDo(t, err)
	mustDo(t, s.Store.SetTokenStatus(ctx, "r1", user, tok.ID, store.TokenActive))
	return testToken{tok, seed, p}
}

func codeAt(t *testing.T, tk testToken, n uint64) string {
	t.Helper()
	c, err := tk.p.CodeAt(tk.seed, n)
	mustDo(t, err)
	return c
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
