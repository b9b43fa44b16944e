package issuance_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/issuance"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/workpool"
)

// durable makes h's service keep its jobs in the store.
func durable(t *testing.T, h *harness) store.BundleJobStore {
	m, err := keys.MasterFromBytes([]byte("outpost issuance test master k!!"))
	must(t, err)
	js := h.st.(store.BundleJobStore)
	h.svc.Durable, h.svc.Box, h.svc.Lease = js, issuance.JobBox(m), time.Minute
	return js
}

// TestDurableJobs: a job is queued in the store with its request sealed (a
// PIN never in clear), computed by whichever worker claims it, reported and
// handed out from the store, its request erased once done.
func TestDurableJobs(t *testing.T) {
	h := newHarness(t)
	js := durable(t, h)
	from := h.clock.Now().Add(time.Hour)
	job, err := h.svc.Start(ctx, issuerCaller, issuance.Request{User: "carol", Device: "dev-1", PIN: carolPIN, From: from, Until: from.Add(5 * time.Minute)})
	must(t, err)
	stored, err := js.GetBundleJob(ctx, realm, job.ID)
	must(t, err)
	if stored.State != store.JobQueued || bytes.Contains(stored.Request, []byte(carolPIN)) || bytes.Contains(stored.Request, []byte("carol")) {
		t.Fatalf("stored job: state %s, request in clear", stored.State)
	}
	if st, err := h.svc.Job(ctx, issuerCaller, job.ID); err != nil || st.State != issuance.JobRunning || st.Total != job.Entries {
		t.Fatalf("queued job: %+v %v", st, err)
	}
	if _, err := h.svc.JobBundle(ctx, issuerCaller, job.ID); !errors.Is(err, issuance.ErrJobRunning) {
		t.Fatalf("bundle of a queued job: %v", err)
	}
	ok, err := h.svc.WorkOne(ctx, "w1")
	if err != nil || !ok {
		t.Fatalf("work: %v %v", ok, err)
	}
	if ok, err := h.svc.WorkOne(ctx, "w1"); err != nil || ok {
		t.Fatalf("a second job out of one: %v %v", ok, err)
	}
	st, err := h.svc.Job(ctx, issuerCaller, job.ID)
	must(t, err)
	if st.State != issuance.JobDone || st.Done != job.Entries {
		t.Fatalf("done job: %+v", st)
	}
	out, err := h.svc.JobBundle(ctx, issuerCaller, job.ID)
	must(t, err)
	if b := h.decode(out.Bundle, "dev-1"); !b.PIN || b.Count() != job.Entries {
		t.Fatalf("bundle: pin %v, %d entries", b.PIN, b.Count())
	}
	if h.rec.count("dev-1") != 1 || len(h.audited(audit.BundleIssue)) != 1 {
		t.Fatal("the job's bundle is not recorded and audited once")
	}
	if stored, _ := js.GetBundleJob(ctx, realm, job.ID); len(stored.Request) > 1 {
		t.Fatal("the sealed request outlived the job")
	}
	if _, err := h.svc.Job(ctx, issuance.Caller{Realm: "other", Actor: "api:x"}, job.ID); !errors.Is(err, issuance.ErrUnknownJob) {
		t.Fatalf("another realm sees the job: %v", err)
	}
}

// TestDurableJobTakenOver: a worker that claimed a job and died (it never
// renews its lease) loses it once the lease runs out; the next worker
// computes it, and the dead one can no longer finish it.
func TestDurableJobTakenOver(t *testing.T) {
	h := newHarness(t)
	js := durable(t, h)
	job, err := h.svc.Start(ctx, issuerCaller, issuance.Request{User: "alice", Device: "dev-1", Count: 6})
	must(t, err)
	if _, ok, err := js.ClaimBundleJob(ctx, "dead", h.clock.Now(), time.Minute); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	if ok, err := h.svc.WorkOne(ctx, "w2"); err != nil || ok {
		t.Fatalf("a leased job was taken: %v %v", ok, err)
	}
	h.clock.Add(61 * time.Second)
	if ok, err := h.svc.WorkOne(ctx, "w2"); err != nil || !ok {
		t.Fatalf("take over: %v %v", ok, err)
	}
	if st, _ := h.svc.Job(ctx, issuerCaller, job.ID); st.State != issuance.JobDone {
		t.Fatalf("after take-over: %+v", st)
	}
	if err := js.FinishBundleJob(ctx, job.ID, "dead", store.JobFailed, nil, "late", h.clock.Now()); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("the dead worker finished the job: %v", err)
	}
	if stored, _ := js.GetBundleJob(ctx, realm, job.ID); stored.Attempts != 2 {
		t.Fatalf("%d attempts", stored.Attempts)
	}
}

// TestEnqueueOnly: a server that computes no bundle refuses a synchronous
// bundle and a login bundle with ErrBusy (before the login's code is
// looked at) and still enqueues a job.
func TestEnqueueOnly(t *testing.T) {
	h := newHarness(t)
	durable(t, h)
	h.svc.EnqueueOnly = true
	req := issuance.Request{User: "alice", Device: "dev-1", Count: 6}
	if _, err := h.svc.Issue(ctx, issuerCaller, req, nil); !errors.Is(err, issuance.ErrBusy) {
		t.Fatalf("issue: %v", err)
	}
	login := issuance.LoginRequest{Request: issuance.Request{User: "carol", Device: "dev-1", PIN: carolPIN}, Code: "123456"}
	if _, err := h.svc.Login(ctx, issuerCaller, login, nil); !errors.Is(err, issuance.ErrBusy) {
		t.Fatalf("login: %v", err)
	}
	if len(h.audited(audit.VerifyFail)) != 0 {
		t.Fatal("a refused login spent or counted a code")
	}
	if _, err := h.svc.Start(ctx, issuerCaller, req); err != nil {
		t.Fatalf("start: %v", err)
	}
}

// TestWorkLoop: a Work loop of the process that queued a job starts it at
// once (not at its next poll), and stops when its context ends.
func TestWorkLoop(t *testing.T) {
	h := newHarness(t)
	durable(t, h)
	wctx, cancel := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- h.svc.Work(wctx, "w1", time.Hour) }()
	job, err := h.svc.Start(ctx, issuerCaller, issuance.Request{User: "alice", Device: "dev-1", Count: 6})
	must(t, err)
	waitJob(t, h, issuerCaller, job.ID, issuance.JobDone)
	cancel()
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Fatalf("work stopped with %v", err)
	}
}

// TestDurableJobWaitsForQueue: a claimed job whose pool queue is full waits
// for room instead of failing.
func TestDurableJobWaitsForQueue(t *testing.T) {
	h := newHarness(t)
	durable(t, h)
	pool := workpool.New(workpool.Config{Workers: 1, Queue: 1})
	defer pool.Close()
	h.svc.Pool = pool
	job, err := h.svc.Start(ctx, issuerCaller, issuance.Request{User: "alice", Device: "dev-1", Count: 6})
	must(t, err)
	hold, err := pool.Admit()
	must(t, err)
	done := make(chan error, 1)
	go func() { _, err := h.svc.WorkOne(ctx, "w1"); done <- err }()
	time.Sleep(50 * time.Millisecond)
	if st, _ := h.svc.Job(ctx, issuerCaller, job.ID); st.State != issuance.JobRunning {
		t.Fatalf("while the queue is full: %+v", st)
	}
	hold()
	must(t, <-done)
	if st, _ := h.svc.Job(ctx, issuerCaller, job.ID); st.State != issuance.JobDone {
		t.Fatalf("after: %+v", st)
	}
}
