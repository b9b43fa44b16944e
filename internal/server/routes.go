package server

import (
	_ "embed"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/pin"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/otp"
)

//go:embed openapi.json
var openAPIDoc []byte

var (
	admin     = []string{store.ScopeAdmin}
	issuer    = []string{store.ScopeIssuer}
	verifier  = []string{store.ScopeVerifier}
	anyScoped = []string{store.ScopeIssuer, store.ScopeVerifier}
)

// routeTable is every route the server serves, in one place: the mux, the
// OpenAPI test and the docs all read it. Each handler parses, authorises
// (the scopes here), calls one service method and answers.
func (s *Server) routeTable() []route {
	sy, si := s.sync, s.sites
	rs := []route{
		// Health, metrics and public documents: no authentication.
		{method: "GET", pattern: "/healthz", raw: func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}},
		{method: "GET", pattern: "/readyz", raw: func(w http.ResponseWriter, r *http.Request) {
			if err := s.cfg.Store.Ping(r.Context()); err != nil {
				writeError(w, errUnavailable())
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "engine": s.cfg.Store.Engine()})
		}},
		{method: "GET", pattern: "/metrics", raw: s.metricsHandler()},
		{method: "GET", pattern: "/v1/openapi.json", raw: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(openAPIDoc)
		}},
		{method: "GET", pattern: "/v1/keys/signing", raw: func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"kid": s.signer.KeyID, "public_key_pem": string(keys.MarshalPublicPEM(s.signer.Public))})
		}},

		// Users, PINs and tokens (internal/online): this file.
		{method: "POST", pattern: "/v1/users", scopes: issuer, handler: s.createUser},
		{method: "GET", pattern: "/v1/users", scopes: issuer, handler: s.listUsers},
		{method: "GET", pattern: "/v1/users/{id}", scopes: issuer, handler: s.getUser},
		{method: "DELETE", pattern: "/v1/users/{id}", scopes: issuer, handler: s.deleteUser},
		{method: "PUT", pattern: "/v1/users/{id}/pin", scopes: issuer, handler: s.setPIN},
		{method: "DELETE", pattern: "/v1/users/{id}/lockout", scopes: admin, handler: s.resetLockout},
		{method: "POST", pattern: "/v1/users/{id}/tokens", scopes: issuer, handler: s.createToken},
		{method: "GET", pattern: "/v1/users/{id}/tokens", scopes: issuer, handler: s.listTokens},
		{method: "DELETE", pattern: "/v1/users/{id}/tokens/{tid}", scopes: issuer, handler: s.deleteToken},
		{method: "POST", pattern: "/v1/users/{id}/tokens/{tid}/confirm", scopes: issuer, handler: s.confirmToken},
		{method: "POST", pattern: "/v1/users/{id}/tokens/{tid}/resync", scopes: issuer, handler: s.resyncToken},

		// Online verification (internal/online): this file.
		{method: "POST", pattern: "/v1/verify", scopes: verifier, handler: s.verify},

		// API clients: clients.go.
		{method: "POST", pattern: "/v1/api-clients", scopes: admin, handler: s.createAPIClient},
		{method: "GET", pattern: "/v1/api-clients", scopes: admin, handler: s.listAPIClients},
		{method: "DELETE", pattern: "/v1/api-clients/{id}", scopes: admin, handler: s.disableAPIClient},

		// Offline bundles (internal/issuance): offline.go.
		{method: "POST", pattern: "/v1/offline/bundles", scopes: issuer, handler: s.createBundle},
		{method: "GET", pattern: "/v1/offline/jobs/{id}", scopes: issuer, handler: s.getJob},
		{method: "GET", pattern: "/v1/offline/jobs/{id}/bundle", scopes: issuer, handler: s.getJobBundle},
		{method: "POST", pattern: "/v1/offline/login", scopes: verifier, handler: s.offlineLogin},

		// Field-device sync and the device registry (internal/fieldsync): sync.go.
		{method: "POST", pattern: "/v1/sync", handler: sy.sync},
		{method: "POST", pattern: "/v1/sync/import", scopes: admin, handler: sy.importSync},
		{method: "POST", pattern: "/v1/devices", scopes: admin, handler: sy.register},
		{method: "GET", pattern: "/v1/devices", scopes: admin, handler: sy.list},
		{method: "GET", pattern: "/v1/devices/{id}", scopes: admin, handler: sy.get},
		{method: "POST", pattern: "/v1/devices/{id}/enrolment", scopes: admin, handler: sy.enrolmentCode},
		{method: "POST", pattern: "/v1/devices/{id}/revoke", scopes: admin, handler: sy.revoke},
		{method: "POST", pattern: "/v1/devices/enrol", handler: sy.enrol},

		// Site verifiers and subject-key export (internal/siteissue, internal/keyexport): sites.go.
		{method: "GET", pattern: "/v1/sites/scopes/{scope}", scopes: admin, handler: si.getScope},
		{method: "PUT", pattern: "/v1/sites/scopes/{scope}", scopes: admin, handler: si.setPolicy},
		{method: "POST", pattern: "/v1/sites/scopes/{scope}/provision", scopes: admin, handler: si.provision},
		{method: "POST", pattern: "/v1/sites/scopes/{scope}/credential", scopes: admin, handler: si.credential},
		{method: "POST", pattern: "/v1/sites/scopes/{scope}/revoke", scopes: admin, handler: si.revoke},
		{method: "POST", pattern: "/v1/sites/scopes/{scope}/roll", scopes: admin, handler: si.roll},
		{method: "POST", pattern: "/v1/keys/subject-export", scopes: admin, handler: si.exportSubject},

		// The audit log and its checkpoints (internal/audit, internal/auditcheck):
		// clients.go, audit_checkpoint.go.
		{method: "GET", pattern: "/v1/audit", scopes: admin, handler: s.listAudit},
		{method: "GET", pattern: "/v1/audit/verify", scopes: admin, handler: s.verifyAudit},
		{method: "POST", pattern: "/v1/audit/checkpoints", scopes: admin, handler: s.createCheckpoint},
		{method: "GET", pattern: "/v1/audit/checkpoint", scopes: admin, handler: s.latestCheckpoint},

		// Deliveries (internal/delivery): deliveries.go. Last, so that the
		// fuzz corpus's route indices of the groups above stay as they were.
		{method: "POST", pattern: "/v1/deliveries", scopes: issuer, handler: s.createDelivery},
		{method: "GET", pattern: "/v1/deliveries", scopes: issuer, handler: s.listDeliveries},
		{method: "GET", pattern: "/v1/deliveries/{id}", scopes: issuer, handler: s.getDelivery},
		{method: "POST", pattern: "/v1/deliveries/{id}/cancel", scopes: issuer, handler: s.cancelDelivery},
		{method: "POST", pattern: "/v1/deliveries/{id}/reassign", scopes: issuer, handler: s.reassignDelivery},

		// Audit retention (internal/auditcheck.Archive): audit_segments.go.
		// After deliveries, for the fuzz corpus's route indices.
		{method: "POST", pattern: "/v1/audit/export", scopes: admin, handler: s.exportAudit},
		{method: "POST", pattern: "/v1/audit/prune", scopes: admin, handler: s.pruneAudit},
		{method: "GET", pattern: "/v1/audit/segments/{name}", scopes: admin, handler: s.getSegment},
		// The outbox's dead letters and the shipper webhook (internal/outbox): outbox.go.
		{method: "GET", pattern: "/v1/outbox", scopes: admin, handler: s.listOutbox},
		{method: "POST", pattern: "/v1/outbox/{id}/resend", scopes: admin, handler: s.resendOutbox},
		{method: "PUT", pattern: "/v1/webhook", scopes: admin, handler: s.setWebhook},
		{method: "GET", pattern: "/v1/webhook", scopes: admin, handler: s.getWebhook},
		// The device roster (internal/roster): roster.go. After deliveries,
		// for the same reason.
		{method: "GET", pattern: "/v1/roster", scopes: admin, handler: s.listRoster},
		{method: "POST", pattern: "/v1/roster/expected", scopes: admin, handler: s.expectSerials},
		{method: "POST", pattern: "/v1/roster/vouchers", scopes: admin, handler: s.allowVoucher},
		{method: "GET", pattern: "/v1/roster/{serial}", scopes: admin, handler: s.getRoster},
		{method: "POST", pattern: "/v1/roster/{serial}/withdraw", scopes: admin, handler: s.withdrawVouch},
		{method: "POST", pattern: "/v1/roster/{serial}/approve", scopes: admin, handler: s.approveVouch},
		{method: "POST", pattern: "/v1/roster/{serial}/reject", scopes: admin, handler: s.rejectVouch},
		// Proof of delivery (internal/delivery courier.go): courier.go.
		{method: "GET", pattern: "/v1/deliveries/{id}/proof", scopes: issuer, handler: s.deliveryProof},

		// Delivery confirms and keys (internal/delivery): deliveries.go.
		// After the audit routes, for the fuzz corpus's route indices.
		{method: "POST", pattern: "/v1/deliveries/{id}/confirm", scopes: issuer, handler: s.confirmDelivery},
		{method: "POST", pattern: "/v1/deliveries/{id}/device-confirm", handler: s.deviceConfirmDelivery},
		{method: "GET", pattern: "/v1/keys/deliveries", scopes: issuer, handler: s.deliveryKeys},
	}
	// Device onboarding (internal/enrol): onboarding.go. Some are served on
	// the device listener only (route.on).
	rs = append(rs, s.onboardingRoutes()...)
	return rs
}

// validID answers 400 invalid_<kind> for an id outside the HTTP API's rule
// (ident.CheckAPI: URL-, log- and label-safe).
func validID(kind, id string) error {
	if err := ident.CheckAPI(kind, id); err != nil {
		return errorf(http.StatusBadRequest, "invalid_"+kind, "%v", err)
	}
	return nil
}

type userJSON struct {
	ID          string    `json:"id"`
	DisplayName string    `json:"display_name"`
	HasPIN      bool      `json:"has_pin"`
	Failures    int       `json:"failures"`
	Locked      bool      `json:"locked"`
	CreatedAt   time.Time `json:"created_at"`
}

func (s *Server) userJSON(u store.User) userJSON {
	_, locked := s.cfg.Policy.Locked(u.Failures, u.LastFailure, s.cfg.Now())
	return userJSON{ID: u.ID, DisplayName: u.DisplayName, HasPIN: u.PINHash != nil, Failures: u.Failures, Locked: locked, CreatedAt: u.CreatedAt.UTC()}
}

func (s *Server) createUser(r *request) (int, any, error) {
	var in struct {
		ID          string `json:"id"`
		DisplayName string `json:"display_name"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	if err := validID("user", in.ID); err != nil {
		return 0, nil, err
	}
	u, err := s.svc.CreateUser(r.ctx, r.realm(), in.ID, in.DisplayName, r.actor())
	switch {
	case errors.Is(err, online.ErrDisplayName):
		return 0, nil, errorf(http.StatusBadRequest, "invalid_display_name", "display_name must be at most %d bytes", online.MaxDisplayName)
	case errors.Is(err, store.ErrExists):
		return 0, nil, errorf(http.StatusConflict, "exists", "user %q already exists", in.ID)
	case err != nil:
		return 0, nil, err
	}
	return http.StatusCreated, s.userJSON(u), nil
}

func (s *Server) pathUser(r *request) (string, error) {
	id := r.PathValue("id")
	return id, validID("user", id)
}

func (s *Server) getUser(r *request) (int, any, error) {
	id, err := s.pathUser(r)
	if err != nil {
		return 0, nil, err
	}
	u, err := s.svc.User(r.ctx, r.realm(), id)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil, errorf(http.StatusNotFound, "user_not_found", "no user %q", id)
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.userJSON(u), nil
}

func (s *Server) listUsers(r *request) (int, any, error) {
	after, limit, err := r.page("user")
	if err != nil {
		return 0, nil, err
	}
	us, err := s.svc.Users(r.ctx, r.realm(), after, limit)
	if err != nil {
		return 0, nil, err
	}
	out := struct {
		Users []userJSON `json:"users"`
		Next  string     `json:"next,omitempty"`
	}{Users: []userJSON{}}
	for _, u := range us {
		out.Users = append(out.Users, s.userJSON(u))
	}
	if len(us) == limit {
		out.Next = us[len(us)-1].ID
	}
	return http.StatusOK, out, nil
}

func (s *Server) deleteUser(r *request) (int, any, error) {
	id, err := s.pathUser(r)
	if err != nil {
		return 0, nil, err
	}
	err = s.svc.DeleteUser(r.ctx, r.realm(), id, r.actor())
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil, errorf(http.StatusNotFound, "user_not_found", "no user %q", id)
	}
	return http.StatusNoContent, nil, err
}

func (s *Server) setPIN(r *request) (int, any, error) {
	id, err := s.pathUser(r)
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		PIN string `json:"pin"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	switch err := s.svc.SetPIN(r.ctx, r.realm(), id, in.PIN, r.actor()); {
	case errors.Is(err, pin.ErrInvalid):
		return 0, nil, errorf(http.StatusBadRequest, "invalid_pin", "the PIN must be %d to %d digits", pin.MinLen, pin.MaxLen)
	case errors.Is(err, store.ErrNotFound):
		return 0, nil, errorf(http.StatusNotFound, "user_not_found", "no user %q", id)
	case err != nil:
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) resetLockout(r *request) (int, any, error) {
	id, err := s.pathUser(r)
	if err != nil {
		return 0, nil, err
	}
	switch err := s.svc.ResetLockout(r.ctx, r.realm(), id, r.actor()); {
	case errors.Is(err, store.ErrNotFound):
		return 0, nil, errorf(http.StatusNotFound, "user_not_found", "no user %q", id)
	case err != nil:
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

type tokenJSON struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Algorithm  string    `json:"algorithm"`
	Digits     int       `json:"digits"`
	Period     int       `json:"period,omitempty"`
	Status     string    `json:"status"`
	SeedMode   string    `json:"seed"`
	CreatedAt  time.Time `json:"created_at"`
	OTPAuthURI string    `json:"otpauth_uri,omitempty"`
	QRPNG      string    `json:"qr_png,omitempty"`
}

func toTokenJSON(t store.Token) tokenJSON {
	return tokenJSON{ID: t.ID, Type: t.Type, Algorithm: t.Algorithm, Digits: t.Digits, Period: t.Period,
		Status: t.Status, SeedMode: t.SeedMode, CreatedAt: t.CreatedAt.UTC()}
}

func (s *Server) createToken(r *request) (int, any, error) {
	id, err := s.pathUser(r)
	if err != nil {
		return 0, nil, err
	}
	in := struct {
		Type      string `json:"type"`
		Algorithm string `json:"algorithm"`
		Digits    int    `json:"digits"`
		Period    uint64 `json:"period"`
		Seed      string `json:"seed"`
	}{Type: "totp", Algorithm: "SHA1", Digits: 6}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	var p otp.Params
	if p.Type, err = otp.ParseType(in.Type); err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_type", "type must be totp or hotp")
	}
	if p.Algorithm, err = otp.ParseAlgorithm(in.Algorithm); err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_algorithm", "algorithm must be SHA1, SHA256 or SHA512")
	}
	p.Digits = in.Digits
	if p.Type == otp.TypeTOTP {
		p.Period = in.Period
		if p.Period == 0 {
			p.Period = 30
		}
	} else if in.Period != 0 {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_period", "period is only for totp tokens")
	}
	if err := p.Validate(); err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_token_params", "%s", trimPrefix(err.Error()))
	}
	if in.Seed != "" && in.Seed != store.SeedDerived && in.Seed != store.SeedRandom {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_seed", "seed must be derived or random")
	}
	t, seed, err := s.svc.Enrol(r.ctx, r.realm(), id, p, in.Seed, r.actor())
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil, errorf(http.StatusNotFound, "user_not_found", "no user %q", id)
	}
	if err != nil {
		return 0, nil, err
	}
	k := otp.Key{Params: p, Secret: seed, Issuer: s.cfg.Issuer, Account: id}
	out := toTokenJSON(t)
	out.OTPAuthURI = k.URI()
	png, err := qr.PNG(out.OTPAuthURI, 256)
	if err != nil {
		return 0, nil, err
	}
	out.QRPNG = base64.StdEncoding.EncodeToString(png)
	return http.StatusCreated, out, nil
}

func trimPrefix(s string) string {
	const p = "otp: invalid token parameters: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

func (s *Server) listTokens(r *request) (int, any, error) {
	id, err := s.pathUser(r)
	if err != nil {
		return 0, nil, err
	}
	ts, err := s.svc.Tokens(r.ctx, r.realm(), id)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil, errorf(http.StatusNotFound, "user_not_found", "no user %q", id)
	}
	if err != nil {
		return 0, nil, err
	}
	out := []tokenJSON{}
	for _, t := range ts {
		out = append(out, toTokenJSON(t))
	}
	return http.StatusOK, map[string]any{"tokens": out}, nil
}

func (s *Server) pathToken(r *request) (string, string, error) {
	id, err := s.pathUser(r)
	if err != nil {
		return "", "", err
	}
	tid := r.PathValue("tid")
	if err := validID("token", tid); err != nil {
		return "", "", err
	}
	return id, tid, nil
}

func tokenNotFound(err error, user, tid string) error {
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "token_not_found", "user %q has no token %q", user, tid)
	}
	return err
}

func (s *Server) deleteToken(r *request) (int, any, error) {
	id, tid, err := s.pathToken(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, tokenNotFound(s.svc.DeleteToken(r.ctx, r.realm(), id, tid, r.actor()), id, tid)
}

func (s *Server) confirmToken(r *request) (int, any, error) {
	id, tid, err := s.pathToken(r)
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		Code string `json:"code"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	res, err := s.svc.Confirm(r.ctx, r.realm(), id, tid, in.Code, r.actor())
	if err != nil {
		if errors.Is(err, online.ErrNotPending) {
			return 0, nil, errorf(http.StatusConflict, "not_pending", "token %q is already confirmed or disabled", tid)
		}
		return 0, nil, s.verifyError(tokenNotFound(err, id, tid))
	}
	return http.StatusOK, map[string]any{"ok": true, "token": res.TokenID, "status": store.TokenActive}, nil
}

func (s *Server) resyncToken(r *request) (int, any, error) {
	id, tid, err := s.pathToken(r)
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		Code1 string `json:"code1"`
		Code2 string `json:"code2"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	res, err := s.svc.Resync(r.ctx, r.realm(), id, tid, in.Code1, in.Code2, r.actor())
	if err != nil {
		return 0, nil, s.verifyError(tokenNotFound(err, id, tid))
	}
	return http.StatusOK, map[string]any{"ok": true, "token": res.TokenID, "counter": res.Matched}, nil
}

// verifyError maps the online service's errors to responses: one place, so
// /v1/verify, confirm and resync answer alike.
func (s *Server) verifyError(err error) error {
	var le *online.LockedError
	switch {
	case errors.As(err, &le):
		s.metrics.verify.WithLabelValues("locked").Inc()
		e := errorf(http.StatusTooManyRequests, "locked", "%s", le.Error())
		if !le.Hard {
			e.retryAfter = max(1, int((le.RetryAfter+time.Second-1)/time.Second))
		}
		return e
	case errors.Is(err, online.ErrReplayed):
		s.metrics.verify.WithLabelValues("replayed").Inc()
		return errorf(http.StatusUnauthorized, "replayed", "this code was already used; wait for the next one")
	case errors.Is(err, online.ErrInvalidCode):
		s.metrics.verify.WithLabelValues("invalid_code").Inc()
		return errorf(http.StatusUnauthorized, "invalid_code", "the code is not valid")
	case errors.Is(err, online.ErrBusy):
		s.metrics.verify.WithLabelValues("busy").Inc()
		return &apiError{status: http.StatusServiceUnavailable, code: "busy", retryAfter: 1,
			message: "too many PIN checks are running on this server; retry in a second"}
	case errors.Is(err, online.ErrMalformedCode):
		s.metrics.verify.WithLabelValues("malformed_code").Inc()
		return errorf(http.StatusBadRequest, "malformed_code", "the code must be the digits the authenticator shows (6 to 10 digits)")
	case errors.Is(err, store.ErrUnavailable):
		s.metrics.verify.WithLabelValues("unavailable").Inc() // toAPIError answers and logs it
	}
	return err
}

type verifyRequest struct {
	User string `json:"user"`
	Code string `json:"code"`
	PIN  string `json:"pin,omitempty"`
}

func (r *request) decodeVerify() (verifyRequest, error) {
	var in verifyRequest
	if err := r.decode(&in); err != nil {
		return in, err
	}
	return in, checkCredentialForm(in.User, in.Code, in.PIN)
}

// checkCredentialForm checks a verification's user id and the lengths of
// its code and PIN, before anything is looked up.
func checkCredentialForm(user, code, p string) error {
	if err := validID("user", user); err != nil {
		return err
	}
	if len(code) > otp.MaxDigits || len(p) > pin.MaxLen {
		return errorf(http.StatusBadRequest, "malformed_code", "the code must be 6 to 10 digits and the PIN at most %d digits", pin.MaxLen)
	}
	return nil
}

func (s *Server) verify(r *request) (int, any, error) {
	in, err := r.decodeVerify()
	if err != nil {
		return 0, nil, err
	}
	res, err := s.svc.Verify(r.ctx, r.realm(), in.User, in.Code, in.PIN, r.actor())
	if err != nil {
		return 0, nil, s.verifyError(err)
	}
	s.metrics.verify.WithLabelValues("ok").Inc()
	return http.StatusOK, map[string]any{"ok": true, "token": res.TokenID}, nil
}
