package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/outpost-auth/outpost/internal/apitoken"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
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
	tok, c, err := s.clients.Create(r.ctx, r.realm(), in.Name, in.Scopes, r.actor())
	if errors.Is(err, apitoken.ErrInvalidScopes) {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_scopes", "%s", err.Error())
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, apiClientJSON{ID: c.ID, Name: c.Name, Scopes: c.Scopes, CreatedAt: c.CreatedAt.UTC(), Token: tok}, nil
}

func (s *Server) listAPIClients(r *request) (int, any, error) {
	cs, err := s.clients.List(r.ctx, r.realm())
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
	err := s.clients.Disable(r.ctx, r.realm(), id, r.actor())
	s.auth.drop(id)
	return http.StatusNoContent, nil, err
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
	es, err := s.audit.List(r.ctx, after, limit)
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
