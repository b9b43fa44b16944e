package server

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/issuance"
	"github.com/outpost-auth/outpost/internal/store"
)

// Offline bundles (docs/offline.md): POST /v1/offline/bundles, its jobs,
// and POST /v1/offline/login. The rules are in internal/issuance; this
// file maps HTTP to them.

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

func (in bundleRequest) request() issuance.Request {
	return issuance.Request{User: in.User, Token: in.Token, Device: in.Device, Count: in.Count, From: in.From, Until: in.Until,
		PIN: in.PIN, Secrets: in.Secrets, OverrideFloor: in.OverrideFloor, NotAfter: in.NotAfter}
}

// caller is who asks the issuance service.
func (r *request) caller() issuance.Caller {
	return issuance.Caller{Realm: r.realm(), Actor: r.actor(), Admin: slices.Contains(r.client.Scopes, store.ScopeAdmin)}
}

// issueAnswers are the issuance service's refusals' statuses and codes.
var issueAnswers = []answer{
	{issuance.ErrUnknownUser, http.StatusNotFound, "user_not_found"},
	{issuance.ErrUnknownToken, http.StatusNotFound, "token_not_found"},
	{issuance.ErrNoActiveToken, http.StatusConflict, "no_active_token"},
	{issuance.ErrTokenRequired, http.StatusBadRequest, "token_required"},
	{issuance.ErrTokenMismatch, http.StatusBadRequest, "token_mismatch"},
	{issuance.ErrPINRequired, http.StatusBadRequest, "pin_required"},
	{issuance.ErrNoPIN, http.StatusBadRequest, "no_pin"},
	{issuance.ErrInvalidPIN, http.StatusBadRequest, "invalid_pin"},
	{issuance.ErrPINMismatch, http.StatusBadRequest, "pin_mismatch"},
	{issuance.ErrInvalidWindow, http.StatusBadRequest, "invalid_window"},
	{issuance.ErrInvalidSecrets, http.StatusBadRequest, "invalid_secrets"},
	{issuance.ErrNotAllowed, http.StatusForbidden, "forbidden"},
	{issuance.ErrTooSlow, http.StatusBadRequest, "too_slow_for_sync"},
	{issuance.ErrUnknownJob, http.StatusNotFound, "job_not_found"},
	{issuance.ErrJobRunning, http.StatusConflict, "job_running"},
	{issuance.ErrJobFailed, http.StatusConflict, "job_failed"},
	{cost.ErrBelowFloor, http.StatusUnprocessableEntity, "below_floor"},
	{bundle.ErrInvalidRequest, http.StatusBadRequest, "invalid_bundle_request"},
}

// issueError maps the issuance service's refusals to statuses and stable
// codes; the online service's (the lockout, the login) go to verifyError.
func (s *Server) issueError(err error) error {
	if errors.Is(err, issuance.ErrTooManyJobs) {
		return &apiError{status: http.StatusTooManyRequests, code: "too_many_jobs", retryAfter: 60, message: err.Error()}
	}
	if errors.Is(err, issuance.ErrBusy) {
		return &apiError{status: http.StatusServiceUnavailable, code: "busy", retryAfter: 30, message: err.Error()}
	}
	if e := answerFor(err, issueAnswers); e != nil {
		return e
	}
	return s.verifyError(err)
}

func costHeaders(w http.ResponseWriter, rep cost.Report) {
	w.Header().Set("X-Outpost-Entries", strconv.Itoa(rep.Entries))
	w.Header().Set("X-Outpost-Attack-Seconds-Per-Entry", strconv.FormatFloat(rep.Reference.PerEntry, 'f', 0, 64))
}

// rawBody tells wrap the handler already wrote a non-JSON-encoded body.
type rawBody []byte

// decodeBundle reads a bundle request and checks its identifiers.
func (r *request) decodeBundle(in *bundleRequest) error {
	if err := r.decode(in); err != nil {
		return err
	}
	if err := validID("user", in.User); err != nil {
		return err
	}
	return validID("device", in.Device)
}

// createBundle issues a bundle, or with ?async=true starts a job.
func (s *Server) createBundle(r *request) (int, any, error) {
	var in bundleRequest
	if err := r.decodeBundle(&in); err != nil {
		return 0, nil, err
	}
	if r.URL.Query().Get("async") == "true" {
		job, err := s.bundles.Start(r.ctx, r.caller(), in.request())
		if err != nil {
			return 0, nil, s.issueError(err)
		}
		return http.StatusAccepted, map[string]any{"job": job.ID, "entries": job.Entries, "estimated_seconds": job.Estimate.Seconds()}, nil
	}
	out, err := s.bundles.Issue(r.ctx, r.caller(), in.request(), func(wall time.Duration) {
		_ = http.NewResponseController(r.w).SetWriteDeadline(time.Now().Add(2*wall + time.Minute))
	})
	if err != nil {
		return 0, nil, s.issueError(err)
	}
	costHeaders(r.w, out.Report)
	return http.StatusOK, rawBody(out.Bundle), nil
}

type jobJSON struct {
	State string `json:"state"` // running, done, failed
	Done  int    `json:"done"`
	Total int    `json:"total"`
	Error string `json:"error,omitempty"`
}

func (s *Server) getJob(r *request) (int, any, error) {
	st, err := s.bundles.Job(r.ctx, r.caller(), r.PathValue("id"))
	if err != nil {
		return 0, nil, s.issueError(err)
	}
	return http.StatusOK, jobJSON{State: st.State, Done: st.Done, Total: st.Total, Error: st.Error}, nil
}

func (s *Server) getJobBundle(r *request) (int, any, error) {
	out, err := s.bundles.JobBundle(r.ctx, r.caller(), r.PathValue("id"))
	if err != nil {
		return 0, nil, s.issueError(err)
	}
	costHeaders(r.w, out.Report)
	return http.StatusOK, rawBody(out.Bundle), nil
}

// offlineLogin is an online PIN + OTP login that returns a PIN bundle for
// the device (issuance.Service.Login). Until both factors check out, the
// answers are /v1/verify's.
func (s *Server) offlineLogin(r *request) (int, any, error) {
	var in struct {
		bundleRequest
		Code string `json:"code"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	if err := checkCredentialForm(in.User, in.Code, in.PIN); err != nil {
		return 0, nil, err
	}
	if err := validID("device", in.Device); err != nil {
		return 0, nil, err
	}
	out, err := s.bundles.Login(r.ctx, r.caller(), issuance.LoginRequest{Request: in.request(), Code: in.Code}, func(time.Duration) {
		_ = http.NewResponseController(r.w).SetWriteDeadline(time.Now().Add(issuance.SyncLimit + time.Minute))
	})
	if out.Verified.TokenID != "" {
		s.metrics.verify.WithLabelValues("ok").Inc()
	}
	if err != nil {
		return 0, nil, s.issueError(err)
	}
	costHeaders(r.w, out.Report)
	return http.StatusOK, rawBody(out.Bundle), nil
}
