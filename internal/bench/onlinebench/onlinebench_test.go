package onlinebench

import (
	"context"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// TestRunQuick runs the benchmark briefly on SQLite: both handlers answer
// as expected, every time.
func TestRunQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	rs, err := Run(context.Background(), Config{Users: 20, Concurrency: 4, Duration: 200 * time.Millisecond}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Handler != "noop" || rs[1].Handler != "verify" {
		t.Fatalf("results %+v", rs)
	}
	for _, r := range rs {
		if r.Engine != "sqlite" || r.Requests == 0 || r.Errors != 0 || r.Rate <= 0 || r.P99 < r.P50 {
			t.Errorf("%s: %+v", r.Handler, r)
		}
	}
}

// TestDuringBundle runs verify beside a small bundle on every core and in
// the pool (the separate process needs the outpost
// binary): each run reports its placement, its ratio to verify alone and
// the load average.
func TestDuringBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	rs, err := Run(context.Background(), Config{Users: 20, Concurrency: 4, Duration: 300 * time.Millisecond,
		DuringBundle: true, BundleEntries: 40, BundleWorkers: 1}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 || rs[2].Beside != PlaceAllCores || rs[3].Beside != PlacePool {
		t.Fatalf("results %+v", rs)
	}
	for _, r := range rs[2:] {
		if r.Handler != "verify" || r.Requests == 0 || r.Errors != 0 || r.VsAlone <= 0 || r.Load == "" {
			t.Errorf("%s: %+v", r.Beside, r)
		}
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

func (c *countingStore) AcceptCode(ctx context.Context, realm, user, id string, used int64, e eventlog.Entry) (eventlog.Entry, error) {
	c.calls.Add(1)
	return c.Store.AcceptCode(ctx, realm, user, id, used, e)
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
	cfg := Config{Concurrency: 4, Duration: 100 * time.Millisecond}
	cs.calls.Store(0)
	if r := f.load(ctx, targets[0], cfg.Concurrency, cfg.Duration); r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("baseline: %+v", r)
	}
	if n := cs.calls.Load(); n != 0 {
		t.Fatalf("the baseline made %d store calls of a verification", n)
	}
	if r := f.load(ctx, targets[1], cfg.Concurrency, cfg.Duration); r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("verify: %+v", r)
	}
	if cs.calls.Load() == 0 {
		t.Fatal("verifications made no store call: the count is broken")
	}
}
