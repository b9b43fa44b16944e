package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/store"
)

// RunBundleJobs runs the contract suite of store.BundleJobStore; every
// store Open returns implements it.
func RunBundleJobs(t *testing.T, open func(t *testing.T) store.Store) {
	runEngine(t, open, []engineCase[store.BundleJobStore]{
		{"Lifecycle", testBundleJobLifecycle},
		{"LeaseExpires", testBundleJobLeaseExpires},
		{"ClaimConcurrent", testBundleJobClaimConcurrent},
	})
}

func newBundleJob(realm, id string, at time.Time) store.BundleJob {
	return store.BundleJob{ID: id, Realm: realm, Request: []byte("sealed-request"), Total: 10, CreatedAt: at}
}

// testBundleJobLifecycle: queued, claimed (an attempt), progress renews the
// lease, done erases the request; only the owner may progress or finish;
// another realm does not see it; ended jobs are deleted after the cutoff.
func testBundleJobLifecycle(t *testing.T, st store.Store, js store.BundleJobStore) {
	seed(t, st, "r1")
	must(t, js.CreateBundleJob(ctx, newBundleJob("r1", "job_1", when)))
	if err := js.CreateBundleJob(ctx, newBundleJob("r1", "job_1", when)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	if n, err := js.CountBundleJobs(ctx); err != nil || n != 1 {
		t.Fatalf("count %d %v", n, err)
	}
	j, ok, err := js.ClaimBundleJob(ctx, "w1", when, time.Minute)
	must(t, err)
	if !ok || j.ID != "job_1" || j.State != store.JobRunning || j.Attempts != 1 || string(j.Request) != "sealed-request" ||
		!j.LeaseUntil.Equal(when.Add(time.Minute).Truncate(time.Microsecond)) {
		t.Fatalf("claimed %+v %v", j, ok)
	}
	if _, ok, err := js.ClaimBundleJob(ctx, "w2", when.Add(time.Second), time.Minute); err != nil || ok {
		t.Fatalf("a leased job was claimed again: %v %v", ok, err)
	}
	if err := js.ProgressBundleJob(ctx, "job_1", "w2", 1, 10, when, time.Minute); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("progress by another owner: %v", err)
	}
	must(t, js.ProgressBundleJob(ctx, "job_1", "w1", 4, 10, when.Add(50*time.Second), time.Minute))
	if _, ok, _ := js.ClaimBundleJob(ctx, "w2", when.Add(90*time.Second), time.Minute); ok {
		t.Fatal("progress did not renew the lease")
	}
	got, err := js.GetBundleJob(ctx, "r1", "job_1")
	must(t, err)
	if got.Done != 4 || got.Total != 10 {
		t.Fatalf("progress %d/%d", got.Done, got.Total)
	}
	if _, err := js.GetBundleJob(ctx, "r2", "job_1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another realm: %v", err)
	}
	if err := js.FinishBundleJob(ctx, "job_1", "w2", store.JobDone, []byte("bundle"), "", when); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("finish by another owner: %v", err)
	}
	if err := js.FinishBundleJob(ctx, "nope", "w1", store.JobDone, nil, "", when); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("finish of no job: %v", err)
	}
	must(t, js.FinishBundleJob(ctx, "job_1", "w1", store.JobDone, []byte("bundle"), "", when.Add(time.Minute)))
	got, err = js.GetBundleJob(ctx, "r1", "job_1")
	must(t, err)
	if got.State != store.JobDone || string(got.Bundle) != "bundle" || string(got.Request) == "sealed-request" || got.LeaseOwner != "" {
		t.Fatalf("done: %+v", got)
	}
	if _, ok, _ := js.ClaimBundleJob(ctx, "w2", when.Add(time.Hour), time.Minute); ok {
		t.Fatal("a done job was claimed")
	}
	if n, err := js.DeleteBundleJobs(ctx, when.Add(time.Minute)); err != nil || n != 0 {
		t.Fatalf("deleted %d before the cutoff: %v", n, err)
	}
	if n, err := js.DeleteBundleJobs(ctx, when.Add(2*time.Minute)); err != nil || n != 1 {
		t.Fatalf("deleted %d after the cutoff: %v", n, err)
	}
}

// testBundleJobLeaseExpires: a worker that stops renewing loses its job to
// the next claim once the lease has run out, and can no longer finish it.
func testBundleJobLeaseExpires(t *testing.T, st store.Store, js store.BundleJobStore) {
	seed(t, st, "r1")
	must(t, js.CreateBundleJob(ctx, newBundleJob("r1", "job_a", when)))
	if _, ok, err := js.ClaimBundleJob(ctx, "dead", when, time.Minute); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	j, ok, err := js.ClaimBundleJob(ctx, "alive", when.Add(time.Minute), time.Minute)
	if err != nil || !ok || j.Attempts != 2 || j.LeaseOwner != "alive" {
		t.Fatalf("claim after the lease: %+v %v %v", j, ok, err)
	}
	if err := js.FinishBundleJob(ctx, "job_a", "dead", store.JobFailed, nil, "late", when); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("the dead worker finished: %v", err)
	}
	must(t, js.FinishBundleJob(ctx, "job_a", "alive", store.JobFailed, nil, "bad\x00 reason", when))
	got, err := js.GetBundleJob(ctx, "r1", "job_a")
	must(t, err)
	if got.State != store.JobFailed || got.Error != "bad reason" {
		t.Fatalf("failed: %+v", got)
	}
}

// testBundleJobClaimConcurrent: workers claiming at once never share a job.
func testBundleJobClaimConcurrent(t *testing.T, st store.Store, js store.BundleJobStore) {
	seed(t, st, "r1")
	const n = 20
	for i := range n {
		must(t, js.CreateBundleJob(ctx, newBundleJob("r1", fmt.Sprintf("job_%02d", i), when.Add(time.Duration(i)))))
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := range 5 {
		wg.Go(func() {
			for {
				j, ok, err := js.ClaimBundleJob(ctx, fmt.Sprintf("w%d", w), when, time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				seen[j.ID]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("claimed %d jobs, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("%s claimed %d times", id, c)
		}
	}
}
