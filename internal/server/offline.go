package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/pin"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/otp"
)

// Offline bundles (issue: hash lists). Issuing does not touch the token's
// online state: the online counter is not moved past the window (as
// privacyIDEA does), so the token keeps working online; replay between the
// two is closed by sync.

func init() {
	extraRouteFuncs = append(extraRouteFuncs, func(s *Server) []route {
		return []route{
			{method: "POST", pattern: "/v1/offline/bundles", scopes: issuer, handler: s.createBundle},
			{method: "GET", pattern: "/v1/offline/jobs/{id}", scopes: issuer, handler: s.getJob},
			{method: "GET", pattern: "/v1/offline/jobs/{id}/bundle", scopes: issuer, handler: s.getJobBundle},
			{method: "POST", pattern: "/v1/offline/login", scopes: verifier, handler: s.offlineLogin},
		}
	})
}

// syncBundleLimit: bundles estimated to take longer than this are refused
// on the synchronous path; ask for ?async=true (the CLI always does).
const syncBundleLimit = 5 * time.Minute

// maxSecretBytes bounds one static secret.
const maxSecretBytes = 4096

type bundleRequest struct {
	User   string `json:"user"`
	Token  string `json:"token,omitempty"`
	Device string `json:"device"`
	// HOTP event window size (starts after the last counter used online).
	Count int `json:"count,omitempty"`
	// TOTP period.
	From  time.Time `json:"from,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// PIN: required when the user has one; checked against the stored hash.
	PIN     string            `json:"pin,omitempty"`
	Secrets map[string]string `json:"secrets,omitempty"`
	// OverrideFloor issues below the attack-cost floor (admin scope; audited).
	OverrideFloor bool `json:"override_floor,omitempty"`
	// NotAfter shortens the bundle's validity.
	NotAfter time.Time `json:"not_after,omitzero"`
}

// prepareBundle validates a bundle request against the store and returns
// the issuer's request: every check but the PIN's, which the caller makes
// last (online.Service.CheckPIN), so that the answer to a bad request never
// depends on the PIN.
func (s *Server) prepareBundle(ctx context.Context, r *request, in bundleRequest) (bundle.Request, error) {
	var zero bundle.Request
	if err := validID("user", in.User); err != nil {
		return zero, err
	}
	if err := validID("device", in.Device); err != nil {
		return zero, err
	}
	u, err := s.cfg.Store.GetUser(ctx, r.realm(), in.User)
	if errors.Is(err, store.ErrNotFound) {
		return zero, errorf(http.StatusNotFound, "user_not_found", "no user %q", in.User)
	}
	if err != nil {
		return zero, err
	}
	t, err := s.bundleToken(ctx, r, in)
	if err != nil {
		return zero, err
	}
	switch {
	case u.PINHash != nil && in.PIN == "":
		return zero, errorf(http.StatusBadRequest, "pin_required", "user %q has a PIN: a bundle must mix it in, give it as \"pin\"", in.User)
	case u.PINHash == nil && in.PIN != "":
		return zero, errorf(http.StatusBadRequest, "no_pin", "user %q has no PIN; set one first (PUT /v1/users/%s/pin)", in.User, in.User)
	case in.PIN != "" && pin.Validate(in.PIN) != nil:
		return zero, errorf(http.StatusBadRequest, "invalid_pin", "the PIN must be %d to %d digits", pin.MinLen, pin.MaxLen)
	}
	return s.bundleFor(r, in, t)
}

// bundleToken picks the user's active token the request names, or their only one.
func (s *Server) bundleToken(ctx context.Context, r *request, in bundleRequest) (store.Token, error) {
	ts, err := s.cfg.Store.ListTokens(ctx, r.realm(), in.User)
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
		return store.Token{}, errorf(http.StatusNotFound, "token_not_found", "user %q has no active token %q", in.User, in.Token)
	case len(active) == 0:
		return store.Token{}, errorf(http.StatusConflict, "no_active_token", "user %q has no active token: enrol and confirm one first", in.User)
	case len(active) > 1:
		return store.Token{}, errorf(http.StatusBadRequest, "token_required", "user %q has %d active tokens: name one with \"token\"", in.User, len(active))
	}
	return active[0], nil
}

// bundleFor builds the issuer's request for token t and checks it: the
// window, the secrets, the scope an override needs and the cost floor
// (callers check the time it takes, which depends on how they answer). Its
// messages name no token: the login path answers with them.
func (s *Server) bundleFor(r *request, in bundleRequest, t store.Token) (bundle.Request, error) {
	var zero bundle.Request
	p, err := online.Params(t)
	if err != nil {
		return zero, err
	}
	seed, err := s.svc.Seeds.Seed(t)
	if err != nil {
		return zero, err
	}
	secrets, err := bundleSecrets(in.Secrets)
	if err != nil {
		return zero, err
	}
	now := s.cfg.Now()
	req := bundle.Request{Realm: r.realm(), User: in.User, TokenID: t.ID, Params: p, Secret: seed, Device: in.Device,
		PIN: in.PIN, Secrets: secrets, NotAfter: in.NotAfter, Override: in.OverrideFloor, Now: now, Serial: s.nextSerial(now),
		KDF: s.cfg.BundleKDF, Floor: s.cfg.BundleFloor}
	// The window starts after the token's online state (bundle.Request.Used:
	// an HOTP window after the last counter, a TOTP period after the last
	// step), and the bundle carries that state for the device.
	req.Used, req.LastUsed = t.Used && t.LastUsed >= 0, uint64(max(t.LastUsed, 0))
	if req.Acked, req.AckedHash, err = s.deviceHead(r.ctx, r.realm(), in.Device); err != nil {
		return zero, err
	}
	if p.Type == otp.TypeHOTP {
		if !in.From.IsZero() || !in.Until.IsZero() {
			return zero, errorf(http.StatusBadRequest, "invalid_window", "the token is HOTP: give \"count\", not from/until")
		}
		req.Count = in.Count
	} else {
		if in.Count != 0 {
			return zero, errorf(http.StatusBadRequest, "invalid_window", "the token is TOTP: give \"from\" and \"until\", not count")
		}
		req.From, req.Until = in.From, in.Until
	}
	if in.OverrideFloor && !slices.Contains(r.client.Scopes, store.ScopeAdmin) {
		return zero, errorf(http.StatusForbidden, "forbidden", "override_floor needs the admin scope")
	}
	if _, err := bundle.Plan(req); err != nil {
		return zero, bundleError(err)
	}
	return req, nil
}

func bundleSecrets(in map[string]string) (map[string][]byte, error) {
	if len(in) > 16 {
		return nil, errorf(http.StatusBadRequest, "invalid_secrets", "at most 16 static secrets")
	}
	secrets := map[string][]byte{}
	for k, v := range in {
		if len(v) > maxSecretBytes {
			return nil, errorf(http.StatusBadRequest, "invalid_secrets", "secret %q is larger than %d bytes", trunc(k), maxSecretBytes)
		}
		secrets[k] = []byte(v)
	}
	return secrets, nil
}

// wallTime estimates how long req takes to compute on this server.
func (s *Server) wallTime(req bundle.Request) (time.Duration, cost.Report) {
	rep, _ := bundle.Plan(req)
	return time.Duration(rep.IssuerCPU / float64(max(1, s.cores())) * float64(time.Second)), rep
}

// deviceHead returns the newest entry of device's log this server holds
// (0 and nil when the device is not registered in realm, or never synced):
// the device refuses a bundle naming an entry its log does not hold, which
// shows a store restored from an older copy.
func (s *Server) deviceHead(ctx context.Context, realm, device string) (uint64, []byte, error) {
	ss, ok := s.cfg.Store.(store.SyncStore)
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

func bundleError(err error) error {
	switch {
	case errors.Is(err, cost.ErrBelowFloor):
		return errorf(http.StatusUnprocessableEntity, "below_floor", "%s", err.Error())
	case errors.Is(err, bundle.ErrInvalidRequest):
		return errorf(http.StatusBadRequest, "invalid_bundle_request", "%s", err.Error())
	}
	return err
}

// issue runs the KDF work, records what was issued to the device (before
// the bundle leaves the server: sync accepts the device's claims only
// within it) and records it in the audit log. Every bundle is issued here:
// the offline bundles API, PIN bundles of an online login, refills.
func (s *Server) issue(ctx context.Context, actor string, req bundle.Request, progress func(done, total int)) ([]byte, cost.Report, error) {
	s.bundleSlots <- struct{}{} // one bundle computes at a time: it uses every core
	defer func() { <-s.bundleSlots }()
	data, rep, err := bundle.Issue(ctx, req, s.signer, progress)
	if err != nil {
		return nil, rep, bundleError(err)
	}
	if s.field != nil {
		if err := s.field.RecordIssued(ctx, data, req.Device); err != nil {
			return nil, rep, err
		}
	}
	if req.Override {
		if err := s.audit.Record(ctx, audit.FloorOverride, actor, req.User, map[string]any{"token": req.TokenID, "device": req.Device,
			"per_entry_seconds": rep.Reference.PerEntry, "entries": rep.Entries}); err != nil {
			return nil, rep, err
		}
	}
	if err := s.audit.Record(ctx, audit.BundleIssue, actor, req.User, map[string]any{"token": req.TokenID, "device": req.Device,
		"entries": rep.Entries, "pin": req.PIN != "", "per_entry_seconds": rep.Reference.PerEntry}); err != nil {
		return nil, rep, err
	}
	return data, rep, nil
}

func costHeaders(w http.ResponseWriter, rep cost.Report) {
	w.Header().Set("X-Outpost-Entries", strconv.Itoa(rep.Entries))
	w.Header().Set("X-Outpost-Attack-Seconds-Per-Entry", strconv.FormatFloat(rep.Reference.PerEntry, 'f', 0, 64))
}

// rawBody tells wrap the handler already wrote a non-JSON-encoded body.
type rawBody []byte

func (s *Server) createBundle(r *request) (int, any, error) {
	var in bundleRequest
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	req, err := s.prepareBundle(r.ctx, r, in)
	if err != nil {
		return 0, nil, err
	}
	async := r.URL.Query().Get("async") == "true"
	wall, rep := s.wallTime(req)
	if !async && wall > syncBundleLimit {
		return 0, nil, errorf(http.StatusBadRequest, "too_slow_for_sync", "this bundle takes about %s to compute: request it with ?async=true and poll the job", wall.Round(time.Second))
	}
	// Last: the lockout and the PIN, under the user's lock and counted.
	if err := s.svc.CheckPIN(r.ctx, r.realm(), in.User, in.PIN, r.actor()); err != nil {
		return 0, nil, s.pinError(err)
	}
	if async {
		id, ok := s.jobs.start(func(ctx context.Context, progress func(int, int)) ([]byte, cost.Report, error) {
			return s.issue(ctx, r.actor(), req, progress)
		}, r.realm())
		if !ok {
			return 0, nil, &apiError{status: http.StatusTooManyRequests, code: "too_many_jobs", retryAfter: 60,
				message: fmt.Sprintf("%d bundle jobs are queued or running; wait for one to finish", maxJobs)}
		}
		return http.StatusAccepted, map[string]any{"job": id, "entries": rep.Entries, "estimated_seconds": wall.Seconds()}, nil
	}
	_ = http.NewResponseController(r.w).SetWriteDeadline(time.Now().Add(2*wall + time.Minute))
	data, rep, err := s.issue(r.ctx, r.actor(), req, nil)
	if err != nil {
		return 0, nil, err
	}
	costHeaders(r.w, rep)
	return http.StatusOK, rawBody(data), nil
}

// pinError maps CheckPIN's refusals: a wrong PIN (counted), a lockout, a busy server.
func (s *Server) pinError(err error) error {
	if errors.Is(err, online.ErrInvalidCode) {
		return errorf(http.StatusBadRequest, "pin_mismatch", "the PIN given is not the user's PIN (counted as a failed attempt)")
	}
	return s.verifyError(err)
}

func (s *Server) getJob(r *request) (int, any, error) {
	j, ok := s.jobs.get(r.PathValue("id"), r.realm())
	if !ok {
		return 0, nil, errorf(http.StatusNotFound, "job_not_found", "no such job (jobs live in one server's memory for an hour)")
	}
	return http.StatusOK, j.status(), nil
}

func (s *Server) getJobBundle(r *request) (int, any, error) {
	j, ok := s.jobs.get(r.PathValue("id"), r.realm())
	if !ok {
		return 0, nil, errorf(http.StatusNotFound, "job_not_found", "no such job")
	}
	st := j.status()
	switch st.State {
	case "running":
		return 0, nil, errorf(http.StatusConflict, "job_running", "the bundle is %d of %d entries done", st.Done, st.Total)
	case "failed":
		return 0, nil, errorf(http.StatusConflict, "job_failed", "%s", st.Error)
	}
	costHeaders(r.w, j.report)
	return http.StatusOK, rawBody(j.data), nil
}

// offlineLogin is OneSpan's and privacyIDEA's pattern: a successful online
// PIN + OTP login hands the device a bundle with the PIN mixed in. The PIN is
// in the server's memory only for this request.
//
// Until both factors check out, the answers are Verify's: an unknown user,
// a user without an active token or without a PIN, a wrong code and a wrong
// PIN all answer invalid_code, naming nothing, and each is counted like a
// failed verification. Only then is the bundle request itself checked
// (online.Service.Login), before the code is spent.
func (s *Server) offlineLogin(r *request) (int, any, error) {
	var in struct {
		bundleRequest
		Code string `json:"code"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	if in.OverrideFloor {
		return 0, nil, errorf(http.StatusForbidden, "forbidden", "a login bundle cannot override the floor")
	}
	if err := checkCredentialForm(in.User, in.Code, in.PIN); err != nil {
		return 0, nil, err
	}
	if err := validID("device", in.Device); err != nil {
		return 0, nil, err
	}
	var req bundle.Request
	res, err := s.svc.Login(r.ctx, r.realm(), in.User, in.Code, in.PIN, r.actor(), func(t store.Token) error {
		var err error
		req, err = s.loginBundle(r, in.bundleRequest, t)
		return err
	})
	if err != nil {
		return 0, nil, s.verifyError(err)
	}
	s.metrics.verify.WithLabelValues("ok").Inc()
	if res.TokenID == req.TokenID && (!req.Used || res.Matched > req.LastUsed) {
		// The login code is now used online: the bundle starts after it.
		req.Used, req.LastUsed = true, res.Matched
	}
	_ = http.NewResponseController(r.w).SetWriteDeadline(time.Now().Add(syncBundleLimit + time.Minute))
	data, rep, err := s.issue(r.ctx, r.actor(), req, nil)
	if err != nil {
		return 0, nil, err
	}
	costHeaders(r.w, rep)
	return http.StatusOK, rawBody(data), nil
}

// loginBundle is the login's bundle request for the token the code
// matched: by default TOTP for the next 2 hours, HOTP the next 20 counters.
func (s *Server) loginBundle(r *request, in bundleRequest, t store.Token) (bundle.Request, error) {
	if in.Token != "" && in.Token != t.ID {
		return bundle.Request{}, errorf(http.StatusBadRequest, "token_mismatch", "the code is not of the token the request names")
	}
	if in.Count == 0 && in.From.IsZero() && in.Until.IsZero() {
		if t.Type == "hotp" {
			in.Count = 20
		} else {
			now := s.cfg.Now()
			in.From, in.Until = now, now.Add(2*time.Hour)
		}
	}
	req, err := s.bundleFor(r, in, t)
	if err != nil {
		return req, err
	}
	if wall, _ := s.wallTime(req); wall > syncBundleLimit {
		return req, errorf(http.StatusBadRequest, "too_slow_for_sync", "a login bundle must compute within %s: ask for a shorter window", syncBundleLimit)
	}
	return req, nil
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
	data     []byte
	report   cost.Report
	finished time.Time
}

type jobStatus struct {
	State string `json:"state"` // running, done, failed
	Done  int    `json:"done"`
	Total int    `json:"total"`
	Error string `json:"error,omitempty"`
}

func (j *job) status() jobStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	return jobStatus{State: j.state, Done: j.done, Total: j.total, Error: j.err}
}

// maxJobs bounds the bundle jobs queued or running in one server: each holds
// a token seed (and perhaps a PIN) in memory and waits for the one bundle slot.
const maxJobs = 8

// start queues run as a job; it returns false when maxJobs are unfinished.
func (js *jobs) start(run func(context.Context, func(int, int)) ([]byte, cost.Report, error), realm string) (string, bool) {
	id := "job_" + newRequestID()
	j := &job{realm: realm, state: "running"}
	js.mu.Lock()
	if js.m == nil {
		js.m = map[string]*job{}
	}
	js.evict()
	unfinished := 0
	for _, old := range js.m {
		old.mu.Lock()
		if old.state == "running" {
			unfinished++
		}
		old.mu.Unlock()
	}
	if unfinished >= maxJobs {
		js.mu.Unlock()
		return "", false
	}
	js.m[id] = j
	js.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
		defer cancel()
		data, rep, err := run(ctx, func(done, total int) {
			j.mu.Lock()
			j.done, j.total = done, total
			j.mu.Unlock()
		})
		j.mu.Lock()
		defer j.mu.Unlock()
		j.finished = time.Now()
		if err != nil {
			j.state, j.err = "failed", err.Error()
			return
		}
		j.state, j.data, j.report = "done", data, rep
	}()
	return id, true
}

// evict forgets jobs finished more than an hour ago; js.mu is held.
func (js *jobs) evict() {
	for k, old := range js.m {
		old.mu.Lock()
		done := !old.finished.IsZero() && time.Since(old.finished) > time.Hour
		old.mu.Unlock()
		if done {
			delete(js.m, k)
		}
	}
}

func (js *jobs) get(id, realm string) (*job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.evict()
	j, ok := js.m[id]
	if !ok || j.realm != realm {
		return nil, false
	}
	return j, true
}

func (s *Server) cores() int { return cap(s.bundleWorkers) }
