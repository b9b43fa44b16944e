package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/apitoken"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/enrol"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/store"
)

// apiError is an error with an HTTP status and a stable machine-readable code.
type apiError struct {
	status     int
	code       string
	message    string
	retryAfter int // seconds, for 429
	extra      map[string]any
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, format string, a ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, a...)}
}

// answer is the status and stable code a service's sentinel error gets.
type answer struct {
	err    error
	status int
	code   string
}

// answerFor returns err as the answer of the first entry of answers it
// wraps, with the service's message; nil when it wraps none of them.
func answerFor(err error, answers []answer) *apiError {
	for _, a := range answers {
		if errors.Is(err, a.err) {
			return errorf(a.status, a.code, "%s", err.Error())
		}
	}
	return nil
}

// route is one entry of the API: the table the mux, the OpenAPI test and the
// docs all read.
type route struct {
	method, pattern string
	// scopes lists who may call it; empty means no authentication.
	scopes  []string
	handler func(*request) (int, any, error)
	// raw handlers write the response themselves (health, metrics, openapi).
	raw http.HandlerFunc
	// on is the listener that serves the route (onboarding.go): the API
	// listener unless set.
	on listener
	// mtls is how a device route authenticates by client certificate.
	mtls mtlsMode
}

// request is what a handler sees: the HTTP request and the authenticated client.
type request struct {
	*http.Request
	ctx    context.Context
	client store.APIClient
	w      http.ResponseWriter
	// device is the device a route with mtls set authenticated.
	device enrol.Identity
}

// actor names the caller in audit entries.
func (r *request) actor() string { return "api:" + r.client.ID }

// realm is the caller's realm.
func (r *request) realm() string { return r.client.Realm }

type ctxKey int

const ridKey ctxKey = 1

// root dispatches to the mux and answers unknown paths and methods in JSON.
func (s *Server) root() http.Handler { return s.rootOf(s.mux) }

// rootOf is root for one listener's mux.
func (s *Server) rootOf(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			start := time.Now()
			status, e := http.StatusNotFound, errorf(http.StatusNotFound, "not_found", "no such endpoint: %s (see GET /v1/openapi.json)", r.URL.Path)
			for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH"} {
				r2 := r.Clone(r.Context())
				r2.Method = m
				if _, p := mux.Handler(r2); p != "" {
					status, e = http.StatusMethodNotAllowed, errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed on %s", r.Method, r.URL.Path)
					break
				}
			}
			writeError(w, e)
			s.observe(r, "unmatched", status, start)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) wrap(rt route) http.Handler {
	label := rt.method + " " + rt.pattern
	return http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		start := time.Now()
		rid := newRequestID()
		w.Header().Set("X-Request-Id", rid)
		ctx := context.WithValue(hr.Context(), ridKey, rid)
		status := http.StatusOK
		defer func() {
			if p := recover(); p != nil {
				// Never echo the panic value: it could hold request data.
				s.log.Error("handler panic", "route", label, "request_id", rid)
				status = http.StatusInternalServerError
				writeError(w, errorf(status, "internal", "internal error (request %s)", rid))
			}
			s.observe(hr, label, status, start)
			if !s.access.log(status) {
				return
			}
			s.log.Info("request", "request_id", rid, "method", hr.Method, "route", rt.pattern,
				"status", status, "duration_ms", float64(time.Since(start).Microseconds())/1000, "remote", hr.RemoteAddr)
		}()
		if rt.raw != nil {
			rt.raw(w, hr.WithContext(ctx))
			return
		}
		req := &request{Request: hr.WithContext(ctx), ctx: ctx, w: w}
		if len(rt.scopes) > 0 {
			c, err := s.authenticate(ctx, hr, rt.scopes)
			if err != nil {
				status = err.status
				writeError(w, err)
				return
			}
			req.client = c
		}
		if rt.mtls != mtlsNone {
			id, err := s.authDevice(ctx, hr, rt.mtls)
			if err != nil {
				status = err.status
				writeError(w, err)
				return
			}
			req.device = id
		}
		code, body, err := rt.handler(req)
		if err != nil {
			ae := s.toAPIError(err, rid)
			status = ae.status
			writeError(w, ae)
			return
		}
		status = code
		writeJSON(w, code, body)
	})
}

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// authenticate checks the bearer token and that the client holds one of scopes.
func (s *Server) authenticate(ctx context.Context, r *http.Request, scopes []string) (store.APIClient, *apiError) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return store.APIClient{}, &apiError{status: http.StatusUnauthorized, code: "unauthenticated",
			message: "missing 'Authorization: Bearer <API token>' header", extra: nil}
	}
	if apitoken.Check(tok) != nil {
		return store.APIClient{}, errorf(http.StatusUnauthorized, "unauthenticated", "the API token is malformed (it starts with %s)", apitoken.Prefix)
	}
	hash := s.tokens.Hash(tok)
	c, cached := s.auth.get(hash, s.cfg.Now())
	var err error
	if !cached {
		c, err = s.clients.ByHash(ctx, hash)
		if err == nil && !c.Disabled {
			s.auth.put(hash, c, s.cfg.Now())
		}
	}
	if err != nil || !apitoken.Equal(c.TokenHash, hash) || c.Disabled {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("api client lookup failed", "error", err.Error())
			return store.APIClient{}, errUnavailable()
		}
		return store.APIClient{}, errorf(http.StatusUnauthorized, "unauthenticated", "the API token is unknown or disabled")
	}
	if slices.Contains(c.Scopes, store.ScopeAdmin) {
		return c, nil
	}
	for _, sc := range scopes {
		if slices.Contains(c.Scopes, sc) {
			return c, nil
		}
	}
	_ = s.audit.Record(ctx, audit.AuthDenied, "api:"+c.ID, r.URL.Path, map[string]any{"need": scopes})
	return store.APIClient{}, errorf(http.StatusForbidden, "forbidden", "this API client lacks the %s scope", strings.Join(scopes, " or "))
}

// errUnavailable answers a request the database could not serve (it
// refused or lost the connection): 503, retry in a second. A code may have
// been spent (its acceptance committed before a later write was refused,
// or before the connection was lost), so a retry refused as replayed needs
// the next code.
func errUnavailable() *apiError {
	return &apiError{status: http.StatusServiceUnavailable, code: "unavailable", retryAfter: 1,
		message: "the database is not answering; retry shortly (if the retry says the code was used, use the next one)"}
}

func (s *Server) toAPIError(err error, rid string) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "not found")
	case errors.Is(err, store.ErrExists):
		return errorf(http.StatusConflict, "exists", "already exists")
	case errors.Is(err, store.ErrInvalid):
		return errorf(http.StatusBadRequest, "invalid_request", "a value is out of range or malformed")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errorf(http.StatusServiceUnavailable, "unavailable", "the request was cancelled or timed out")
	case errors.Is(err, store.ErrUnavailable):
		// The client may retry (errUnavailable says how). The cause
		// (server down, at max_connections) is for the operator's log.
		s.outage.log(s.log, s.cfg.Now(), rid, err)
		return errUnavailable()
	}
	s.log.Error("internal error", "request_id", rid, "error", err.Error())
	return errorf(http.StatusInternalServerError, "internal", "internal error (request %s); the server log has details", rid)
}

// outageLog logs the database's refusals at most once a second, the first
// of each second with how many it left out before it: an outage meets every
// request, and thousands of lines a second would flood the log and its
// disk. The verify metric still counts each (`unavailable`). flush, run
// by Housekeep, logs the count left at the end of an outage.
type outageLog struct {
	mu      sync.Mutex
	last    time.Time
	skipped int
}

func (o *outageLog) log(l *slog.Logger, now time.Time, rid string, err error) {
	o.mu.Lock()
	if !o.last.IsZero() && now.Sub(o.last) < time.Second && now.Sub(o.last) >= 0 {
		o.skipped++
		o.mu.Unlock()
		return
	}
	skipped := o.skipped
	o.last, o.skipped = now, 0
	o.mu.Unlock()
	l.Error("database unavailable", "request_id", rid, "error", err.Error(), "not_logged_before", skipped)
}

// flush logs the refusals left out since the last line, once a second has
// passed since it (no refusal since has been logged: the outage may be
// over).
func (o *outageLog) flush(l *slog.Logger, now time.Time) {
	o.mu.Lock()
	skipped := o.skipped
	if skipped == 0 || now.Sub(o.last) < time.Second {
		o.mu.Unlock()
		return
	}
	o.skipped = 0
	o.mu.Unlock()
	l.Error("database unavailable", "not_logged_before", skipped)
}

// typedBody is a raw body of another content type than JSON.
type typedBody struct {
	contentType string
	b           []byte
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	if tb, ok := body.(typedBody); ok {
		w.Header().Set("Content-Type", tb.contentType)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_, _ = w.Write(tb.b)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if raw, ok := body.(rawBody); ok {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_, _ = w.Write(raw)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if body == nil || status == http.StatusNoContent {
		return
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(body)
}

func writeError(w http.ResponseWriter, e *apiError) {
	inner := map[string]any{"code": e.code, "message": e.message}
	for k, v := range e.extra {
		inner[k] = v
	}
	if e.retryAfter > 0 && (e.status == http.StatusTooManyRequests || e.status == http.StatusServiceUnavailable) {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
		inner["retry_after"] = e.retryAfter
	}
	writeJSON(w, e.status, map[string]any{"error": inner})
}

// decode reads a JSON body strictly into v: application/json, at most
// MaxBody bytes, no unknown fields, no trailing data, correct types.
// page reads a list's query: after (an id of kind, "" for the first page)
// and limit (1 to store.MaxListLimit, 100 when absent).
func (r *request) page(kind string) (after string, limit int, err error) {
	limit = 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxListLimit {
			return "", 0, errorf(http.StatusBadRequest, "invalid_limit", "limit must be 1 to %d", store.MaxListLimit)
		}
		limit = n
	}
	after = r.URL.Query().Get("after")
	if len(after) > ident.MaxAPILen {
		return "", 0, errorf(http.StatusBadRequest, "invalid_after", "after must be a %s id", kind)
	}
	return after, limit, nil
}

func (r *request) decode(v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send the body as application/json, not %q", ident.Clip(ct))
	}
	body, err := io.ReadAll(http.MaxBytesReader(r.w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "the request body is larger than %d bytes", MaxBody)
		}
		return errorf(http.StatusBadRequest, "invalid_body", "could not read the request body")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, "invalid_json", "trailing data after the JSON object")
	}
	return nil
}

func jsonError(err error) *apiError {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return errorf(http.StatusBadRequest, "invalid_json", "malformed JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return errorf(http.StatusBadRequest, "invalid_type", "field %q must be a %s", te.Field, te.Type.String())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, "invalid_json", "the body is empty or truncated; send a JSON object")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return errorf(http.StatusBadRequest, "unknown_field", "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return errorf(http.StatusBadRequest, "invalid_json", "the body is not the expected JSON object")
}

func isExists(err error) bool { return errors.Is(err, store.ErrExists) }
