package issuance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/secretbox"
	"github.com/outpost-auth/outpost/internal/store"
)

// Durable jobs (docs/server.md, "Bundle work"): with [Service.Durable]
// and [Service.Box] set, [Service.Start] writes the admitted request to the
// store, sealed (it may hold a PIN and static secrets), and any process
// running [Service.Work] on the same database — `outpost serve` with bundle
// workers, or `outpost worker` — claims it with a lease, computes it and
// writes the bundle back; [Service.Job] and [Service.JobBundle] read the
// store, so every replica answers for every job. A worker that dies
// mid-job stops renewing its lease and the next claim after it runs out
// takes the job over (from the start).

// DefaultLease is how long a claimed job stays a worker's without progress.
const DefaultLease = time.Minute

// jobBoxName names the data key job requests are sealed under.
const jobBoxName = "bundle_jobs.request"

// JobBox returns the box durable job requests are sealed in ([Service.Box]):
// every process sharing a database derives the same one from the same
// master key.
func JobBox(m *keys.Master) *secretbox.Box { return secretbox.New(m, 0, jobBoxName) }

// wakeup is the channel Start nudges this process's Work loop on.
func (s *Service) wakeup() chan struct{} {
	s.wakeOnce.Do(func() { s.wake = make(chan struct{}, 1) })
	return s.wake
}

// sealedJob is what a durable job holds: who asked, and what.
type sealedJob struct {
	Caller  Caller  `json:"caller"`
	Request Request `json:"request"`
}

func (s *Service) startDurable(ctx context.Context, c Caller, in Request, a admitted) (Started, error) {
	now := s.now()
	if _, err := s.Durable.DeleteBundleJobs(ctx, now.Add(-jobRetention)); err != nil {
		return Started{}, err
	}
	n, err := s.Durable.CountBundleJobs(ctx)
	if err != nil {
		return Started{}, err
	}
	if n >= MaxJobs {
		return Started{}, refuse(ErrTooManyJobs, "%d bundle jobs are queued or running; wait for one to finish", MaxJobs)
	}
	plain, err := json.Marshal(sealedJob{Caller: c, Request: in})
	if err != nil {
		return Started{}, err
	}
	id := newJobID()
	sealed, err := s.Box.Seal(plain, []byte(id))
	clear(plain)
	if err != nil {
		return Started{}, err
	}
	if err := s.Durable.CreateBundleJob(ctx, store.BundleJob{ID: id, Realm: c.Realm, Request: sealed, Total: a.rep.Entries, CreatedAt: now}); err != nil {
		return Started{}, err
	}
	select {
	case s.wakeup() <- struct{}{}: // this process's Work looks at once
	default:
	}
	return Started{ID: id, Entries: a.rep.Entries, Estimate: a.wall}, nil
}

func (s *Service) durableJob(ctx context.Context, c Caller, id string) (store.BundleJob, error) {
	j, err := s.Durable.GetBundleJob(ctx, c.Realm, id)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		return j, refuse(ErrUnknownJob, "no such job (finished jobs are kept for an hour)")
	}
	return j, err
}

// durableStatus maps a stored job to the API's states (a queued job is
// "running" with nothing done yet).
func durableStatus(j store.BundleJob) JobStatus {
	st := JobStatus{State: JobRunning, Done: j.Done, Total: j.Total, Error: j.Error}
	switch j.State {
	case store.JobDone:
		st.State = JobDone
	case store.JobFailed:
		st.State = JobFailed
	}
	return st
}

// Work claims durable jobs as owner and computes them, one at a time,
// until ctx ends; poll is how long it waits when no job is queued (0: 1 s).
// Run several Work loops (or processes) to compute several jobs at once;
// the Pool bounds their argon2id work together. A job's bundle is recorded
// and audited like any other, with the job's caller as actor.
func (s *Service) Work(ctx context.Context, owner string, poll time.Duration) error {
	if poll <= 0 {
		poll = time.Second
	}
	for {
		ok, err := s.WorkOne(ctx, owner)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if ok {
			continue
		}
		t := time.NewTimer(poll) // a timer, not the clock: how often to look decides nothing
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-s.wakeup():
			t.Stop()
		}
	}
}

// WorkOne claims one durable job as owner and computes it; ok is false
// when no job was due. The job ends done or failed (a refusal the request
// meets now, say the token was revoked meanwhile, fails it); when the
// lease is lost midway the work stops and the job is left to its new owner.
func (s *Service) WorkOne(ctx context.Context, owner string) (ok bool, err error) {
	lease := s.Lease
	if lease <= 0 {
		lease = DefaultLease
	}
	// The lease is renewed as entries finish, and they finish 1/share
	// times further apart.
	lease = s.ForShare(lease)
	j, ok, err := s.Durable.ClaimBundleJob(ctx, owner, s.now(), lease)
	if err != nil || !ok {
		return false, err
	}
	jctx, cancel := context.WithTimeout(ctx, s.jobTimeout())
	defer cancel()
	out, werr := s.runDurable(jctx, cancel, owner, j, lease)
	if ctx.Err() != nil {
		return true, ctx.Err() // stopping: the lease runs out and another worker takes the job
	}
	state, reason := store.JobDone, ""
	if werr != nil {
		if errors.Is(werr, store.ErrConflict) {
			return true, nil // the lease was lost: the job is another worker's now
		}
		state, reason = store.JobFailed, werr.Error()
	}
	err = s.Durable.FinishBundleJob(ctx, j.ID, owner, state, out.Bundle, reason, s.now())
	if errors.Is(err, store.ErrConflict) {
		return true, nil
	}
	return true, err
}

// runDurable opens job j's request, checks it again against the store (the
// PIN was checked when it was admitted) and issues it, renewing the lease
// with each progress report.
func (s *Service) runDurable(ctx context.Context, cancel context.CancelFunc, owner string, j store.BundleJob, lease time.Duration) (Issued, error) {
	plain, err := s.Box.Open(j.Request, []byte(j.ID))
	if err != nil {
		return Issued{}, fmt.Errorf("the job's request does not open with this server's master key: %w", err)
	}
	var sj sealedJob
	err = json.Unmarshal(plain, &sj)
	clear(plain)
	if err != nil {
		return Issued{}, fmt.Errorf("the job's request is malformed: %w", err)
	}
	req, err := s.prepare(ctx, sj.Caller, sj.Request)
	if err != nil {
		return Issued{}, err
	}
	// A job waits for room in the pool's queue (synchronous bundles may
	// hold it) rather than fail; a process that computes nothing fails it.
	release, err := s.enter()
	for errors.Is(err, ErrBusy) && !s.EnqueueOnly {
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return Issued{}, ctx.Err()
		case <-t.C:
		}
		if err := s.Durable.ProgressBundleJob(ctx, j.ID, owner, 0, j.Total, s.now(), lease); err != nil {
			return Issued{}, err // the lease is renewed while waiting; lost, the job is another's
		}
		release, err = s.enter()
	}
	if err != nil {
		return Issued{}, err
	}
	defer release()
	var lost error
	last := s.now()
	out, err := s.issue(ctx, sj.Caller.Actor, req, func(done, total int) {
		if now := s.now(); now.Sub(last) >= lease/4 || done == total {
			last = now
			if perr := s.Durable.ProgressBundleJob(ctx, j.ID, owner, done, total, now, lease); errors.Is(perr, store.ErrConflict) {
				lost = perr
				cancel()
			}
		}
	})
	if lost != nil {
		return Issued{}, lost
	}
	return out, err
}
