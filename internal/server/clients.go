package server

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

type apiClientJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Scopes    []string  `json:"scopes"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
	// Token is present only in the response that creates the client.
	Token string `json:"token,omitempty"`
}

// createClient makes an API client and returns its token, shown once.
func (s *Server) createClient(ctx context.Context, realm, name string, scopes []string, actor string) (string, store.APIClient, error) {
	tok, hash, err := s.tokens.New()
	if err != nil {
		return "", store.APIClient{}, err
	}
	id := "cli_" + newRequestID()
	c := store.APIClient{ID: id, Realm: realm, Name: name, Scopes: scopes, TokenHash: hash, CreatedAt: s.cfg.Now()}
	if err := s.cfg.Store.CreateAPIClient(ctx, c); err != nil {
		return "", store.APIClient{}, err
	}
	if err := s.audit.Record(ctx, audit.APIClientCreate, actor, id, map[string]any{"name": name, "scopes": scopes}); err != nil {
		return "", store.APIClient{}, err
	}
	return tok, c, nil
}

func (s *Server) createAPIClient(r *request) (int, any, error) {
	var in struct {
		Name   string   `json:"name"`
		Scopes []string `json:"scopes"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	if err := validID("name", in.Name); err != nil {
		return 0, nil, err
	}
	if len(in.Scopes) == 0 || len(in.Scopes) > 3 {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_scopes", "scopes must list one or more of admin, issuer, verifier")
	}
	for _, sc := range in.Scopes {
		if sc != store.ScopeAdmin && sc != store.ScopeIssuer && sc != store.ScopeVerifier {
			return 0, nil, errorf(http.StatusBadRequest, "invalid_scopes", "unknown scope %q (use admin, issuer, verifier)", trunc(sc))
		}
	}
	slices.Sort(in.Scopes)
	in.Scopes = slices.Compact(in.Scopes)
	tok, c, err := s.createClient(r.ctx, r.realm(), in.Name, in.Scopes, r.actor())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, apiClientJSON{ID: c.ID, Name: c.Name, Scopes: c.Scopes, CreatedAt: c.CreatedAt.UTC(), Token: tok}, nil
}

func (s *Server) listAPIClients(r *request) (int, any, error) {
	cs, err := s.cfg.Store.ListAPIClients(r.ctx, r.realm())
	if err != nil {
		return 0, nil, err
	}
	out := []apiClientJSON{}
	for _, c := range cs {
		out = append(out, apiClientJSON{ID: c.ID, Name: c.Name, Scopes: c.Scopes, Disabled: c.Disabled, CreatedAt: c.CreatedAt.UTC()})
	}
	return http.StatusOK, map[string]any{"api_clients": out}, nil
}

func (s *Server) disableAPIClient(r *request) (int, any, error) {
	id := r.PathValue("id")
	if err := validID("api_client", id); err != nil {
		return 0, nil, err
	}
	if err := s.cfg.Store.DisableAPIClient(r.ctx, r.realm(), id); err != nil {
		return 0, nil, err
	}
	s.auth.drop(id)
	return http.StatusNoContent, nil, s.audit.Record(r.ctx, audit.APIClientRevoke, r.actor(), id, nil)
}

// auditAccess: the audit log is server-wide, so only admins of the default
// realm (the operators) may read it.
func auditAccess(r *request) error {
	if r.realm() != DefaultRealm {
		return errorf(http.StatusForbidden, "forbidden", "the audit log is readable by admins of the %s realm only", DefaultRealm)
	}
	return nil
}

func (s *Server) listAudit(r *request) (int, any, error) {
	if err := auditAccess(r); err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	after, limit := uint64(0), 100
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			return 0, nil, errorf(http.StatusBadRequest, "invalid_after", "after must be a sequence number")
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return 0, nil, errorf(http.StatusBadRequest, "invalid_limit", "limit must be 1 to 1000")
		}
		limit = n
	}
	es, err := s.cfg.Store.ListAudit(r.ctx, after, limit)
	if err != nil {
		return 0, nil, err
	}
	if es == nil {
		es = []eventlog.Entry{}
	}
	return http.StatusOK, map[string]any{"entries": es}, nil
}

func (s *Server) verifyAudit(r *request) (int, any, error) {
	if err := auditAccess(r); err != nil {
		return 0, nil, err
	}
	rep, err := audit.VerifyStore(r.ctx, s.cfg.Store)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rep, nil
}
