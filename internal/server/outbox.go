package server

import (
	"context"
	"net/http"
	"time"

	"github.com/outpost-auth/outpost/internal/delivery"
	"github.com/outpost-auth/outpost/internal/outbox"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// The outbox and the realm's shipper webhook (docs/deliveries.md): the
// /v1/outbox and /v1/webhook routes, of scope admin. The rules and the
// audit entries are in internal/outbox; this file maps HTTP to them.
// Config.Notify and Config.Outbox configure the service; `outpost serve`
// runs its worker (RunOutbox).

// outboxAnswers are the outbox service's refusals' statuses and codes.
var outboxAnswers = []answer{
	{outbox.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{outbox.ErrNotDead, http.StatusConflict, "not_dead"},
	{outbox.ErrCodeErased, http.StatusConflict, "code_erased"},
	{store.ErrNotFound, http.StatusNotFound, "not_found"},
}

func outboxError(err error) error {
	if e := answerFor(err, outboxAnswers); e != nil {
		return e
	}
	return err
}

// outboxSvc returns the outbox service, or 501 when the store cannot hold
// an outbox (every engine of internal/store can).
func (s *Server) outboxSvc() (*outbox.Service, error) {
	if s.outbox == nil {
		return nil, errorf(http.StatusNotImplemented, "not_implemented", "this server's store does not hold an outbox")
	}
	return s.outbox, nil
}

// newOutbox makes the outbox service of cfg's store, the delivery
// service's Outbox, with its metrics; nil when the store has no outbox.
func (s *Server) newOutbox(cfg Config) *outbox.Service {
	obs, ok := cfg.Store.(store.OutboxStore)
	if !ok || s.deliveries == nil {
		return nil
	}
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_outbox_messages_total",
		Help: "Outbox send attempts by kind (recipient, event) and result (sent, retry, dead, skipped)."}, []string{"kind", "result"})
	cfg.Registry.MustRegister(counter)
	ob := &outbox.Service{Store: obs, Deliveries: s.deliveries, Master: cfg.Master, Channels: cfg.Notify, Policy: cfg.Outbox,
		WebhookTimeout: cfg.WebhookTimeout, Now: cfg.Now, Log: cfg.Logger,
		Observe: func(kind, result string) { counter.WithLabelValues(kind, result).Inc() },
		Token:   func(_ context.Context, d delivery.Delivery) (string, error) { return s.deliveries.TokenText(d) }}
	s.deliveries.Outbox = ob
	return ob
}

// RunOutbox runs the outbox worker every interval until ctx ends
// (outbox.Service.Run); `outpost serve` runs it in every process.
func (s *Server) RunOutbox(ctx context.Context, interval time.Duration) {
	if s.outbox != nil {
		s.outbox.Run(ctx, interval)
	}
}

type outboxJSON struct {
	ID        string    `json:"id"`
	Delivery  string    `json:"delivery"`
	Version   uint32    `json:"version"`
	Kind      string    `json:"kind"`
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	NextAt    time.Time `json:"next_at"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	LastError string    `json:"last_error,omitempty"`
	HasCode   bool      `json:"has_code"`
}

func toOutboxJSON(m outbox.Message) outboxJSON {
	return outboxJSON{ID: m.ID, Delivery: m.Delivery, Version: m.Version, Kind: m.Kind, State: m.State, Attempts: m.Attempts,
		NextAt: m.NextAt.UTC(), CreatedAt: m.CreatedAt.UTC(), UpdatedAt: m.UpdatedAt.UTC(), LastError: m.LastError, HasCode: m.HasCode}
}

func (s *Server) listOutbox(r *request) (int, any, error) {
	svc, err := s.outboxSvc()
	if err != nil {
		return 0, nil, err
	}
	after, limit, err := r.page("outbox message")
	if err != nil {
		return 0, nil, err
	}
	ms, err := svc.List(r.ctx, r.realm(), r.URL.Query().Get("state"), after, limit)
	if err != nil {
		return 0, nil, outboxError(err)
	}
	out := struct {
		Messages []outboxJSON `json:"messages"`
		Next     string       `json:"next,omitempty"`
	}{Messages: make([]outboxJSON, 0, len(ms))}
	for _, m := range ms {
		out.Messages = append(out.Messages, toOutboxJSON(m))
	}
	if len(ms) == limit {
		out.Next = ms[len(ms)-1].ID
	}
	return http.StatusOK, out, nil
}

func (s *Server) resendOutbox(r *request) (int, any, error) {
	svc, err := s.outboxSvc()
	if err != nil {
		return 0, nil, err
	}
	id := r.PathValue("id")
	if err := validID("outbox_message", id); err != nil {
		return 0, nil, err
	}
	m, err := svc.Resend(r.ctx, r.realm(), id, r.actor())
	if err != nil {
		return 0, nil, outboxError(err)
	}
	return http.StatusOK, toOutboxJSON(m), nil
}

type webhookJSON struct {
	URL       string    `json:"url"`
	UpdatedAt time.Time `json:"updated_at"`
	// Secret is in the answer of PUT only, once.
	Secret string `json:"secret,omitempty"`
}

func (s *Server) setWebhook(r *request) (int, any, error) {
	svc, err := s.outboxSvc()
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		URL    string  `json:"url"`
		Secret *string `json:"secret"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	var secret []byte
	if in.Secret != nil {
		secret = []byte(*in.Secret)
	}
	w, key, err := svc.SetWebhook(r.ctx, r.realm(), in.URL, secret, r.actor())
	if err != nil {
		return 0, nil, outboxError(err)
	}
	return http.StatusOK, webhookJSON{URL: w.URL, UpdatedAt: w.UpdatedAt.UTC(), Secret: string(key)}, nil
}

func (s *Server) getWebhook(r *request) (int, any, error) {
	svc, err := s.outboxSvc()
	if err != nil {
		return 0, nil, err
	}
	w, err := svc.Webhook(r.ctx, r.realm())
	if err != nil {
		return 0, nil, outboxError(err)
	}
	return http.StatusOK, webhookJSON{URL: w.URL, UpdatedAt: w.UpdatedAt.UTC()}, nil
}
