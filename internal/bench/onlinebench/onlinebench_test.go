package onlinebench

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/otp"
)

// TestRunQuick runs the benchmark briefly on SQLite and, when
// OUTPOST_TEST_POSTGRES_DSN is set, on PostgreSQL: at each client count the
// three handlers run in order, every answer is the expected one, bytes
// written are reported on Linux and the ratios are set.
func TestRunQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	dsns := map[string]string{"sqlite": ""}
	if dsn := os.Getenv(storetest.PostgresEnv); dsn != "" {
		dsns["postgres"] = dsn
	} else {
		t.Log("PostgreSQL skipped: " + storetest.SkipMessage)
	}
	for engine, dsn := range dsns {
		t.Run(engine, func(t *testing.T) {
			clients := []int{1, 4}
			rs, err := Run(context.Background(), Config{DSN: dsn, Users: 8, Concurrency: clients, Duration: 150 * time.Millisecond}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			handlers := []string{HandlerNoop, HandlerPlain, HandlerVerify}
			if len(rs) != len(clients)*len(handlers) {
				t.Fatalf("%d results, want %d: %+v", len(rs), len(clients)*len(handlers), rs)
			}
			for i, r := range rs {
				if r.Engine != engine || r.Handler != handlers[i%3] || r.Clients != clients[i/3] ||
					r.Requests == 0 || r.Errors != 0 || r.Rate <= 0 || r.P99 < r.P50 {
					t.Errorf("result %d: %+v", i, r)
				}
				if runtime.GOOS == "linux" && (r.BytesPerRequest == nil || r.BytesSource == "") {
					t.Errorf("%s at %d clients: no bytes written on Linux: %+v", r.Handler, r.Clients, r)
				}
			}
			for i := 0; i < len(rs); i += 3 {
				noop, plain, verify := rs[i], rs[i+1], rs[i+2]
				if plain.VsNoop <= 0 || verify.VsNoop <= 0 || verify.VsPlain <= 0 || noop.VsNoop != 0 || plain.VsPlain != 0 {
					t.Errorf("ratios at %d clients: plain %+v, verify %+v", noop.Clients, plain, verify)
				}
				if runtime.GOOS != "linux" {
					continue
				}
				// Accepting a code writes; refusing its form does not (on
				// SQLite the count is this process's alone).
				if *plain.BytesPerRequest <= 0 || *verify.BytesPerRequest <= 0 || verify.BytesVsPlain <= 0 {
					t.Errorf("bytes at %d clients: plain %v, verify %v", noop.Clients, *plain.BytesPerRequest, *verify.BytesPerRequest)
				}
				if engine == "sqlite" && *noop.BytesPerRequest >= *plain.BytesPerRequest {
					t.Errorf("the baseline wrote %v B per request, plain %v", *noop.BytesPerRequest, *plain.BytesPerRequest)
				}
			}
		})
	}
}

// TestDuringBundle runs verify beside a small bundle on every core and in
// the pool (the separate process needs the outpost binary) at the highest
// client count: each run reports its placement, verify's rate alone just
// before it and its ratio to that, and the load average; the pool's run
// reports its share.
func TestDuringBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	rs, err := Run(context.Background(), Config{Users: 8, Concurrency: []int{4, 2}, Duration: 200 * time.Millisecond,
		DuringBundle: true, BundleEntries: 40, BundleWorkers: 1, BundleShare: 0.5}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 8 || rs[6].Beside != PlaceAllCores || rs[7].Beside != PlacePool {
		t.Fatalf("results %+v", rs)
	}
	for _, r := range rs[6:] {
		if r.Handler != HandlerVerify || r.Clients != 4 || r.Requests == 0 || r.Errors != 0 || r.AloneRate <= 0 || r.Load == "" ||
			math.Abs(r.VsAlone-r.Rate/r.AloneRate) > 1e-9 {
			t.Errorf("%s: %+v", r.Beside, r)
		}
	}
	if rs[6].BundleShare != 0 || rs[7].BundleShare != 0.5 {
		t.Errorf("shares: all cores %v, pool %v; want none and 0.5", rs[6].BundleShare, rs[7].BundleShare)
	}
}

// TestPlainRefusesReplay attacks the plain verifier on each engine: the
// same code sent by many clients at once is accepted exactly once, and
// again later not at all; a wrong key, an old code and a code of the
// wrong length are refused and a fresh code is then still accepted.
func TestPlainRefusesReplay(t *testing.T) {
	for _, e := range storetest.Engines {
		t.Run(e.Name, func(t *testing.T) {
			ctx := context.Background()
			seed := []byte("12345678901234567890")
			users := []User{{ID: "alice", Seed: seed}, {ID: "bob", Seed: seed}}
			pv, err := startPlain(ctx, e.DSN(t), users, 10)
			if err != nil {
				t.Fatal(err)
			}
			defer pv.close()
			p := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
			code := func(c uint64) string { s, _ := p.CodeAt(seed, c); return s }
			post := func(key, user, code string) int {
				req, _ := http.NewRequestWithContext(ctx, "POST", pv.url, bytes.NewReader(verifyBody(user, code)))
				req.Header.Set("Authorization", "Bearer "+key)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return 0
				}
				res.Body.Close()
				return res.StatusCode
			}
			if got := post("wrong", "alice", code(1)); got != http.StatusUnauthorized {
				t.Errorf("wrong key: %d", got)
			}
			var ok, refused atomic.Int64
			bench.Parallel(16, func(int) {
				switch post(pv.key, "alice", code(3)) {
				case http.StatusOK:
					ok.Add(1)
				case http.StatusUnauthorized:
					refused.Add(1)
				}
			})
			if ok.Load() != 1 || refused.Load() != 15 {
				t.Errorf("one code sent 16 times at once: %d accepted, %d refused", ok.Load(), refused.Load())
			}
			for name, tc := range map[string]struct {
				user, code string
				want       int
			}{
				"replayed later": {"alice", code(3), http.StatusUnauthorized},
				"older code":     {"alice", code(2), http.StatusUnauthorized},
				"wrong length":   {"alice", "12345", http.StatusBadRequest},
				"unknown user":   {"mallory", code(4), http.StatusUnauthorized},
				"next code":      {"alice", code(4), http.StatusOK},
				"other user":     {"bob", code(3), http.StatusOK},
			} {
				if got := post(pv.key, tc.user, tc.code); got != tc.want {
					t.Errorf("%s: %d, want %d", name, got, tc.want)
				}
			}
		})
	}
}

// countingStore counts the calls a verification makes to the store.
type countingStore struct {
	store.Store
	calls atomic.Int64
}

func (c *countingStore) GetUser(ctx context.Context, realm, id string) (store.User, error) {
	c.calls.Add(1)
	return c.Store.GetUser(ctx, realm, id)
}

func (c *countingStore) GetUserTokens(ctx context.Context, realm, id string) (store.User, []store.Token, error) {
	c.calls.Add(1)
	return c.Store.GetUserTokens(ctx, realm, id)
}

func (c *countingStore) RecordFailure(ctx context.Context, realm, id string, now time.Time) (int, error) {
	c.calls.Add(1)
	return c.Store.RecordFailure(ctx, realm, id, now)
}

func (c *countingStore) ResetFailures(ctx context.Context, realm, id string) error {
	c.calls.Add(1)
	return c.Store.ResetFailures(ctx, realm, id)
}

func (c *countingStore) AdvanceToken(ctx context.Context, realm, user, id string, used int64) error {
	c.calls.Add(1)
	return c.Store.AdvanceToken(ctx, realm, user, id, used)
}

func (c *countingStore) AcceptCode(ctx context.Context, realm, user, id string, used, version int64, e eventlog.Entry) (eventlog.Entry, error) {
	c.calls.Add(1)
	return c.Store.AcceptCode(ctx, realm, user, id, used, version, e)
}

func (c *countingStore) AppendAudit(ctx context.Context, e eventlog.Entry) (eventlog.Entry, error) {
	c.calls.Add(1)
	return c.Store.AppendAudit(ctx, e)
}

// TestBaselineTouchesNoStore: the baseline's requests reach no store method
// a verification calls, while verifications do (so the count is real).
func TestBaselineTouchesNoStore(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "outpost.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cs := &countingStore{Store: st}
	f, err := newFixture(ctx, cs, 8, 4, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	cs.calls.Store(0)
	if r := f.load(ctx, f.noop(), 4, 100*time.Millisecond); r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("baseline: %+v", r)
	}
	if n := cs.calls.Load(); n != 0 {
		t.Fatalf("the baseline made %d store calls of a verification", n)
	}
	if r := f.load(ctx, f.verify(), 4, 100*time.Millisecond); r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("verify: %+v", r)
	}
	if cs.calls.Load() == 0 {
		t.Fatal("verifications made no store call: the count is broken")
	}
}
