package server

import (
	"errors"
	"net/http"

	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/datadir"
)

// Audit retention (internal/auditcheck.Archive, docs/storage.md): the
// server exports the oldest audit entries to signed segment files in its
// --audit-segment-dir and prunes them from the database once it has read
// them back. The directory is the server's, not the caller's: the server
// must read a file back before it deletes what the file holds.

// AuditArchive returns the archive of the server's audit log, for the
// retention policy of `outpost serve --audit-retain`; nil when the server
// has no segment directory (Config.AuditSegmentDir).
func (s *Server) AuditArchive() *auditcheck.Archive { return s.archive }

// archiveAnswers maps the archive's errors to API answers.
var archiveAnswers = []answer{
	{auditcheck.ErrNoCheckpoint, http.StatusConflict, "no_checkpoint"},
	{auditcheck.ErrSegment, http.StatusConflict, "segment_invalid"}, // before not_exported, which may wrap it
	{auditcheck.ErrNotExported, http.StatusConflict, "not_exported"},
	{auditcheck.ErrBroken, http.StatusConflict, "audit_log_broken"},
	{auditcheck.ErrEmpty, http.StatusConflict, "audit_log_empty"},
}

// archiveFor is the archive, or the answer that the server has none.
func (s *Server) archiveFor(r *request) (*auditcheck.Archive, error) {
	if err := auditAccess(r); err != nil {
		return nil, err
	}
	if s.archive == nil {
		return nil, errorf(http.StatusConflict, "no_segment_dir", "this server has no audit segment directory: start it with --audit-segment-dir DIR")
	}
	return s.archive, nil
}

// exportAudit writes the entries not exported yet, up to the newest
// checkpoint at or before "through" (0 or absent: a new checkpoint of the head).
func (s *Server) exportAudit(r *request) (int, any, error) {
	a, err := s.archiveFor(r)
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		Through uint64 `json:"through"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	res, err := a.Export(r.ctx, r.actor(), in.Through)
	if e := answerFor(err, archiveAnswers); e != nil {
		return 0, nil, e
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, res, nil
}

// pruneAudit deletes exported entries: whole segments before "before"
// and/or whose last entry is older than "older_than" (30d, 36h).
func (s *Server) pruneAudit(r *request) (int, any, error) {
	a, err := s.archiveFor(r)
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		Before    uint64 `json:"before"`
		OlderThan string `json:"older_than"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	var lim auditcheck.PruneLimit
	lim.Before = in.Before
	if in.OlderThan != "" {
		if lim.OlderThan, err = auditcheck.ParseAge(in.OlderThan); err != nil {
			return 0, nil, errorf(http.StatusBadRequest, "invalid_older_than", "%v", err)
		}
	}
	if lim.Before == 0 && lim.OlderThan == 0 {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_limit", "give before (a seq) or older_than (an age like 30d): a prune needs a limit")
	}
	res, err := a.Prune(r.ctx, r.actor(), lim)
	if e := answerFor(err, archiveAnswers); e != nil {
		return 0, nil, e
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, res, nil
}

// getSegment returns one segment file of the server's directory as it is
// (JSON lines; 'outpost audit export --to DIR' copies them off the host).
func (s *Server) getSegment(r *request) (int, any, error) {
	a, err := s.archiveFor(r)
	if err != nil {
		return 0, nil, err
	}
	b, err := a.ReadSegment(r.PathValue("name"))
	switch {
	case errors.Is(err, auditcheck.ErrNoSegment):
		return 0, nil, errorf(http.StatusNotFound, "no_segment", "%v", err)
	case errors.Is(err, datadir.ErrTooLarge):
		return 0, nil, errorf(http.StatusRequestEntityTooLarge, "segment_too_large", "the segment is over %d bytes: copy it from the segment directory itself", auditcheck.MaxDownload)
	case err != nil:
		return 0, nil, err
	}
	return http.StatusOK, typedBody{contentType: "application/x-ndjson", b: b}, nil
}
