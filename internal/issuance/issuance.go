// Package issuance issues offline bundles: the server's one way to hand a
// field device a hash list, whoever asks. The HTTP API (POST
// /v1/offline/bundles, /v1/offline/login, the bundle jobs) and the sync
// service's refills all call it; none of them restates a rule.
//
//	svc := &issuance.Service{Store: st, Online: on, Audit: al, Signer: signer, Record: field}
//	out, err := svc.Issue(ctx, issuance.Caller{Realm: "default", Actor: "api:cli_1"},
//		issuance.Request{User: "alice", Device: "van-7", Count: 50}, nil)
//	// out.Bundle is the signed bundle file; out.Report its attack-cost report
//
// The calls:
//
//   - [Service.Issue] issues a bundle and waits for it; [Service.Start]
//     runs the same bundle as a job in the background ([Service.Job] reports
//     its progress, [Service.JobBundle] hands it out once done). Issue
//     refuses a bundle estimated to take longer than [SyncLimit].
//   - [Service.Login] is OneSpan's and privacyIDEA's pattern: an online
//     PIN + OTP login (online.Service.Login) that returns a bundle with the
//     PIN mixed in, the one moment the server holds the PIN in clear.
//   - [Service.Refill] issues the refill the sync service decided a device
//     earned (it is fieldsync.Service's Refill).
//
// The rules, each written once here:
//
//   - Order. The request is checked first (user, token, the PIN rule, the
//     window, the secrets, who may override the floor, the floor itself,
//     the time it takes), then the lockout and the PIN, under the user's lock
//     and counted (online.Service.CheckPIN): an answer to a bad request never
//     depends on the PIN. A wrong PIN answers [ErrPINMismatch] and counts
//     as a failed attempt; a locked user gets no bundle (online.LockedError).
//   - PIN. A user with a PIN gets bundles with it mixed in only; a user
//     without one gets none that names a PIN. The sync service cannot
//     refill a PIN bundle: the server never holds the PIN.
//   - Window. A bundle starts after the token's online state (an HOTP window
//     after the last counter used, a TOTP period after the last step used),
//     and issuing never moves that state: the token keeps working online.
//     A login bundle starts after the login's own code.
//   - Floor. Package bundle refuses a bundle below the attack-cost floor
//     ([Service.Floor]); only a caller with the admin scope may override it
//     ([Caller.Admin]), and each override is written to the audit log
//     (offline.floor_override). A login bundle never overrides it.
//   - Records. Every bundle is recorded as issued to its device
//     ([Service.Record], fieldsync.Service.RecordIssued) before it leaves
//     the service: sync accepts the device's claims only within it. Every
//     bundle is written to the audit log (offline.bundle_issue).
//   - Work. With a [Service.Pool] (internal/workpool), every bundle, job
//     and refill computes through it: at most its Workers argon2id
//     evaluations and its memory budget at once, at most its Queue bundles
//     admitted, beyond which a request is refused with [ErrBusy]. Without
//     one, one bundle computes at a time ([Service.Slots]) on every core. At
//     most [MaxJobs] jobs are queued or running.
//
// Refusals wrap one of the sentinel errors below (callers branch with
// errors.Is, and show Error(), which says what to do next); the bundle
// package's bundle.ErrInvalidRequest and cost.ErrBelowFloor and the online
// service's errors (online.LockedError, online.ErrBusy, and for Login
// online.ErrInvalidCode and the rest of Verify's answers) come through
// wrapped. Secrets — seeds, PINs, static secrets, codes — are never put in
// an error.
package issuance

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/pin"
	"github.com/outpost-auth/outpost/internal/secretbox"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/outpost-auth/outpost/otp"
)

// SyncLimit: a bundle estimated to take longer than this is refused by
// [Service.Issue] and [Service.Login] (start it as a job with
// [Service.Start]); a refill may not take longer either.
const SyncLimit = 5 * time.Minute

// MaxSecretBytes bounds one static secret: the bundle format's bound.
const MaxSecretBytes = bundlefmt.MaxSecretLen

// Refusals. Each error the service returns for a request it will not serve
// wraps one of these.
var (
	ErrUnknownUser   = errors.New("issuance: no such user")
	ErrUnknownToken  = errors.New("issuance: no such active token")
	ErrNoActiveToken = errors.New("issuance: the user has no active token")
	ErrTokenRequired = errors.New("issuance: the user has several active tokens")
	ErrTokenMismatch = errors.New("issuance: the code is not of the token named")
	ErrPINRequired   = errors.New("issuance: the user has a PIN")
	ErrNoPIN         = errors.New("issuance: the user has no PIN")
	ErrInvalidPIN    = errors.New("issuance: malformed PIN")
	// ErrPINMismatch: the PIN is not the user's; counted as a failed attempt.
	ErrPINMismatch    = errors.New("issuance: wrong PIN")
	ErrInvalidWindow  = errors.New("issuance: window does not fit the token type")
	ErrInvalidSecrets = errors.New("issuance: invalid static secrets")
	// ErrNotAllowed: the caller may not ask for this (an override without
	// the admin scope, or any override at a login).
	ErrNotAllowed = errors.New("issuance: not allowed")
	// ErrTooSlow: the bundle would take longer than the path allows.
	ErrTooSlow     = errors.New("issuance: bundle too slow to compute here")
	ErrTooManyJobs = errors.New("issuance: too many bundle jobs")
	// ErrBusy: the bundle pool's queue is full (workpool.ErrBusy); retry later.
	ErrBusy       = errors.New("issuance: bundle work queue full")
	ErrUnknownJob = errors.New("issuance: no such job")
	ErrJobRunning = errors.New("issuance: job still running")
	ErrJobFailed  = errors.New("issuance: job failed")
)

// refusal is a sentinel with the message for the person asking.
type refusal struct {
	kind error
	msg  string
}

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return e.kind }

func refuse(kind error, format string, a ...any) error {
	return &refusal{kind: kind, msg: fmt.Sprintf(format, a...)}
}

// Recorder records a bundle as issued to device before it leaves the
// service (fieldsync.Service.RecordIssued).
type Recorder interface {
	RecordIssued(ctx context.Context, data []byte, device string) error
}

// Service issues bundles. Set the exported fields before the first call.
type Service struct {
	Store store.Store
	// Online holds the lockout, the PIN check and the login, and its Seeds
	// give the token seeds.
	Online *online.Service
	Audit  *audit.Log
	Signer *keys.Signer
	// Record records each bundle as issued to its device; nil when the
	// store cannot sync (then nothing is recorded).
	Record Recorder
	// KDF is the argon2id cost of the entries (zero: cost.Default); Floor
	// the attack-cost floor (nil: cost.DefaultFloor).
	KDF   cost.KDF
	Floor *cost.Floor
	Now   func() time.Time
	// Cores is the core count the time estimates assume (0: runtime.NumCPU()).
	Cores int
	// Slots serialises bundle work: a bundle holds a slot while it computes
	// (nil: one slot of the service's own). Services that use every core
	// may share one channel.
	Slots chan struct{}
	// Pool, when set, bounds the bundle work of this service (and of every
	// service sharing it): cores, memory and queue; Slots is then unused.
	Pool *workpool.Pool
	// Durable, when set, keeps jobs in the store (durable.go): any process
	// running Work on the database computes them, every replica reports
	// them. Box seals their requests (JobBox); Lease is a claim's lease
	// (0: DefaultLease).
	Durable store.BundleJobStore
	Box     *secretbox.Box
	Lease   time.Duration
	// EnqueueOnly: this process computes no bundle (`outpost serve
	// --bundle-workers 0`, beside an `outpost worker`): Start enqueues
	// durable jobs; Issue, Login and Refill are refused with ErrBusy.
	EnqueueOnly bool
	// JobTimeout bounds a job's work (0: DefaultJobTimeout), divided by
	// the Pool's share of its workers' time when below 1; a job past it is
	// cancelled and reports failed.
	JobTimeout time.Duration

	once       sync.Once
	jobs       jobs
	wakeOnce   sync.Once
	wake       chan struct{}
	lastSerial atomic.Uint64
}

func (s *Service) now() time.Time { return clock.Or(s.Now)() }

func (s *Service) slots() chan struct{} {
	s.once.Do(func() {
		if s.Slots == nil {
			s.Slots = make(chan struct{}, 1)
		}
	})
	return s.Slots
}

// Caller is who asks: the realm they act in, their name in the audit log,
// and whether they hold the admin scope (only an admin may override the floor).
type Caller struct {
	Realm, Actor string
	Admin        bool
}

// Request is one bundle: one user's token for one device, over an HOTP
// event window (Count) or a TOTP period (From, Until).
type Request struct {
	User string
	// Token names the user's active token; empty picks their only one.
	Token  string
	Device string
	// Count is the HOTP window's size; it starts after the last counter used online.
	Count int
	// From and Until are the TOTP period.
	From, Until time.Time
	// PIN is required when the user has one, and checked against it.
	PIN string
	// Secrets are static secrets released by a right code (at most
	// bundlefmt.MaxSecrets, each at most MaxSecretBytes).
	Secrets map[string]string
	// OverrideFloor issues below the attack-cost floor (admin only; audited).
	OverrideFloor bool
	// NotAfter shortens the bundle's validity.
	NotAfter time.Time
}

// Issued is an issued bundle.
type Issued struct {
	// Bundle is the signed bundle file (what `outpost field import` reads).
	Bundle []byte
	Report cost.Report
}

// Issue checks req (see the package comment for the order) and issues its
// bundle. onStart, when set, is called with the time the work is estimated
// to take once every check passed, before it starts (the HTTP layer
// extends its write deadline by it).
func (s *Service) Issue(ctx context.Context, c Caller, req Request, onStart func(estimate time.Duration)) (Issued, error) {
	a, err := s.admit(ctx, c, req, SyncLimit, "this bundle takes about %s to compute: request it with ?async=true and poll the job")
	if err != nil {
		return Issued{}, err
	}
	release, err := s.enter()
	if err != nil {
		return Issued{}, err
	}
	defer release()
	if onStart != nil {
		onStart(a.wall)
	}
	return s.issue(ctx, c.Actor, a.req, nil)
}

// admitted is a request that passed every check, with its estimate.
type admitted struct {
	req  bundle.Request
	wall time.Duration
	rep  cost.Report
}

// admit is every check of a bundle request, in the order all paths share:
// the request, the time it takes (when the path has a limit: tooSlow is
// the refusal, given the estimate), then the lockout and the PIN, last
// and counted.
func (s *Service) admit(ctx context.Context, c Caller, in Request, limit time.Duration, tooSlow string) (admitted, error) {
	req, err := s.prepare(ctx, c, in)
	if err != nil {
		return admitted{}, err
	}
	a := admitted{req: req}
	a.wall, a.rep = s.estimate(req)
	if limit > 0 && a.wall > limit {
		return admitted{}, refuse(ErrTooSlow, tooSlow, a.wall.Round(time.Second))
	}
	if err := s.Online.CheckPIN(ctx, c.Realm, in.User, in.PIN, c.Actor); err != nil {
		if errors.Is(err, online.ErrInvalidCode) {
			return admitted{}, refuse(ErrPINMismatch, "the PIN given is not the user's PIN (counted as a failed attempt)")
		}
		return admitted{}, err
	}
	return a, nil
}

// prepare checks a request against the store and returns the issuer's
// request: every check but the time and the PIN's.
func (s *Service) prepare(ctx context.Context, c Caller, in Request) (bundle.Request, error) {
	var zero bundle.Request
	u, err := s.Store.GetUser(ctx, c.Realm, in.User)
	if errors.Is(err, store.ErrNotFound) {
		return zero, refuse(ErrUnknownUser, "no user %q", in.User)
	}
	if err != nil {
		return zero, err
	}
	t, err := s.token(ctx, c.Realm, in)
	if err != nil {
		return zero, err
	}
	switch {
	case u.PINHash != nil && in.PIN == "":
		return zero, refuse(ErrPINRequired, "user %q has a PIN: a bundle must mix it in, give it as \"pin\"", in.User)
	case u.PINHash == nil && in.PIN != "":
		return zero, refuse(ErrNoPIN, "user %q has no PIN; set one first (PUT /v1/users/%s/pin)", in.User, in.User)
	case in.PIN != "" && pin.Validate(in.PIN) != nil:
		return zero, refuse(ErrInvalidPIN, "the PIN must be %d to %d digits", pin.MinLen, pin.MaxLen)
	}
	return s.plan(ctx, c, in, t)
}

// token picks the user's active token the request names, or their only one.
func (s *Service) token(ctx context.Context, realm string, in Request) (store.Token, error) {
	ts, err := s.Store.ListTokens(ctx, realm, in.User)
	if err != nil {
		return store.Token{}, err
	}
	var active []store.Token
	for _, t := range ts {
		if t.Status == store.TokenActive && (in.Token == "" || t.ID == in.Token) {
			active = append(active, t)
		}
	}
	switch {
	case len(active) == 0 && in.Token != "":
		return store.Token{}, refuse(ErrUnknownToken, "user %q has no active token %q", in.User, in.Token)
	case len(active) == 0:
		return store.Token{}, refuse(ErrNoActiveToken, "user %q has no active token: enrol and confirm one first", in.User)
	case len(active) > 1:
		return store.Token{}, refuse(ErrTokenRequired, "user %q has %d active tokens: name one with \"token\"", in.User, len(active))
	}
	return active[0], nil
}

// plan builds the issuer's request for token t and checks it: the window,
// the secrets, who may override and the floor (callers check the time it
// takes, whose limit depends on the path). Its messages name no token: the
// login path answers with them.
func (s *Service) plan(ctx context.Context, c Caller, in Request, t store.Token) (bundle.Request, error) {
	var zero bundle.Request
	p, err := online.Params(t)
	if err != nil {
		return zero, err
	}
	seed, err := s.Online.Seeds.Seed(t)
	if err != nil {
		return zero, err
	}
	secrets, err := bundleSecrets(in.Secrets)
	if err != nil {
		return zero, err
	}
	now := s.now()
	req := bundle.Request{Realm: c.Realm, User: in.User, TokenID: t.ID, Params: p, Secret: seed, Device: in.Device,
		PIN: in.PIN, Secrets: secrets, NotAfter: in.NotAfter, Override: in.OverrideFloor, Now: now, Serial: s.nextSerial(now),
		KDF: s.KDF, Floor: s.Floor}
	// The window starts after the token's online state (bundle.Request.Used:
	// an HOTP window after the last counter, a TOTP period after the last
	// step), and the bundle carries that state for the device.
	req.Used, req.LastUsed = t.Used && t.LastUsed >= 0, uint64(max(t.LastUsed, 0))
	if req.Acked, req.AckedHash, err = s.deviceHead(ctx, c.Realm, in.Device); err != nil {
		return zero, err
	}
	if p.Type == otp.TypeHOTP {
		if !in.From.IsZero() || !in.Until.IsZero() {
			return zero, refuse(ErrInvalidWindow, "the token is HOTP: give \"count\", not from/until")
		}
		req.Count = in.Count
	} else {
		if in.Count != 0 {
			return zero, refuse(ErrInvalidWindow, "the token is TOTP: give \"from\" and \"until\", not count")
		}
		req.From, req.Until = in.From, in.Until
	}
	if in.OverrideFloor && !c.Admin {
		return zero, refuse(ErrNotAllowed, "override_floor needs the admin scope")
	}
	if _, err := bundle.Plan(req); err != nil {
		return zero, err
	}
	return req, nil
}

func bundleSecrets(in map[string]string) (map[string][]byte, error) {
	if len(in) > bundlefmt.MaxSecrets {
		return nil, refuse(ErrInvalidSecrets, "at most %d static secrets", bundlefmt.MaxSecrets)
	}
	secrets := map[string][]byte{}
	for k, v := range in {
		if len(v) > MaxSecretBytes {
			return nil, refuse(ErrInvalidSecrets, "secret %q is larger than %d bytes", ident.Clip(k), MaxSecretBytes)
		}
		secrets[k] = []byte(v)
	}
	return secrets, nil
}

// estimate is how long req takes to compute on this server, and its
// report: its CPU time over the pool's workers, over their share of the
// time (SyncLimit, the answer's deadline and a job's estimated_seconds all
// follow it).
func (s *Service) estimate(req bundle.Request) (time.Duration, cost.Report) {
	rep, _ := bundle.Plan(req)
	cores := s.Cores
	if s.Pool != nil {
		cores = s.Pool.Workers()
	}
	if cores <= 0 {
		cores = runtime.NumCPU()
	}
	return s.ForShare(time.Duration(rep.IssuerCPU / float64(cores) * float64(time.Second))), rep
}

// ForShare scales d, a duration of bundle work at a worker's whole time,
// to the pool's share of it (workpool.Config.Share): a pool computing a
// quarter of the time takes four times as long. Estimates, job timeouts,
// job leases and sync refills' timeouts all go through it.
func (s *Service) ForShare(d time.Duration) time.Duration {
	if s.Pool == nil || s.Pool.Share() >= 1 {
		return d
	}
	return time.Duration(float64(d) / s.Pool.Share())
}

// deviceHead returns the newest entry of device's log this server holds
// (0 and nil when the device is not registered in realm, or never synced):
// the device refuses a bundle naming an entry its log does not hold, which
// shows a store restored from an older copy.
func (s *Service) deviceHead(ctx context.Context, realm, device string) (uint64, []byte, error) {
	ss, ok := s.Store.(store.SyncStore)
	if !ok {
		return 0, nil, nil
	}
	d, err := ss.GetDevice(ctx, device)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return 0, nil, nil
	case err != nil:
		return 0, nil, err
	case d.Realm != realm || d.AckedSeq == 0:
		return 0, nil, nil
	}
	return d.AckedSeq, d.AckedHash, nil
}

// nextSerial returns a bundle serial: the issue time in Unix microseconds,
// or one more than the last serial this service gave when the clock has
// not moved past it, so that a later bundle of a token always replaces an
// earlier one on the device.
func (s *Service) nextSerial(now time.Time) uint64 {
	for {
		last := s.lastSerial.Load()
		next := max(uint64(now.UnixMicro()), last+1)
		if s.lastSerial.CompareAndSwap(last, next) {
			return next
		}
	}
}

// enter admits one bundle to the pool's queue (release when it is done);
// without a pool every bundle is admitted.
func (s *Service) enter() (release func(), err error) {
	if s.EnqueueOnly {
		return nil, refuse(ErrBusy, "this server computes no bundles (--bundle-workers 0): request it with ?async=true, a bundle worker computes it")
	}
	if s.Pool == nil {
		return func() {}, nil
	}
	release, err = s.Pool.Admit()
	if err != nil {
		return nil, refuse(ErrBusy, "%d bundles are queued or computing on this server: retry later, or start a job (?async=true) then", s.Pool.Stats().Queued)
	}
	return release, nil
}

// issue runs the KDF work, records what was issued to the device (before
// the bundle leaves the service: sync accepts the device's claims only
// within it) and records it in the audit log. Every bundle is issued here.
func (s *Service) issue(ctx context.Context, actor string, req bundle.Request, progress func(done, total int)) (Issued, error) {
	if s.Pool != nil {
		// Each bundle feeds every worker; the pool bounds them all together.
		req.Workers, req.Run = s.Pool.Workers(), s.Pool.Do
	} else {
		slots := s.slots()
		select {
		case slots <- struct{}{}: // one bundle computes at a time: it uses every core
		case <-ctx.Done():
			return Issued{}, ctx.Err()
		}
		defer func() { <-slots }()
		req.Workers = s.Cores
	}
	data, rep, err := bundle.Issue(ctx, req, s.Signer, progress)
	if err != nil {
		return Issued{}, err
	}
	if s.Record != nil {
		if err := s.Record.RecordIssued(ctx, data, req.Device); err != nil {
			return Issued{}, err
		}
	}
	if req.Override {
		if err := s.Audit.Record(ctx, audit.FloorOverride, actor, req.User, map[string]any{"token": req.TokenID, "device": req.Device,
			"per_entry_seconds": rep.Reference.PerEntry, "entries": rep.Entries}); err != nil {
			return Issued{}, err
		}
	}
	if err := s.Audit.Record(ctx, audit.BundleIssue, actor, req.User, map[string]any{"token": req.TokenID, "device": req.Device,
		"entries": rep.Entries, "pin": req.PIN != "", "per_entry_seconds": rep.Reference.PerEntry}); err != nil {
		return Issued{}, err
	}
	return Issued{Bundle: data, Report: rep}, nil
}
