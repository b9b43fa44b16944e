package server

import (
	"net/http"

	"github.com/outpost-auth/outpost/internal/roster"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// The device roster (docs/onboarding.md): the /v1/roster routes, of scope
// admin. Vouches arrive by sync (fieldsync hands them to the roster inside
// its transaction); the rules and the audit entries are in internal/roster;
// this file maps HTTP to them.

// rosterAnswers are the roster's refusals' statuses and codes.
var rosterAnswers = []answer{
	{roster.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{roster.ErrNoVouch, http.StatusNotFound, "no_vouch"},
	{roster.ErrUnknownDevice, http.StatusNotFound, "device_not_found"},
	{roster.ErrState, http.StatusConflict, "invalid_state"},
	{roster.ErrExpired, http.StatusConflict, "vouch_expired"},
	{store.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{store.ErrConflict, http.StatusConflict, "conflict"},
}

func rosterError(err error) error {
	if e := answerFor(err, rosterAnswers); e != nil {
		return e
	}
	return err
}

// newRoster makes the roster service when the store holds one, counting
// its events in outpost_roster_vouches_total.
func newRoster(cfg Config, reg *prometheus.Registry) *roster.Service {
	rs, ok := cfg.Store.(store.RosterStore)
	if !ok {
		return nil
	}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_roster_vouches_total",
		Help: "Device roster events: vouches ingested by sync, held for review, withdrawn, and incidents."}, []string{"event"})
	reg.MustRegister(events)
	return &roster.Service{Store: rs, Now: cfg.Now, Expiry: cfg.VouchExpiry, Count: func(e string) { events.WithLabelValues(e).Inc() }}
}

// Roster returns the roster service (nil when the store holds none): the
// enrolment service asks it whether a device's vouch is live.
func (s *Server) Roster() *roster.Service { return s.roster }

func (s *Server) rosterSvc() (*roster.Service, error) {
	if s.roster == nil {
		return nil, errorf(http.StatusNotImplemented, "not_implemented", "this server's store does not hold a roster")
	}
	return s.roster, nil
}

// onSerial runs call on the serial the path names and answers with its entry.
func (s *Server) onSerial(r *request, call func(svc *roster.Service, serial string) (roster.Entry, error)) (int, any, error) {
	svc, err := s.rosterSvc()
	if err != nil {
		return 0, nil, err
	}
	e, err := call(svc, r.PathValue("serial"))
	if err != nil {
		return 0, nil, rosterError(err)
	}
	return http.StatusOK, e, nil
}

func (s *Server) listRoster(r *request) (int, any, error) {
	svc, err := s.rosterSvc()
	if err != nil {
		return 0, nil, err
	}
	after, limit, err := r.page("serial")
	if err != nil {
		return 0, nil, err
	}
	es, err := svc.List(r.ctx, r.realm(), after, limit)
	if err != nil {
		return 0, nil, rosterError(err)
	}
	out := struct {
		Roster []roster.Entry `json:"roster"`
		Next   string         `json:"next,omitempty"`
	}{Roster: es}
	if len(es) == limit {
		out.Next = es[len(es)-1].Serial
	}
	return http.StatusOK, out, nil
}

func (s *Server) getRoster(r *request) (int, any, error) {
	return s.onSerial(r, func(svc *roster.Service, serial string) (roster.Entry, error) {
		return svc.Get(r.ctx, r.realm(), serial)
	})
}

func (s *Server) withdrawVouch(r *request) (int, any, error) {
	var in struct {
		Reason string `json:"reason"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	return s.onSerial(r, func(svc *roster.Service, serial string) (roster.Entry, error) {
		return svc.Withdraw(r.ctx, r.realm(), serial, in.Reason, r.actor())
	})
}

// reviewBody names the held vouch to approve or reject ("" when the serial has one).
type reviewBody struct {
	Vouch string `json:"vouch"`
}

func (s *Server) approveVouch(r *request) (int, any, error) {
	var in reviewBody
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	return s.onSerial(r, func(svc *roster.Service, serial string) (roster.Entry, error) {
		return svc.Approve(r.ctx, r.realm(), serial, in.Vouch, r.actor())
	})
}

func (s *Server) rejectVouch(r *request) (int, any, error) {
	var in reviewBody
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	return s.onSerial(r, func(svc *roster.Service, serial string) (roster.Entry, error) {
		return svc.Reject(r.ctx, r.realm(), serial, in.Vouch, r.actor())
	})
}

func (s *Server) expectSerials(r *request) (int, any, error) {
	svc, err := s.rosterSvc()
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		Serials []string `json:"serials"`
		Order   string   `json:"order"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	res, err := svc.Expect(r.ctx, r.realm(), in.Serials, in.Order, r.actor())
	if err != nil {
		return 0, nil, rosterError(err)
	}
	return http.StatusOK, res, nil
}

func (s *Server) allowVoucher(r *request) (int, any, error) {
	svc, err := s.rosterSvc()
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		Device  string `json:"device"`
		Allowed *bool  `json:"allowed"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	if err := validID("device", in.Device); err != nil {
		return 0, nil, err
	}
	if in.Allowed == nil {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_request", "say whether the device may vouch: \"allowed\": true or false")
	}
	changed, err := svc.Allow(r.ctx, r.realm(), in.Device, *in.Allowed, r.actor())
	if err != nil {
		return 0, nil, rosterError(err)
	}
	return http.StatusOK, map[string]any{"device": in.Device, "allowed": *in.Allowed, "changed": changed}, nil
}
