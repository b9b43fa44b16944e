package server

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/prometheus/client_golang/prometheus"
)

// Field-device sync (issue: sync; docs/sync.md): the device registry and
// the upload endpoints. The rules are in internal/fieldsync; this file maps
// HTTP to them.

// A refill runs in the background (fieldsync): the sync answer waits for
// it up to syncRefillWait, a third of the write timeout 'outpost serve'
// gives a connection (30 s), and otherwise says "pending"; the device
// collects it at a later sync. The refill itself is issuance.Service.Refill.
const syncRefillWait = 10 * time.Second

// syncAPI is the sync handlers and their metrics; the service is s.field.
type syncAPI struct {
	s         *Server
	incidents *prometheus.CounterVec
	uploads   *prometheus.CounterVec
	events    prometheus.Counter
}

func newSyncAPI(s *Server) *syncAPI {
	a := &syncAPI{s: s,
		incidents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_sync_incidents_total",
			Help: "Sync incidents by kind (replay, gap, rewritten, truncated, broken_chain, state_backwards, revoked_device, conflict, unissued_token, unissued_bundle, out_of_range, conflict_search_bounded, unknown_device, bad_signature)."}, []string{"kind"}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_sync_uploads_total",
			Help: "Sync uploads by result (applied, refused)."}, []string{"result"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_sync_events_total",
			Help: "Offline events recorded from device logs."}),
	}
	s.registry.MustRegister(a.incidents, a.uploads, a.events)
	return a
}

// incident counts one sync incident (fieldsync.Service.Incident).
func (a *syncAPI) incident(kind string) { a.incidents.WithLabelValues(kind).Inc() }

func (a *syncAPI) service() (*fieldsync.Service, error) {
	if a.s.field == nil {
		return nil, errorf(http.StatusNotImplemented, "not_implemented", "this server's store does not support sync")
	}
	return a.s.field, nil
}

// readUpload reads a raw upload body up to syncproto.MaxUploadSize.
func readUpload(r *request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" && ct != "application/octet-stream" {
		return nil, errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send the upload file as application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(r.w, r.Body, syncproto.MaxUploadSize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(http.StatusRequestEntityTooLarge, "body_too_large", "an upload is at most %d bytes: the client splits larger logs", syncproto.MaxUploadSize)
		}
		return nil, errorf(http.StatusBadRequest, "invalid_body", "could not read the request body")
	}
	return body, nil
}

func (a *syncAPI) sync(r *request) (int, any, error) {
	return a.receive(r, "http")
}

// importSync is the air-gapped path: an administrator posts a file made by
// 'outpost field export-sync'. Same checks; the answer is the file to carry back.
func (a *syncAPI) importSync(r *request) (int, any, error) {
	return a.receive(r, "file:"+r.actor())
}

func (a *syncAPI) receive(r *request, via string) (int, any, error) {
	svc, err := a.service()
	if err != nil {
		return 0, nil, err
	}
	data, err := readUpload(r)
	if err != nil {
		return 0, nil, err
	}
	res, err := svc.Receive(r.ctx, data, via)
	if err != nil {
		a.uploads.WithLabelValues("refused").Inc()
		return 0, nil, syncError(err)
	}
	a.uploads.WithLabelValues("applied").Inc()
	a.events.Add(float64(res.New))
	r.w.Header().Set("X-Outpost-Acked", strconv.FormatUint(res.Response.Acked, 10))
	return http.StatusOK, rawBody(res.Signed), nil
}

// syncAnswers are fieldsync's refusals' statuses and codes.
var syncAnswers = []answer{
	{fieldsync.ErrTooLarge, http.StatusRequestEntityTooLarge, "body_too_large"},
	{fieldsync.ErrUnknownDevice, http.StatusUnauthorized, "unknown_device"},
	{fieldsync.ErrBadSignature, http.StatusUnauthorized, "bad_signature"},
	{fieldsync.ErrRevoked, http.StatusForbidden, "device_revoked"},
	{fieldsync.ErrReplay, http.StatusConflict, "replayed_upload"},
	{fieldsync.ErrRewritten, http.StatusConflict, "log_rewritten"},
	{fieldsync.ErrTruncated, http.StatusConflict, "log_truncated"},
	{fieldsync.ErrBackwards, http.StatusConflict, "state_backwards"},
	{fieldsync.ErrBrokenChain, http.StatusBadRequest, "broken_chain"},
	{fieldsync.ErrNotYetValid, http.StatusBadRequest, "upload_not_yet_valid"},
	{fieldsync.ErrExpired, http.StatusBadRequest, "upload_expired"},
	{fieldsync.ErrMalformed, http.StatusBadRequest, "invalid_upload"},
}

// syncError maps fieldsync's refusals to statuses and stable codes.
func syncError(err error) error {
	var gap *fieldsync.GapError
	if errors.As(err, &gap) {
		e := errorf(http.StatusConflict, "sync_gap", "%s", err.Error())
		e.extra = map[string]any{"acked": gap.Acked}
		return e
	}
	if e := answerFor(err, syncAnswers); e != nil {
		return e
	}
	return err
}

type deviceJSON struct {
	ID         string    `json:"id"`
	Status     string    `json:"status"`
	KeyID      string    `json:"key_id,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	EnrolUntil time.Time `json:"enrol_until,omitzero"`
	Acked      uint64    `json:"acked"`
	LastUpload uint64    `json:"last_upload_serial"`
	LastSync   time.Time `json:"last_sync,omitzero"`
}

func toDeviceJSON(d store.Device) deviceJSON {
	return deviceJSON{ID: d.ID, Status: d.Status, KeyID: d.KeyID, CreatedAt: d.CreatedAt, RevokedAt: d.RevokedAt,
		EnrolUntil: d.EnrolUntil, Acked: d.AckedSeq, LastUpload: d.UploadSerial, LastSync: d.LastSync}
}

func (a *syncAPI) register(r *request) (int, any, error) {
	svc, err := a.service()
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		ID        string `json:"id"`
		PublicKey string `json:"public_key"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	if err := validID("device", in.ID); err != nil {
		return 0, nil, err
	}
	pub, err := keys.ParsePublicPEM([]byte(in.PublicKey))
	if err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_public_key", "public_key must be the device's PEM public key (FDIR/device.pub): %v", err)
	}
	d, err := svc.Register(r.ctx, r.realm(), in.ID, pub, r.actor())
	if errors.Is(err, store.ErrExists) {
		return 0, nil, errorf(http.StatusConflict, "exists", "a device %q, or a device with this key, is already registered", in.ID)
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, toDeviceJSON(d), nil
}

func (a *syncAPI) list(r *request) (int, any, error) {
	svc, err := a.service()
	if err != nil {
		return 0, nil, err
	}
	after, limit, err := r.page("device")
	if err != nil {
		return 0, nil, err
	}
	ds, err := svc.Devices(r.ctx, r.realm(), after, limit)
	if err != nil {
		return 0, nil, err
	}
	out := map[string]any{"devices": []deviceJSON{}}
	list := make([]deviceJSON, 0, len(ds))
	for _, d := range ds {
		list = append(list, toDeviceJSON(d))
	}
	out["devices"] = list
	if len(ds) == limit {
		out["next"] = ds[len(ds)-1].ID
	}
	return http.StatusOK, out, nil
}

// device finds a device of the caller's realm.
func (a *syncAPI) device(r *request, svc *fieldsync.Service) (store.Device, error) {
	d, err := svc.Device(r.ctx, r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) || (err == nil && d.Realm != r.realm()) {
		return store.Device{}, errorf(http.StatusNotFound, "device_not_found", "no device %q", ident.Clip(r.PathValue("id")))
	}
	return d, err
}

type deviceTokenJSON struct {
	Realm        string    `json:"realm"`
	User         string    `json:"user"`
	Token        string    `json:"token"`
	Serial       uint64    `json:"serial,omitempty"`
	Type         string    `json:"type,omitempty"`
	First        uint64    `json:"first,omitempty"`
	Last         uint64    `json:"last,omitempty"`
	NotAfter     time.Time `json:"not_after,omitzero"`
	OfflineUsed  int64     `json:"offline_used"`
	ReportedUsed int64     `json:"reported_used"`
	Failures     int       `json:"failures"`
	Wiped        bool      `json:"wiped"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func (a *syncAPI) get(r *request) (int, any, error) {
	svc, err := a.service()
	if err != nil {
		return 0, nil, err
	}
	d, err := a.device(r, svc)
	if err != nil {
		return 0, nil, err
	}
	dts, err := svc.DeviceTokens(r.ctx, d.Realm, d.ID)
	if err != nil {
		return 0, nil, err
	}
	toks := make([]deviceTokenJSON, 0, len(dts))
	for _, t := range dts {
		toks = append(toks, deviceTokenJSON{Realm: t.Realm, User: t.UserID, Token: t.TokenID, Serial: t.Serial, Type: t.Type, First: t.First,
			Last: t.Last, NotAfter: t.NotAfter, OfflineUsed: t.OfflineUsed, ReportedUsed: t.ReportedUsed, Failures: t.Failures,
			Wiped: t.Wiped, UpdatedAt: t.UpdatedAt})
	}
	return http.StatusOK, map[string]any{"device": toDeviceJSON(d), "tokens": toks}, nil
}

func (a *syncAPI) enrolmentCode(r *request) (int, any, error) {
	svc, err := a.service()
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		TTLSeconds int64 `json:"ttl_seconds,omitempty"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	id := r.PathValue("id")
	if err := validID("device", id); err != nil {
		return 0, nil, err
	}
	if in.TTLSeconds < 0 || in.TTLSeconds > int64(fieldsync.MaxEnrolTTL/time.Second) {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_ttl", "ttl_seconds must be 1 to %d", int64(fieldsync.MaxEnrolTTL/time.Second))
	}
	code, until, err := svc.NewEnrolmentCode(r.ctx, r.realm(), id, time.Duration(in.TTLSeconds)*time.Second, r.actor())
	if errors.Is(err, store.ErrExists) {
		return 0, nil, errorf(http.StatusConflict, "exists", "device %q is already registered (an enrolment code is for a new device)", id)
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, map[string]any{"device": id, "code": code, "expires_at": until.UTC()}, nil
}

func (a *syncAPI) enrol(r *request) (int, any, error) {
	svc, err := a.service()
	if err != nil {
		return 0, nil, err
	}
	var in syncproto.Enrol
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	if err := validID("device", in.Device); err != nil {
		return 0, nil, err
	}
	d, err := svc.Enrol(r.ctx, in)
	switch {
	case errors.Is(err, fieldsync.ErrEnrolment):
		a.incident("bad_enrolment")
		return 0, nil, errorf(http.StatusUnauthorized, "invalid_enrolment", "%s", err.Error())
	case errors.Is(err, syncproto.ErrMalformed):
		return 0, nil, errorf(http.StatusBadRequest, "invalid_enrolment", "%s", err.Error())
	case errors.Is(err, store.ErrExists):
		return 0, nil, errorf(http.StatusConflict, "exists", "another device is registered with this key")
	case err != nil:
		return 0, nil, err
	}
	return http.StatusOK, toDeviceJSON(d), nil
}

func (a *syncAPI) revoke(r *request) (int, any, error) {
	svc, err := a.service()
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		BurnHOTP bool `json:"burn_hotp,omitempty"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	d, err := a.device(r, svc)
	if err != nil {
		return 0, nil, err
	}
	rep, err := svc.Revoke(r.ctx, d.Realm, d.ID, in.BurnHOTP, r.actor())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"device": toDeviceJSON(rep.Device), "bundles": rep.Bundles}, nil
}
