package server

import (
	"errors"
	"net/http"

	"github.com/outpost-auth/outpost/internal/auditcheck"
)

// Audit checkpoints (internal/auditcheck): the server signs the audit log's
// head so that a rewritten or truncated tail is detected by whoever keeps
// the checkpoint away from the database.

// Checkpoints returns the notary that signs the audit log's head, for the
// scheduled exporter of `outpost serve`: one notary per server, so that
// scheduled and requested checkpoints chain on from each other.
func (s *Server) Checkpoints() *auditcheck.Notary { return s.checkpoints }

// createCheckpoint signs the current head, recorded as the admin's request.
func (s *Server) createCheckpoint(r *request) (int, any, error) {
	if err := auditAccess(r); err != nil {
		return 0, nil, err
	}
	cp, err := s.checkpoints.Requested(r.ctx, r.actor())
	switch {
	case errors.Is(err, auditcheck.ErrBroken):
		return 0, nil, errorf(http.StatusConflict, "audit_log_broken", "%s", err.Error())
	case errors.Is(err, auditcheck.ErrEmpty):
		return 0, nil, errorf(http.StatusConflict, "audit_log_empty", "the audit log has no entry to anchor yet")
	case err != nil:
		return 0, nil, err
	}
	return http.StatusOK, rawBody(cp.Bytes), nil
}

// latestCheckpoint returns the last checkpoint this server signed (on
// schedule or on request) or resumed from its checkpoint directory.
func (s *Server) latestCheckpoint(r *request) (int, any, error) {
	if err := auditAccess(r); err != nil {
		return 0, nil, err
	}
	cp, ok := s.checkpoints.Latest()
	if !ok {
		return 0, nil, errorf(http.StatusNotFound, "no_checkpoint", "this server has signed no audit checkpoint since it started: POST /v1/audit/checkpoints takes one")
	}
	return http.StatusOK, rawBody(cp.Bytes), nil
}
