package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Durable bundle jobs (docs/server.md, "Bundle work"). An interface of
// its own, like OutboxStore: every store Open returns implements it,
//
//	js, ok := st.(store.BundleJobStore)
//
// and internal/issuance, which holds the rules (what a job holds, who may
// see it, how long it is kept), is its one caller. The table is migration
// 0013's.

// The states of a bundle job.
const (
	JobQueued  = "queued"  // waiting for a worker (or its worker's lease ran out)
	JobRunning = "running" // leased to LeaseOwner until LeaseUntil
	JobDone    = "done"    // Bundle holds the signed bundle
	JobFailed  = "failed"  // Error says why
)

// BundleJob is one durable bundle job.
type BundleJob struct {
	ID, Realm, State string
	// Request is the admitted request, sealed by the caller; empty once
	// the job ended.
	Request     []byte
	Done, Total int
	// Attempts counts the claims.
	Attempts             int
	LeaseOwner           string
	LeaseUntil           time.Time
	CreatedAt, UpdatedAt time.Time
	Error                string
	Bundle               []byte
}

// MaxJobRequest bounds a job's sealed request; MaxJobBundle its bundle.
const (
	MaxJobRequest = 64 << 10
	MaxJobBundle  = 16 << 20
)

// BundleJobStore stores durable bundle jobs.
type BundleJobStore interface {
	// CreateBundleJob writes j as queued (ErrExists when its ID is there).
	CreateBundleJob(ctx context.Context, j BundleJob) error
	// ClaimBundleJob leases the oldest job that is queued, or running with
	// its lease run out at now, to owner until now+lease, counting an
	// attempt, and returns it; ok is false when there is none. Several
	// processes on one database never hold one job at once (PostgreSQL:
	// FOR UPDATE SKIP LOCKED; SQLite: one writer).
	ClaimBundleJob(ctx context.Context, owner string, now time.Time, lease time.Duration) (j BundleJob, ok bool, err error)
	// ProgressBundleJob records done of total and renews the lease to
	// now+lease, provided the job is running and leased to owner
	// (ErrConflict otherwise: the lease was lost; ErrNotFound).
	ProgressBundleJob(ctx context.Context, id, owner string, done, total int, now time.Time, lease time.Duration) error
	// FinishBundleJob ends a job leased to owner: JobDone with bundle, or
	// JobFailed with reason; its request is erased and its lease released.
	// ErrConflict when the lease was lost, ErrNotFound.
	FinishBundleJob(ctx context.Context, id, owner, state string, bundle []byte, reason string, now time.Time) error
	// GetBundleJob returns realm's job id (ErrNotFound).
	GetBundleJob(ctx context.Context, realm, id string) (BundleJob, error)
	// CountBundleJobs counts the jobs queued or running.
	CountBundleJobs(ctx context.Context) (int, error)
	// DeleteBundleJobs deletes the jobs ended (done or failed) before
	// cutoff, and returns how many.
	DeleteBundleJobs(ctx context.Context, cutoff time.Time) (int64, error)
}

var _ BundleJobStore = (*sqlStore)(nil)

const bundleJobColumns = `id, realm, state, request, done, total, attempts, lease_owner, lease_until_us, created_us, updated_us, error, bundle`

func scanBundleJob(r row) (BundleJob, error) {
	var j BundleJob
	var done, total, attempts, lease, created, updated int64
	err := r.Scan(&j.ID, &j.Realm, &j.State, &j.Request, &done, &total, &attempts, &j.LeaseOwner, &lease, &created, &updated, &j.Error, &j.Bundle)
	j.Done, j.Total, j.Attempts = int(done), int(total), int(attempts)
	j.LeaseUntil, j.CreatedAt, j.UpdatedAt = fromMicros(lease), fromMicros(created), fromMicros(updated)
	return j, err
}

func (s *sqlStore) CreateBundleJob(ctx context.Context, j BundleJob) error {
	if err := first(checkID("job ID", j.ID), checkID("realm ID", j.Realm)); err != nil {
		return err
	}
	if len(j.Request) == 0 || len(j.Request) > MaxJobRequest {
		return invalid("job request of %d bytes: want 1 to %d", len(j.Request), MaxJobRequest)
	}
	created := s.stamp(j.CreatedAt)
	_, err := s.exec(ctx, `INSERT INTO bundle_jobs (`+bundleJobColumns+`)
		VALUES ($1, $2, $3, $4, 0, $5, 0, '', 0, $6, $6, '', NULL)`, j.ID, j.Realm, JobQueued, j.Request, int64(j.Total), created)
	return classify(s.e, err)
}

func (s *sqlStore) ClaimBundleJob(ctx context.Context, owner string, now time.Time, lease time.Duration) (BundleJob, bool, error) {
	if err := checkID("job owner", owner); err != nil {
		return BundleJob{}, false, err
	}
	if lease <= 0 {
		return BundleJob{}, false, invalid("job lease %v must be positive", lease)
	}
	lock := ""
	if s.e.name() == "postgres" {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	var out []BundleJob
	err := s.e.write(ctx, func(q querier) error {
		rs, err := q.query(ctx, `UPDATE bundle_jobs SET state = 'running', lease_owner = $1, lease_until_us = $2,
				attempts = attempts + 1, updated_us = $3
			WHERE id = (SELECT id FROM bundle_jobs WHERE state IN ('queued', 'running') AND lease_until_us <= $3
				ORDER BY created_us, id LIMIT 1`+lock+`)
			AND state IN ('queued', 'running') AND lease_until_us <= $3
			RETURNING `+bundleJobColumns, owner, micros(now.Add(lease)), micros(now))
		out, err = collect(s, rs, err, scanBundleJob)
		return err
	})
	if err != nil || len(out) == 0 {
		return BundleJob{}, false, classify(s.e, err)
	}
	return out[0], true, nil
}

// leased reports why an update of job id leased to owner changed no row.
func (s *sqlStore) leased(ctx context.Context, id, owner string) error {
	if err := s.e.reader().queryRow(ctx, `SELECT id FROM bundle_jobs WHERE id = $1`, id).Scan(new(string)); err != nil {
		return s.noRows(err, "bundle job %q", id)
	}
	return fmt.Errorf("%w: bundle job %q is no longer leased to %q", ErrConflict, id, owner)
}

func (s *sqlStore) ProgressBundleJob(ctx context.Context, id, owner string, done, total int, now time.Time, lease time.Duration) error {
	n, err := s.exec(ctx, `UPDATE bundle_jobs SET done = $1, total = $2, lease_until_us = $3, updated_us = $4
		WHERE id = $5 AND state = 'running' AND lease_owner = $6`, int64(done), int64(total), micros(now.Add(lease)), micros(now), id, owner)
	if err != nil || n > 0 {
		return classify(s.e, err)
	}
	return s.leased(ctx, id, owner)
}

func (s *sqlStore) FinishBundleJob(ctx context.Context, id, owner, state string, bundle []byte, reason string, now time.Time) error {
	switch {
	case state != JobDone && state != JobFailed:
		return invalid("job end state %q", state)
	case len(bundle) > MaxJobBundle:
		return invalid("job bundle of %d bytes, more than %d", len(bundle), MaxJobBundle)
	}
	reason = strings.ToValidUTF8(strings.ReplaceAll(reason, "\x00", ""), "")
	if len(reason) > MaxOutboxError {
		reason = strings.ToValidUTF8(reason[:MaxOutboxError], "")
	}
	n, err := s.exec(ctx, `UPDATE bundle_jobs SET state = $1, bundle = $2, error = $3, request = $4, lease_owner = '',
			lease_until_us = 0, updated_us = $5
		WHERE id = $6 AND state = 'running' AND lease_owner = $7`, state, nullBytes(bundle), reason, []byte{0}, micros(now), id, owner)
	if err != nil || n > 0 {
		return classify(s.e, err)
	}
	return s.leased(ctx, id, owner)
}

func (s *sqlStore) GetBundleJob(ctx context.Context, realm, id string) (BundleJob, error) {
	j, err := scanBundleJob(s.e.reader().queryRow(ctx, `SELECT `+bundleJobColumns+` FROM bundle_jobs WHERE realm = $1 AND id = $2`, realm, id))
	if err != nil {
		return BundleJob{}, s.noRows(err, "bundle job %q in realm %q", id, realm)
	}
	return j, nil
}

func (s *sqlStore) CountBundleJobs(ctx context.Context) (int, error) {
	var n int64
	err := s.e.reader().queryRow(ctx, `SELECT COUNT(*) FROM bundle_jobs WHERE state IN ('queued', 'running')`).Scan(&n)
	return int(n), classify(s.e, err)
}

func (s *sqlStore) DeleteBundleJobs(ctx context.Context, cutoff time.Time) (int64, error) {
	n, err := s.exec(ctx, `DELETE FROM bundle_jobs WHERE state IN ('done', 'failed') AND updated_us < $1`, micros(cutoff))
	return n, classify(s.e, err)
}
