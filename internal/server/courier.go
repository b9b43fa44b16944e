package server

import (
	"context"
	"net/http"

	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/delivery"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// The courier's side of deliveries (docs/deliveries.md): sync carries each
// courier device's route manifest and receipts (fieldsync calls the
// delivery service), and GET /v1/deliveries/{id}/proof answers a proof of
// delivery. The rules are in internal/delivery (courier.go).

// wireCourier connects the delivery service's courier side to the device
// registry, the signer, the audit log, and sync.
func (s *Server) wireCourier(cfg Config) {
	cs, ok := cfg.Store.(store.CourierStore)
	ss, ok2 := cfg.Store.(store.SyncStore)
	if !ok || !ok2 || s.field == nil {
		return
	}
	svc := s.deliveries
	svc.AttemptLimit = cfg.DeliveryAttempts // one limit: the device's, online confirms' and receipts'
	svc.Courier = &delivery.Courier{Store: cs, Devices: ss, Signer: s.signer, MaxAge: cfg.ManifestMaxAge, Attempts: cfg.DeliveryAttempts, Costs: cfg.DeliveryCosts,
		Audit: func(ctx context.Context, e eventlog.Entry) error {
			_, err := cfg.Store.AppendAudit(ctx, e)
			return err
		},
		Incident: s.sync.incident}
	s.field.Courier = func(ctx context.Context, dev store.Device, receipts [][]byte) ([]byte, []courierproto.ReceiptAck, error) {
		acks, err := svc.Receipts(ctx, dev, receipts)
		if err != nil {
			return nil, nil, err
		}
		m, err := svc.RouteManifest(ctx, dev.Realm, dev.ID)
		return m, acks, err
	}
}

// deliveryProof answers the delivery's proof (courierproto.Proof): 404
// proof_not_found until a receipt made it delivered.
func (s *Server) deliveryProof(r *request) (int, any, error) {
	svc, id, err := s.deliveryPath(r)
	if err != nil {
		return 0, nil, err
	}
	p, err := svc.Proof(r.ctx, r.realm(), id)
	if err != nil {
		if e := answerFor(err, []answer{{store.ErrNotFound, http.StatusNotFound, "proof_not_found"}}); e != nil {
			return 0, nil, e
		}
		return 0, nil, err
	}
	return http.StatusOK, rawBody(p), nil
}
