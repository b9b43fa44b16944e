package fieldsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/otp"
)

// Refill (privacyIDEA's "refill", done safely). A token is due for a refill
// when, by the server's own count, fewer than RefillBelow of the entries of
// the bundle the device stands on remain: HOTP counters after the highest
// one used anywhere, TOTP steps after the current one. Everything is judged
// from the server's records, never from the device's word:
//
//   - the bundle is the one the server recorded issuing to this device
//     (store.IssuedBundle) and the device's log showed importing, checked
//     against that record; its type, range, PIN and secrets are the
//     record's;
//   - proof of use: the server accepted, from this device's signed log, a
//     code of that very bundle inside its issued range. A bare OTP, a
//     forged import or a counter outside the range never earns a bundle;
//   - the refill is bound to the device key (the upload that asks for it is
//     signed by it, and the bundle is bound to the device id).
//
// What cannot be refilled, and why (the answer says so, per token):
//   - a PIN bundle: the server holds the PIN only as an argon2id hash and
//     cannot mix it into new entries; the user runs 'outpost field login'
//     (online PIN + OTP), which returns a PIN bundle;
//   - a bundle with static secrets: the server does not keep their values;
//     the issuer issues a new bundle;
//   - a wiped token, or a token no longer active;
//   - a token refilled MaxRefillsPerDay times for the device in the last
//     24 hours (an incident: refill_rate).
//
// One refill is started per sync (each costs seconds of KDF work). It runs
// in the background: the sync answer waits for the refills it started up to
// RefillWait in all (one deadline for the whole answer, however many are
// due: well under the HTTP server's write timeout) and otherwise says
// "pending"; the device collects it at a later sync (the bundle is kept in
// device_refills, so any replica hands it out). A refill an earlier sync
// started is handed out if it is done and answered "pending" otherwise,
// without waiting: the device was told when to come back for it. A refill
// issued but not imported (the answer was lost) is sent again, not issued
// twice.

// maxRefillsPerSync bounds the refills started in one sync.
const maxRefillsPerSync = 1

// MaxRefillsPerDay bounds the refills of one token issued to one device in
// 24 hours (by the service's clock), counted from the stored refills
// (device_refills): proof of use is the device's signed word, so a device
// holder who forges uses, or burns through entries, would otherwise draw a
// fresh bundle (more codes to attack offline) at every sync. Beyond it the
// device is told "no refill" and the attempt is an incident (refill_rate).
// Four a day is a bundle used up every six hours; the user can always
// authenticate online, and an issuer can issue a bundle by hand.
const MaxRefillsPerDay = 4

// IncidentRefillRate: a refill refused because the token was refilled
// MaxRefillsPerDay times for the device in the last 24 hours.
const IncidentRefillRate = "refill_rate"

// DefaultRefillWait is how long a sync answer waits for a refill being computed.
const DefaultRefillWait = 10 * time.Second

// maxRefillJobs bounds the refills computing (or failed, until reported) at once.
const maxRefillJobs = 64

// DefaultRefillTimeout bounds one refill's background work when
// Service.RefillTimeout is 0.
const DefaultRefillTimeout = 30 * time.Minute

// refillKey names a refill: the token on the device and the bundle it replaces.
type refillKey struct {
	syncproto.TokenKey
	device string
	from   uint64
}

// id is the pending refill's id, the same on every replica.
func (k refillKey) id() string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s\x00%d", k.Realm, k.device, k.User, k.Token, k.from))
	return "refill_" + hex.EncodeToString(h[:8])
}

// refillJob is a refill computing in the background.
type refillJob struct {
	done     chan struct{}
	data     []byte
	err      error
	finished time.Time
}

// refillJobs are the refills of one Service computing in the background.
type refillJobs struct {
	mu sync.Mutex
	m  map[refillKey]*refillJob
	wg sync.WaitGroup
}

// WaitRefills waits for the refills computing in the background (tests,
// and a server shutting down).
func (s *Service) WaitRefills() { s.jobs.wg.Wait() }

// refillRun is one sync's refill decisions.
type refillRun struct {
	s       *Service
	out     *outcome
	now     time.Time
	started int
	// wait is how long the answer may wait for refills, in all; deadline
	// ends when it has passed since the first wait began (nil before).
	wait     time.Duration
	deadline context.Context
	cancel   context.CancelFunc
}

func (s *Service) refill(ctx context.Context, out *outcome, u *syncproto.Upload, now time.Time) {
	if s.Refill == nil {
		return
	}
	r := &refillRun{s: s, out: out, now: now, wait: s.RefillWait}
	if r.wait <= 0 {
		r.wait = DefaultRefillWait
	}
	defer func() {
		if r.cancel != nil {
			r.cancel()
		}
	}()
	for i := range u.Tokens {
		r.token(ctx, &u.Tokens[i])
	}
}

// waitUntil returns the answer's one deadline for refills, starting it at
// the first call: every refill this sync waits for shares it.
func (r *refillRun) waitUntil() <-chan struct{} {
	if r.deadline == nil {
		// A timer, not the service's clock: how long a connection is held
		// decides nothing.
		r.deadline, r.cancel = context.WithTimeout(context.Background(), r.wait)
	}
	return r.deadline.Done()
}

func (r *refillRun) no(k syncproto.TokenKey, format string, a ...any) {
	reason := fmt.Sprintf(format, a...)
	if len(reason) > syncproto.MaxReason {
		reason = reason[:syncproto.MaxReason-3] + "..."
	}
	r.out.resp.NoRefill = append(r.out.resp.NoRefill, syncproto.NoRefill{TokenKey: k, Reason: reason})
}

// token decides the refill of one token the device reports holding.
func (r *refillRun) token(ctx context.Context, st *syncproto.TokenState) {
	k := st.Key()
	t, ok := r.out.tokens[k]
	dt, b := r.out.dts[k], r.out.current[k]
	if st.Type == "" || !ok || dt == nil || b == nil || t.Status != store.TokenActive || !r.s.due(t, b, r.now) {
		return
	}
	switch {
	case st.Wiped || dt.Wiped:
		r.no(k, "wiped: the user must authenticate online ('outpost field login') to get a new bundle")
	case st.Serial != b.Serial || dt.UsedSerial != b.Serial:
		r.no(k, "no proof of use: the server has not accepted from this device's log a code of bundle serial %d inside its issued range", b.Serial)
	case b.PIN:
		r.no(k, "pin: the server cannot refill a PIN bundle (it never holds the PIN): run 'outpost field login' with the user's PIN and code")
	case b.Secrets > 0:
		r.no(k, "secrets: the bundle carries static secrets the server does not keep: ask the issuer for a new bundle")
	default:
		r.give(ctx, k, RefillNeed{Device: r.out.device, Token: t, Type: b.Type, FromSerial: b.Serial, First: b.First, Last: b.Last})
	}
}

// due reports whether, by the server's count, fewer than RefillBelow of
// issued bundle b's entries remain.
func (s *Service) due(t store.Token, b *store.IssuedBundle, now time.Time) bool {
	p, err := online.Params(t)
	if err != nil {
		return false
	}
	below := s.RefillBelow
	if below <= 0 {
		below = DefaultRefillBelow
	}
	from := b.First // first entry still usable
	if p.Type == otp.TypeTOTP {
		from = p.Step(now)
	} else {
		from = max(from, otp.NextCounter(t.Used && t.LastUsed >= 0, uint64(t.LastUsed)))
	}
	remaining := uint64(0)
	if from <= b.Last {
		remaining = b.Last - from + 1
	}
	return remaining == 0 || float64(remaining) < below*float64(b.Last-b.First+1)
}

// give answers a due refill: the stored one, a finished or pending job's,
// or a new job.
func (r *refillRun) give(ctx context.Context, k syncproto.TokenKey, need RefillNeed) {
	s := r.s
	if len(r.out.resp.Refills) >= syncproto.MaxRefills {
		r.no(k, "this answer carries as many refills as it may: sync again for this one")
		return
	}
	if got, err := s.Sync.GetRefill(ctx, k.Realm, need.Device.ID, k.User, k.Token, need.FromSerial); err == nil {
		r.out.resp.Refills = append(r.out.resp.Refills, syncproto.Refill{TokenKey: k, Bundle: got.Bundle})
		return
	} else if !errors.Is(err, store.ErrNotFound) {
		r.no(k, "refill lookup failed: sync again later")
		return
	}
	key := refillKey{TokenKey: k, device: need.Device.ID, from: need.FromSerial}
	if !r.running(key) {
		refused, err := r.rateLimited(ctx, k, need)
		if err != nil {
			r.no(k, "refill lookup failed: sync again later")
			return
		}
		if refused {
			return
		}
	}
	j, started, err := r.job(ctx, key, need)
	if err != nil {
		r.no(k, "%v", err)
		return
	}
	r.collect(k, key, j, started)
}

// running reports whether a job for key exists (computing, or failed and not yet reported).
func (r *refillRun) running(key refillKey) bool {
	r.s.jobs.mu.Lock()
	defer r.s.jobs.mu.Unlock()
	_, ok := r.s.jobs.m[key]
	return ok
}

// rateLimited refuses a new refill of k when MaxRefillsPerDay were issued
// to the device in the last 24 hours: the answer says so, and the incident
// is recorded (once an hour per device and bundle) and changes nothing.
func (r *refillRun) rateLimited(ctx context.Context, k syncproto.TokenKey, need RefillNeed) (bool, error) {
	since := r.now.Add(-24 * time.Hour)
	n, err := r.s.Sync.CountRefills(ctx, k.Realm, need.Device.ID, k.User, k.Token, since)
	if err != nil || n < MaxRefillsPerDay {
		return false, err
	}
	reason := fmt.Errorf("%s: token %s was refilled %d times for this device since %s (at most %d a day): the user can authenticate online, or ask the issuer for a bundle",
		IncidentRefillRate, k, n, since.UTC().Format(time.RFC3339), MaxRefillsPerDay)
	r.no(k, "%v", reason)
	// Refused whether or not the record is written (the metric counts it
	// either way); the answer is already committed to, and says why.
	_ = r.s.incident(ctx, need.Device, IncidentRefillRate, need.FromSerial, reason,
		map[string]any{"user": k.User, "token": k.Token, "refills": n, "limit": MaxRefillsPerDay})
	return true, nil
}

// job returns the refill's job, starting one if none runs; started reports
// that this sync started it.
func (r *refillRun) job(ctx context.Context, key refillKey, need RefillNeed) (*refillJob, bool, error) {
	s := r.s
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	if j, ok := s.jobs.m[key]; ok {
		return j, false, nil
	}
	if r.started >= maxRefillsPerSync {
		return nil, false, errors.New("another refill was started in this sync: sync again for this one")
	}
	s.evictRefills()
	if len(s.jobs.m) >= maxRefillJobs {
		return nil, false, errors.New("the server is computing too many refills: sync again later")
	}
	if s.jobs.m == nil {
		s.jobs.m = map[refillKey]*refillJob{}
	}
	j := &refillJob{done: make(chan struct{})}
	s.jobs.m[key] = j
	r.started++
	s.jobs.wg.Add(1)
	go s.runRefill(context.WithoutCancel(ctx), key, need, j)
	return j, true, nil
}

// runRefill computes a refill in the background and stores it, so that
// any later sync (on any replica) hands it out.
func (s *Service) runRefill(ctx context.Context, key refillKey, need RefillNeed, j *refillJob) {
	defer s.jobs.wg.Done()
	timeout := s.RefillTimeout
	if timeout <= 0 {
		timeout = DefaultRefillTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	data, err := s.issueRefill(ctx, key, need)
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	j.data, j.err, j.finished = data, err, s.now()
	if err == nil {
		delete(s.jobs.m, key) // stored: later syncs find it in the store
	}
	close(j.done)
}

func (s *Service) issueRefill(ctx context.Context, key refillKey, need RefillNeed) ([]byte, error) {
	data, err := s.Refill(ctx, need)
	if err != nil {
		return nil, fmt.Errorf("refill refused: %w", err)
	}
	h, _, err := artifact.Verify(data, artifact.Keys{s.Signer.Public}, artifact.Expect{Subject: need.Device.ID})
	if err != nil {
		return nil, fmt.Errorf("refill failed: %w", err)
	}
	rf := store.Refill{Realm: key.Realm, Device: key.device, UserID: key.User, TokenID: key.Token, FromSerial: key.from,
		Serial: h.Serial, Bundle: data, IssuedAt: s.now()}
	err = s.Sync.PutRefill(ctx, rf)
	if errors.Is(err, store.ErrExists) {
		// Another replica refilled it first: hand out that one.
		got, gerr := s.Sync.GetRefill(ctx, key.Realm, key.device, key.User, key.Token, key.from)
		return got.Bundle, gerr
	}
	if err != nil {
		return nil, errors.New("refill could not be stored: sync again later")
	}
	return data, nil
}

// collect answers with the job's bundle, its failure, or "pending". A job
// this sync started is waited for until the answer's one deadline
// (RefillWait from the first wait); one an earlier sync started is not
// waited for.
func (r *refillRun) collect(k syncproto.TokenKey, key refillKey, j *refillJob, started bool) {
	var expired <-chan struct{}
	if started {
		expired = r.waitUntil()
	} else {
		closed := make(chan struct{})
		close(closed)
		expired = closed
	}
	select {
	case <-j.done:
	default:
		select {
		case <-j.done:
		case <-expired:
			// Sync again after RefillWait: cheap (an upload with nothing
			// new changes nothing), and the work left is unknown here.
			retry := max(1, int(r.wait/time.Second))
			r.out.resp.Pending = append(r.out.resp.Pending, syncproto.PendingRefill{TokenKey: k, ID: key.id(), RetryAfter: retry})
			return
		}
	}
	if j.err != nil {
		r.s.jobs.mu.Lock()
		if r.s.jobs.m[key] == j {
			delete(r.s.jobs.m, key) // reported: the next sync may try again
		}
		r.s.jobs.mu.Unlock()
		r.no(k, "%v", j.err)
		return
	}
	r.out.resp.Refills = append(r.out.resp.Refills, syncproto.Refill{TokenKey: k, Bundle: j.data})
}

// evictRefills forgets failed refills nobody collected within an hour; jobs.mu is held.
func (s *Service) evictRefills() {
	now := s.now()
	for k, j := range s.jobs.m {
		if !j.finished.IsZero() && now.Sub(j.finished) > time.Hour {
			delete(s.jobs.m, k)
		}
	}
}
