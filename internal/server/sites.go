package server

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/outpost-auth/outpost/internal/keyexport"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/siteissue"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/site"
)

// Site verifiers and subject-key export (docs/sites.md, docs/keys.md): the
// /v1/sites routes and POST /v1/keys/subject-export, all of scope admin (a
// package or a credential is as good as the keys it carries). The rules
// and the audit entries are in internal/siteissue and internal/keyexport;
// this file maps HTTP to them. Passphrases arrive in request bodies only,
// and never reach a log, an error or the audit log.

type siteAPI struct {
	// is is nil when the store cannot hold site state.
	is      *siteissue.Issuer
	subject *keyexport.Exporter
}

func newSiteAPI(s *Server) *siteAPI {
	a := &siteAPI{subject: &keyexport.Exporter{Master: s.cfg.Master, Audit: s.audit, KDF: s.cfg.SiteKDF, Issuer: s.cfg.Issuer, Now: s.cfg.Now}}
	if ss, ok := s.cfg.Store.(store.SiteStore); ok {
		a.is = siteissue.New(ss, s.cfg.Master)
		a.is.Now, a.is.KDF = s.cfg.Now, s.cfg.SiteKDF
	}
	return a
}

// issuer returns the site service and who calls it.
func (a *siteAPI) issuer(r *request) (*siteissue.Issuer, siteissue.Actor, error) {
	if a.is == nil {
		return nil, siteissue.Actor{}, errorf(http.StatusNotImplemented, "not_implemented", "this server's store does not hold site state")
	}
	return a.is, siteissue.Actor{Realm: r.realm(), Name: r.actor()}, nil
}

// siteAnswers are the site and key export services' refusals' statuses and codes.
var siteAnswers = []answer{
	{site.ErrBadID, http.StatusBadRequest, "invalid_id"},
	{keys.ErrWeakPassphrase, http.StatusBadRequest, "weak_passphrase"},
	{siteissue.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{keyexport.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{siteissue.ErrUnknownScope, http.StatusNotFound, "scope_not_found"},
	{siteissue.ErrScopeTaken, http.StatusConflict, "scope_taken"},
	{siteissue.ErrRevoked, http.StatusConflict, "revoked"},
	{siteissue.ErrNotRevoked, http.StatusConflict, "not_revoked"},
	{siteissue.ErrPolicyFixed, http.StatusConflict, "policy_fixed"},
}

// siteError maps the site and key export services' errors to responses.
func siteError(err error) error {
	if e := answerFor(err, siteAnswers); e != nil {
		return e
	}
	return err
}

// serve is every site handler: the service, the body decoded into body
// (unless nil), one call, and its answer or error.
func (a *siteAPI) serve(r *request, body any, call func(is *siteissue.Issuer, by siteissue.Actor) (any, error)) (int, any, error) {
	is, by, err := a.issuer(r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		if err := r.decode(body); err != nil {
			return 0, nil, err
		}
	}
	out, err := call(is, by)
	if err != nil {
		return 0, nil, siteError(err)
	}
	return http.StatusOK, out, nil
}

func (a *siteAPI) getScope(r *request) (int, any, error) {
	return a.serve(r, nil, func(is *siteissue.Issuer, by siteissue.Actor) (any, error) {
		return is.Scope(r.ctx, by, r.PathValue("scope"))
	})
}

func (a *siteAPI) setPolicy(r *request) (int, any, error) {
	var in siteissue.PolicyChange
	return a.serve(r, &in, func(is *siteissue.Issuer, by siteissue.Actor) (any, error) {
		return is.UpdatePolicy(r.ctx, by, r.PathValue("scope"), in)
	})
}

func (a *siteAPI) provision(r *request) (int, any, error) {
	var in struct {
		Site       string `json:"site"`
		Passphrase string `json:"passphrase"`
	}
	return a.serve(r, &in, func(is *siteissue.Issuer, by siteissue.Actor) (any, error) {
		return is.Provision(r.ctx, by, r.PathValue("scope"), in.Site, []byte(in.Passphrase))
	})
}

// epochParam reads "epoch": "current", "next", a number, or a number in a
// string; absent is current.
func epochParam(raw json.RawMessage) (siteissue.EpochSel, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return siteissue.Current, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var n uint32
		if err := json.Unmarshal(raw, &n); err != nil {
			return 0, errorf(http.StatusBadRequest, "invalid_type", `field "epoch" must be "current", "next" or an epoch number`)
		}
		return siteissue.EpochSel(n), nil
	}
	return siteissue.ParseEpochSel(s)
}

func (a *siteAPI) credential(r *request) (int, any, error) {
	var in struct {
		Tech       string          `json:"tech"`
		Epoch      json.RawMessage `json:"epoch"`
		Reinstate  bool            `json:"reinstate"`
		Passphrase *string         `json:"passphrase"`
	}
	return a.serve(r, &in, func(is *siteissue.Issuer, by siteissue.Actor) (any, error) {
		sel, err := epochParam(in.Epoch)
		if err != nil {
			return nil, err
		}
		req := siteissue.CredentialRequest{Scope: r.PathValue("scope"), Tech: in.Tech, Epoch: sel, Reinstate: in.Reinstate}
		if in.Passphrase != nil {
			req.Passphrase = []byte(*in.Passphrase)
		}
		c, err := is.Credential(r.ctx, by, req)
		if err != nil {
			return nil, err
		}
		return c.Info(), nil
	})
}

func (a *siteAPI) revoke(r *request) (int, any, error) {
	var in struct {
		Tech   []string `json:"tech"`
		Undo   []string `json:"undo"`
		Reason string   `json:"reason"`
	}
	return a.serve(r, &in, func(is *siteissue.Issuer, by siteissue.Actor) (any, error) {
		return is.Revoke(r.ctx, by, r.PathValue("scope"), in.Tech, in.Undo, in.Reason)
	})
}

func (a *siteAPI) roll(r *request) (int, any, error) {
	var body any
	if r.ContentLength != 0 { // the body is optional; when there is one it is {}
		body = &struct{}{}
	}
	return a.serve(r, body, func(is *siteissue.Issuer, by siteissue.Actor) (any, error) {
		return is.Roll(r.ctx, by, r.PathValue("scope"))
	})
}

func (a *siteAPI) exportSubject(r *request) (int, any, error) {
	var in struct {
		Subject    string `json:"subject"`
		Epoch      uint32 `json:"epoch"`
		Passphrase string `json:"passphrase"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	f, err := a.subject.ExportSubject(r.ctx, r.actor(), in.Subject, in.Epoch, []byte(in.Passphrase))
	if err != nil {
		return 0, nil, siteError(err)
	}
	return http.StatusOK, f, nil
}
