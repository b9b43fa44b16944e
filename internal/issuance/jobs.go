package issuance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/store"
)

// MaxJobs bounds the bundle jobs queued or running in one service: each
// holds a token seed (and perhaps a PIN) in memory and waits for a slot.
const MaxJobs = 8

// DefaultJobTimeout bounds a job's work when Service.JobTimeout is 0.
const DefaultJobTimeout = 2 * time.Hour

// jobTimeout is JobTimeout (0: DefaultJobTimeout) over the pool's share:
// a pool that computes a quarter of the time takes four times as long.
func (s *Service) jobTimeout() time.Duration {
	t := s.JobTimeout
	if t <= 0 {
		t = DefaultJobTimeout
	}
	return s.ForShare(t)
}

// jobRetention is how long a finished job is kept for its caller to collect.
const jobRetention = time.Hour

// Job states.
const (
	JobRunning = "running"
	JobDone    = "done"
	JobFailed  = "failed"
)

// Started is a job [Service.Start] queued.
type Started struct {
	ID      string
	Entries int
	// Estimate is how long the work is expected to take once it has a slot.
	Estimate time.Duration
}

// JobStatus is a job's progress: Done of Total entries (Total is 0 until
// the job has a slot); Error says why a failed job failed.
type JobStatus struct {
	State       string
	Done, Total int
	Error       string
}

// Start checks req like [Service.Issue] (without its time limit) and
// issues the bundle in the background; poll [Service.Job] and collect it
// with [Service.JobBundle]. Jobs live in this service's memory, or with
// [Service.Durable] in the store (durable.go), for an hour after they
// finish, and are seen only from the caller's realm.
func (s *Service) Start(ctx context.Context, c Caller, req Request) (Started, error) {
	a, err := s.admit(ctx, c, req, 0, "")
	if err != nil {
		return Started{}, err
	}
	if s.Durable != nil {
		return s.startDurable(ctx, c, req, a)
	}
	release, err := s.enter()
	if err != nil {
		return Started{}, err
	}
	id, ok := s.jobs.start(s, c.Realm, func(ctx context.Context, progress func(int, int)) (Issued, error) {
		defer release()
		return s.issue(ctx, c.Actor, a.req, progress)
	})
	if !ok {
		release()
		return Started{}, refuse(ErrTooManyJobs, "%d bundle jobs are queued or running; wait for one to finish", MaxJobs)
	}
	return Started{ID: id, Entries: a.rep.Entries, Estimate: a.wall}, nil
}

// Job reports the progress of job id of the caller's realm.
func (s *Service) Job(ctx context.Context, c Caller, id string) (JobStatus, error) {
	if s.Durable != nil {
		j, err := s.durableJob(ctx, c, id)
		if err != nil {
			return JobStatus{}, err
		}
		return durableStatus(j), nil
	}
	j, ok := s.jobs.get(s, id, c.Realm)
	if !ok {
		return JobStatus{}, refuse(ErrUnknownJob, "no such job (jobs live in one server's memory for an hour)")
	}
	return j.status(), nil
}

// JobBundle returns the bundle of job id of the caller's realm once it is done.
func (s *Service) JobBundle(ctx context.Context, c Caller, id string) (Issued, error) {
	var st JobStatus
	var dj store.BundleJob
	j, ok := s.jobs.get(s, id, c.Realm)
	switch {
	case s.Durable != nil:
		var err error
		if dj, err = s.durableJob(ctx, c, id); err != nil {
			return Issued{}, err
		}
		st = durableStatus(dj)
	case !ok:
		return Issued{}, refuse(ErrUnknownJob, "no such job")
	default:
		st = j.status()
	}
	switch st.State {
	case JobRunning:
		return Issued{}, refuse(ErrJobRunning, "the bundle is %d of %d entries done", st.Done, st.Total)
	case JobFailed:
		return Issued{}, refuse(ErrJobFailed, "%s", st.Error)
	}
	if s.Durable != nil {
		return Issued{Bundle: dj.Bundle}, nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.out, nil
}

// jobs runs long bundle generations in the background.
type jobs struct {
	mu sync.Mutex
	m  map[string]*job
}

type job struct {
	mu       sync.Mutex
	realm    string
	state    string
	done     int
	total    int
	err      string
	out      Issued
	finished time.Time
}

func (j *job) status() JobStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	return JobStatus{State: j.state, Done: j.done, Total: j.total, Error: j.err}
}

func newJobID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "job_" + hex.EncodeToString(b)
}

// start queues run as a job of realm; it returns false when MaxJobs are unfinished.
func (js *jobs) start(s *Service, realm string, run func(context.Context, func(int, int)) (Issued, error)) (string, bool) {
	id := newJobID()
	j := &job{realm: realm, state: JobRunning}
	js.mu.Lock()
	if js.m == nil {
		js.m = map[string]*job{}
	}
	js.evict(s.now())
	unfinished := 0
	for _, old := range js.m {
		if old.status().State == JobRunning {
			unfinished++
		}
	}
	if unfinished >= MaxJobs {
		js.mu.Unlock()
		return "", false
	}
	js.m[id] = j
	js.mu.Unlock()
	timeout := s.jobTimeout()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, err := run(ctx, func(done, total int) {
			j.mu.Lock()
			j.done, j.total = done, total
			j.mu.Unlock()
		})
		finished := s.now()
		j.mu.Lock()
		defer j.mu.Unlock()
		j.finished = finished
		if err != nil {
			j.state, j.err = JobFailed, err.Error()
			return
		}
		j.state, j.out = JobDone, out
	}()
	return id, true
}

// evict forgets jobs finished more than jobRetention before now; js.mu is held.
func (js *jobs) evict(now time.Time) {
	for k, old := range js.m {
		old.mu.Lock()
		gone := !old.finished.IsZero() && now.Sub(old.finished) > jobRetention
		old.mu.Unlock()
		if gone {
			delete(js.m, k)
		}
	}
}

func (js *jobs) get(s *Service, id, realm string) (*job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.evict(s.now())
	j, ok := js.m[id]
	if !ok || j.realm != realm {
		return nil, false
	}
	return j, true
}
