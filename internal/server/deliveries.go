package server

import (
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/delivery"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
)

// Deliveries (docs/deliveries.md): the /v1/deliveries routes, of scope
// issuer. The rules and the audit entries are in internal/delivery; this
// file maps HTTP to them. The code is in the answer of create and reassign
// only, once, and only when the server has no notifier (Config.Notify):
// with one, it goes to the recipient through the outbox (outbox.go). The
// server keeps no copy in the clear.

// deliveryAnswers are the delivery service's refusals' statuses and codes.
var deliveryAnswers = []answer{
	{delivery.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{deliverycode.ErrTypo, http.StatusBadRequest, "typo"},
	{delivery.ErrDeviceAuth, http.StatusUnauthorized, "device_unauthenticated"},
	{delivery.ErrReplayed, http.StatusConflict, "replayed"},
	{delivery.ErrWrongDevice, http.StatusForbidden, "wrong_device"},
	{delivery.ErrAttempts, http.StatusConflict, "attempts_exhausted"},
	{delivery.ErrWrongCode, http.StatusUnauthorized, "wrong_code"},
	{delivery.ErrDelivered, http.StatusConflict, "already_delivered"},
	{delivery.ErrExpired, http.StatusConflict, "expired"},
	{delivery.ErrState, http.StatusConflict, "invalid_state"},
	{store.ErrExists, http.StatusConflict, "exists"},
	{store.ErrNotFound, http.StatusNotFound, "delivery_not_found"},
	{store.ErrConflict, http.StatusConflict, "conflict"},
}

func deliveryError(err error) error {
	if e := answerFor(err, deliveryAnswers); e != nil {
		return e
	}
	return err
}

type deliveryJSON struct {
	ID          string    `json:"id"`
	Device      string    `json:"device"`
	Mode        string    `json:"mode"`
	State       string    `json:"state"`
	NotAfter    time.Time `json:"not_after"`
	CodeVersion uint32    `json:"code_version"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// Code is set in the answers of create and reassign only.
	Code string `json:"code,omitempty"`
	// Token is set in the answers of create and reassign in token mode.
	Token *delivery.Token `json:"token,omitempty"`
}

func toDeliveryJSON(d delivery.Delivery, code string) deliveryJSON {
	return deliveryJSON{ID: d.ID, Device: d.Device, Mode: string(d.Mode), State: string(d.State), NotAfter: d.NotAfter.UTC(),
		CodeVersion: d.CodeVersion, CreatedAt: d.CreatedAt.UTC(), UpdatedAt: d.UpdatedAt.UTC(), Code: code, Token: d.Token}
}

// deliverySvc returns the delivery service, or 501 when the store cannot
// hold deliveries (every engine of internal/store can).
func (s *Server) deliverySvc() (*delivery.Service, error) {
	if s.deliveries == nil {
		return nil, errorf(http.StatusNotImplemented, "not_implemented", "this server's store does not hold deliveries")
	}
	return s.deliveries, nil
}

// deliveryPath returns the delivery service and the id the path names, checked.
func (s *Server) deliveryPath(r *request) (*delivery.Service, string, error) {
	svc, err := s.deliverySvc()
	if err != nil {
		return nil, "", err
	}
	id := r.PathValue("id")
	return svc, id, validID("delivery", id)
}

// onDelivery runs call on the delivery the path names (its id checked)
// and answers with it, and its code when call returns one.
func (s *Server) onDelivery(r *request, call func(svc *delivery.Service, id string) (delivery.Delivery, string, error)) (int, any, error) {
	svc, id, err := s.deliveryPath(r)
	if err != nil {
		return 0, nil, err
	}
	d, code, err := call(svc, id)
	if err != nil {
		return 0, nil, deliveryError(err)
	}
	return http.StatusOK, toDeliveryJSON(d, code), nil
}

func (s *Server) createDelivery(r *request) (int, any, error) {
	svc, err := s.deliverySvc()
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		ID        string             `json:"id"`
		Recipient delivery.Recipient `json:"recipient"`
		Device    string             `json:"device"`
		NotAfter  time.Time          `json:"not_after"`
		Mode      string             `json:"mode"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	if err := validID("delivery", in.ID); err != nil {
		return 0, nil, err
	}
	if err := validID("device", in.Device); err != nil {
		return 0, nil, err
	}
	d, code, err := svc.Create(r.ctx, r.realm(), delivery.Request{ID: in.ID, Recipient: in.Recipient, Device: in.Device,
		NotAfter: in.NotAfter, Mode: delivery.Mode(in.Mode)}, r.actor())
	if err != nil {
		return 0, nil, deliveryError(err)
	}
	return http.StatusCreated, toDeliveryJSON(d, code), nil
}

func (s *Server) listDeliveries(r *request) (int, any, error) {
	svc, err := s.deliverySvc()
	if err != nil {
		return 0, nil, err
	}
	after, limit, err := r.page("delivery")
	if err != nil {
		return 0, nil, err
	}
	ds, err := svc.List(r.ctx, r.realm(), after, limit)
	if err != nil {
		return 0, nil, deliveryError(err)
	}
	out := struct {
		Deliveries []deliveryJSON `json:"deliveries"`
		Next       string         `json:"next,omitempty"`
	}{Deliveries: make([]deliveryJSON, 0, len(ds))}
	for _, d := range ds {
		out.Deliveries = append(out.Deliveries, toDeliveryJSON(d, ""))
	}
	if len(ds) == limit {
		out.Next = ds[len(ds)-1].ID
	}
	return http.StatusOK, out, nil
}

func (s *Server) getDelivery(r *request) (int, any, error) {
	return s.onDelivery(r, func(svc *delivery.Service, id string) (delivery.Delivery, string, error) {
		d, err := svc.Get(r.ctx, r.realm(), id)
		return d, "", err
	})
}

func (s *Server) cancelDelivery(r *request) (int, any, error) {
	return s.onDelivery(r, func(svc *delivery.Service, id string) (delivery.Delivery, string, error) {
		d, err := svc.Cancel(r.ctx, r.realm(), id, r.actor())
		return d, "", err
	})
}

func (s *Server) reassignDelivery(r *request) (int, any, error) {
	var in struct {
		Device string `json:"device"`
	}
	return s.onDeliveryDevice(r, &in, &in.Device, func(svc *delivery.Service, id string) (delivery.Delivery, string, error) {
		return svc.Reassign(r.ctx, r.realm(), id, in.Device, r.actor())
	})
}

// onDeliveryDevice decodes the body into in, checks the device id it holds
// (*device, a field of in), and runs call as onDelivery does.
func (s *Server) onDeliveryDevice(r *request, in any, device *string, call func(svc *delivery.Service, id string) (delivery.Delivery, string, error)) (int, any, error) {
	if err := r.decode(in); err != nil {
		return 0, nil, err
	}
	if err := validID("device", *device); err != nil {
		return 0, nil, err
	}
	return s.onDelivery(r, call)
}

// confirmDelivery is the online confirm (issue 11 part 7): the courier, or
// the shipper's system on its behalf, sends the code the recipient gave at
// the door and the device it was entered on. The rules (typo free, assigned
// device, attempts counted before comparing, delivered once) are
// delivery.Service.Confirm's.
func (s *Server) confirmDelivery(r *request) (int, any, error) {
	var in struct {
		Code   string `json:"code"`
		Device string `json:"device"`
	}
	return s.onDeliveryDevice(r, &in, &in.Device, func(svc *delivery.Service, id string) (delivery.Delivery, string, error) {
		out, err := svc.Confirm(r.ctx, r.realm(), id, in.Code, in.Device, r.actor())
		return out.Delivery, "", err
	})
}

// deviceConfirmDelivery is the online confirm sent by the courier's device
// itself: the body is a confirm signed with the device's registered key
// (delivery.SignConfirm), which is the authentication, as at sync; no API
// token. delivery.Service.ConfirmSigned checks the signature and runs the
// same rules as confirmDelivery.
func (s *Server) deviceConfirmDelivery(r *request) (int, any, error) {
	return s.onDelivery(r, func(svc *delivery.Service, id string) (delivery.Delivery, string, error) {
		if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") && ct != "application/octet-stream" {
			return delivery.Delivery{}, "", errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send the signed confirm as application/json")
		}
		body, err := io.ReadAll(http.MaxBytesReader(r.w, r.Body, delivery.MaxConfirmSize))
		if err != nil {
			return delivery.Delivery{}, "", errorf(http.StatusRequestEntityTooLarge, "body_too_large", "a signed confirm is at most %d bytes", delivery.MaxConfirmSize)
		}
		out, err := svc.ConfirmSigned(r.ctx, id, body)
		return out.Delivery, "", err
	})
}

// deliveryKeys answers the caller's realm's delivery public keys (what a
// courier device pins, delivery.Service.PublicKeys): the token key as PEM,
// for anyone checking a delivery token, and the HPKE seal key.
func (s *Server) deliveryKeys(r *request) (int, any, error) {
	svc, err := s.deliverySvc()
	if err != nil {
		return 0, nil, err
	}
	k, err := svc.PublicKeys(r.realm())
	if err != nil {
		return 0, nil, deliveryError(err)
	}
	return http.StatusOK, map[string]any{"realm": r.realm(), "token_key_id": keys.KeyID(k.Token),
		"token_public_key_pem": string(keys.MarshalPublicPEM(k.Token)), "seal_public_key": k.Seal}, nil
}
