package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/outpost-auth/outpost/internal/ca"
	"github.com/outpost-auth/outpost/internal/enrol"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Device onboarding (docs/onboarding.md): the device listener's routes
// (first contact, EST, renewal, whoami: served by DeviceHandler on
// `outpost serve --device-addr`, over TLS 1.3 with DeviceTLSConfig) and
// the admin routes of onboarded devices and their certificates (on the
// API listener, scope admin). The rules and the audit entries are in
// internal/enrol; this file maps HTTP to them.

// listener says which listener serves a route.
type listener int

const (
	onAPI    listener = iota // the API listener (the zero value)
	onDevice                 // the device listener only
	onBoth                   // both
)

// mtlsMode is how a device route authenticates: not at all, with a valid
// device certificate, or with one that may have expired within the grace
// (renewal only).
type mtlsMode int

const (
	mtlsNone mtlsMode = iota
	mtlsRequired
	mtlsGrace
)

// onboardAPI is the onboarding service and its metrics.
type onboardAPI struct {
	svc        *enrol.Service // nil when the store holds no CA
	ca         *ca.Authority
	enrolments *prometheus.CounterVec
	renewals   *prometheus.CounterVec
	refusals   *prometheus.CounterVec
}

func newOnboardAPI(s *Server) (*onboardAPI, error) {
	a := &onboardAPI{
		enrolments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_onboarding_enrolments_total",
			Help: "Device enrolments by path (json, est, est_bound)."}, []string{"path"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_onboarding_renewals_total",
			Help: "Device certificate renewals, live or within the grace after expiry."}, []string{"when"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "outpost_onboarding_refusals_total",
			Help: "Refused enrolments, renewals and device certificates, by reason (csr, challenge, binding, vouch, key_mismatch, revoked, expired, not_device, no_roster, ...)."}, []string{"reason"}),
	}
	s.registry.MustRegister(a.enrolments, a.renewals, a.refusals)
	cs, ok := s.cfg.Store.(store.CAStore)
	if !ok {
		return a, nil
	}
	auth, _, err := ca.LoadOrCreate(context.Background(), cs, s.cfg.Master, "serve", s.cfg.Now())
	if err != nil {
		return nil, err
	}
	a.ca = auth
	a.svc = &enrol.Service{Store: cs, Audit: s.audit, CA: auth, Vouches: s.cfg.Vouches, Now: s.cfg.Now,
		Validity: s.cfg.DeviceValidity, Grace: s.cfg.DeviceGrace, Observe: a.observe}
	return a, nil
}

func (a *onboardAPI) observe(event, detail string) {
	switch event {
	case "enrol":
		a.enrolments.WithLabelValues(detail).Inc()
	case "renew":
		a.renewals.WithLabelValues(detail).Inc()
	case "refused":
		a.refusals.WithLabelValues(detail).Inc()
	}
}

func (a *onboardAPI) service() (*enrol.Service, error) {
	if a.svc == nil {
		return nil, errorf(http.StatusNotImplemented, "not_implemented", "this server's store holds no CA")
	}
	return a.svc, nil
}

// onboardAnswers are the onboarding service's refusals' statuses and codes.
var onboardAnswers = []answer{
	{enrol.ErrNoRoster, http.StatusServiceUnavailable, "no_roster"},
	{enrol.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{enrol.ErrCSR, http.StatusBadRequest, "invalid_csr"},
	{enrol.ErrNoTLS, http.StatusBadRequest, "tls_required"},
	{enrol.ErrChallenge, http.StatusUnauthorized, "invalid_challenge"},
	{enrol.ErrBinding, http.StatusUnauthorized, "not_bound"},
	{enrol.ErrNoCert, http.StatusUnauthorized, "no_certificate"},
	{enrol.ErrExpired, http.StatusUnauthorized, "expired"},
	{enrol.ErrNotDevice, http.StatusUnauthorized, "not_device"},
	{enrol.ErrVouch, http.StatusForbidden, "no_vouch"},
	{enrol.ErrRevoked, http.StatusForbidden, "revoked"},
	{enrol.ErrKeyMismatch, http.StatusConflict, "key_mismatch"},
	{store.ErrNotFound, http.StatusNotFound, "device_not_found"},
	{store.ErrConflict, http.StatusConflict, "already_revoked"},
}

func onboardError(err error) error {
	if e := answerFor(err, onboardAnswers); e != nil {
		return e
	}
	return err
}

// onboardingRoutes are the onboarding routes of routeTable.
func (s *Server) onboardingRoutes() []route {
	o := s.onboard
	return []route{
		{method: "GET", pattern: "/v1/ca/root", on: onBoth, raw: o.root},
		{method: "POST", pattern: "/v1/enrol/challenge", on: onDevice, handler: o.challenge},
		{method: "POST", pattern: "/v1/enrol", on: onDevice, handler: o.enrol},
		{method: "GET", pattern: "/v1/device/whoami", on: onDevice, mtls: mtlsRequired, handler: o.whoami},
		{method: "POST", pattern: "/v1/device/renew", on: onDevice, mtls: mtlsGrace, handler: o.renew},
		{method: "GET", pattern: "/.well-known/est/cacerts", on: onDevice, raw: o.estCACerts},
		{method: "POST", pattern: "/.well-known/est/simpleenroll", on: onDevice, raw: s.estEnroll},
		{method: "POST", pattern: "/.well-known/est/simplereenroll", on: onDevice, raw: s.estReenroll},
		// RFC 7030 section 3.2.2's label names the realm.
		{method: "GET", pattern: "/.well-known/est/{label}/cacerts", on: onDevice, raw: o.estCACerts},
		{method: "POST", pattern: "/.well-known/est/{label}/simpleenroll", on: onDevice, raw: s.estEnroll},
		{method: "POST", pattern: "/.well-known/est/{label}/simplereenroll", on: onDevice, raw: s.estReenroll},
		{method: "GET", pattern: "/v1/ca/devices", scopes: admin, handler: o.listDevices},
		{method: "GET", pattern: "/v1/ca/devices/{serial}", scopes: admin, handler: o.getDevice},
		{method: "POST", pattern: "/v1/ca/devices/{serial}/revoke", scopes: admin, handler: o.revoke},
		{method: "GET", pattern: "/v1/ca/certs", scopes: admin, handler: o.listCerts},
	}
}

// DeviceHandler is the device listener's handler: the routes marked for it.
func (s *Server) DeviceHandler() http.Handler { return s.rootOf(s.deviceMux) }

// DeviceTLSConfig is the device listener's TLS: 1.3 only (the exporter of
// first contact needs it), a server certificate for names issued by the
// device CA (devices trust its root), and a client certificate requested
// but not required (first contact has none), checked at every handshake
// by the onboarding service (another CA's, a revoked device's or a
// long-expired one fails the handshake).
func (s *Server) DeviceTLSConfig(names []string) (*tls.Config, error) {
	svc, err := s.onboard.service()
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: s.onboard.ca.ServerCertificates(names, s.cfg.Now),
		ClientAuth: tls.RequestClientCert, VerifyConnection: svc.VerifyConnection}, nil
}

// CARootPEM is the device CA's root certificate (nil when the store holds no CA).
func (s *Server) CARootPEM() []byte {
	if s.onboard.ca == nil {
		return nil
	}
	return s.onboard.ca.RootPEM()
}

// authDevice authenticates a device route's request by its client
// certificate (mode mtlsRequired or mtlsGrace).
func (s *Server) authDevice(ctx context.Context, r *http.Request, mode mtlsMode) (enrol.Identity, *apiError) {
	svc, err := s.onboard.service()
	if err != nil {
		var ae *apiError
		errors.As(err, &ae)
		return enrol.Identity{}, ae
	}
	id, err := svc.Check(ctx, peerCerts(r), mode == mtlsGrace)
	if err != nil {
		if e := answerFor(err, onboardAnswers); e != nil {
			return enrol.Identity{}, e
		}
		s.log.Error("device authentication failed", "error", err.Error())
		return enrol.Identity{}, errUnavailable()
	}
	return id, nil
}

func peerCerts(r *http.Request) []*x509.Certificate {
	if r.TLS == nil {
		return nil
	}
	return r.TLS.PeerCertificates
}

// exporter is the server side's exporter value of r's connection (nil
// when r did not come over TLS 1.3).
func exporter(r *http.Request) []byte {
	if r.TLS == nil || r.TLS.Version != tls.VersionTLS13 {
		return nil
	}
	b, err := r.TLS.ExportKeyingMaterial(enrol.ExporterLabel, nil, enrol.ExporterLen)
	if err != nil {
		return nil
	}
	return b
}

func (o *onboardAPI) root(w http.ResponseWriter, r *http.Request) {
	if o.ca == nil {
		writeError(w, errorf(http.StatusNotImplemented, "not_implemented", "this server's store holds no CA"))
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(o.ca.RootPEM())
}

func realmOr(realm string) string {
	if realm == "" {
		return DefaultRealm
	}
	return realm
}

func (o *onboardAPI) challenge(r *request) (int, any, error) {
	svc, err := o.service()
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		Realm  string `json:"realm"`
		Serial string `json:"serial"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	nonce, exp, err := svc.Challenge(r.ctx, realmOr(in.Realm), in.Serial)
	if err != nil {
		return 0, nil, onboardError(err)
	}
	return http.StatusCreated, map[string]any{"nonce": hex.EncodeToString(nonce), "expires_at": exp.UTC(),
		"exporter_label": enrol.ExporterLabel}, nil
}

// issuedJSON is an issued certificate: the leaf and issuing CA in PEM.
type issuedJSON struct {
	Realm       string    `json:"realm"`
	Serial      string    `json:"serial"`
	CertSerial  string    `json:"cert_serial"`
	NotAfter    time.Time `json:"not_after"`
	Certificate string    `json:"certificate_pem"`
}

func toIssuedJSON(iss enrol.Issued) issuedJSON {
	var pemChain []byte
	for _, der := range iss.Chain {
		pemChain = append(pemChain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return issuedJSON{Realm: iss.Realm, Serial: iss.Serial, CertSerial: hex.EncodeToString(iss.Cert.SerialNumber.Bytes()),
		NotAfter: iss.Cert.NotAfter.UTC(), Certificate: string(pemChain)}
}

func (o *onboardAPI) enrol(r *request) (int, any, error) {
	svc, err := o.service()
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		Realm     string `json:"realm"`
		Serial    string `json:"serial"`
		Nonce     string `json:"nonce"`
		CSR       []byte `json:"csr"`
		Signature []byte `json:"signature"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	nonce, err := hex.DecodeString(in.Nonce)
	if err != nil {
		return 0, nil, errorf(http.StatusBadRequest, "invalid_challenge", "nonce must be the hex string POST /v1/enrol/challenge returned")
	}
	iss, err := svc.Enrol(r.ctx, enrol.Request{Realm: realmOr(in.Realm), Serial: in.Serial, Nonce: nonce, CSR: in.CSR,
		Signature: in.Signature, Exporter: exporter(r.Request)})
	if err != nil {
		return 0, nil, onboardError(err)
	}
	return http.StatusCreated, toIssuedJSON(iss), nil
}

func (o *onboardAPI) whoami(r *request) (int, any, error) {
	return http.StatusOK, map[string]any{"realm": r.device.Realm, "serial": r.device.Serial,
		"uri": ca.DeviceURI(r.device.Realm, r.device.Serial).String(), "not_after": r.device.Cert.NotAfter.UTC()}, nil
}

func (o *onboardAPI) renew(r *request) (int, any, error) {
	svc, err := o.service()
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		CSR []byte `json:"csr"`
	}
	if err := r.decode(&in); err != nil {
		return 0, nil, err
	}
	iss, err := svc.Renew(r.ctx, peerCerts(r.Request), in.CSR)
	if err != nil {
		return 0, nil, onboardError(err)
	}
	return http.StatusCreated, toIssuedJSON(iss), nil
}

// EST (RFC 7030): bodies are base64 DER, answers base64 PKCS#7 certs-only.

func writeCertsOnly(w http.ResponseWriter, status int, certs [][]byte) {
	w.Header().Set("Content-Type", "application/pkcs7-mime; smime-type=certs-only")
	w.Header().Set("Content-Transfer-Encoding", "base64")
	w.WriteHeader(status)
	_, _ = w.Write(enrol.CertsOnlyBase64(certs))
}

func (o *onboardAPI) estCACerts(w http.ResponseWriter, r *http.Request) {
	if o.ca == nil {
		writeError(w, errorf(http.StatusNotImplemented, "not_implemented", "this server's store holds no CA"))
		return
	}
	writeCertsOnly(w, http.StatusOK, o.ca.CACerts())
}

// readEST reads an EST request body up to enrol.MaxESTBody.
func readEST(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, enrol.MaxESTBody))
	if err != nil {
		return nil, errorf(http.StatusRequestEntityTooLarge, "body_too_large", "an EST request is at most %d bytes of base64", enrol.MaxESTBody)
	}
	return body, nil
}

// estEnroll enrols in the realm the EST label names (the default realm
// without a label).
func (s *Server) estEnroll(w http.ResponseWriter, r *http.Request) {
	s.estAnswer(w, r, func(svc *enrol.Service, body []byte) (enrol.Issued, error) {
		return svc.EnrolEST(r.Context(), realmOr(r.PathValue("label")), body, exporter(r))
	})
}

func (s *Server) estReenroll(w http.ResponseWriter, r *http.Request) {
	s.estAnswer(w, r, func(svc *enrol.Service, body []byte) (enrol.Issued, error) {
		return svc.RenewEST(r.Context(), peerCerts(r), body)
	})
}

// estAnswer runs an EST enrolment and writes its answer: the new
// certificate alone in certs-only (RFC 7030 section 4.2.3), or a JSON error.
func (s *Server) estAnswer(w http.ResponseWriter, r *http.Request, call func(*enrol.Service, []byte) (enrol.Issued, error)) {
	svc, err := s.onboard.service()
	if err != nil {
		writeError(w, s.toAPIError(err, ""))
		return
	}
	body, ae := readEST(w, r)
	if ae != nil {
		writeError(w, ae)
		return
	}
	iss, err := call(svc, body)
	if err != nil {
		writeError(w, s.toAPIError(onboardError(err), w.Header().Get("X-Request-Id")))
		return
	}
	writeCertsOnly(w, http.StatusOK, iss.Chain[:1])
}

type caDeviceJSON struct {
	Realm      string    `json:"realm"`
	Serial     string    `json:"serial"`
	Status     string    `json:"status"`
	PublicKey  string    `json:"public_key"`
	EnrolledAt time.Time `json:"enrolled_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	NotAfter   time.Time `json:"not_after"`
	Certs      int64     `json:"certificates"`
}

func toCADeviceJSON(d store.CADevice) caDeviceJSON {
	return caDeviceJSON{Realm: d.Realm, Serial: d.Serial, Status: d.Status, PublicKey: base64.StdEncoding.EncodeToString(d.SPKI),
		EnrolledAt: d.EnrolledAt.UTC(), UpdatedAt: d.UpdatedAt.UTC(), NotAfter: d.NotAfter.UTC(), Certs: d.Certs}
}

func (o *onboardAPI) listDevices(r *request) (int, any, error) {
	svc, err := o.service()
	if err != nil {
		return 0, nil, err
	}
	after, limit, err := r.page("serial")
	if err != nil {
		return 0, nil, err
	}
	ds, err := svc.Devices(r.ctx, r.realm(), after, limit)
	if err != nil {
		return 0, nil, onboardError(err)
	}
	out := struct {
		Devices []caDeviceJSON `json:"devices"`
		Next    string         `json:"next,omitempty"`
	}{Devices: make([]caDeviceJSON, 0, len(ds))}
	for _, d := range ds {
		out.Devices = append(out.Devices, toCADeviceJSON(d))
	}
	if len(ds) == limit {
		out.Next = ds[len(ds)-1].Serial
	}
	return http.StatusOK, out, nil
}

func pathSerial(r *request) (string, error) {
	serial := r.PathValue("serial")
	if err := ident.CheckName("serial", serial); err != nil {
		return "", errorf(http.StatusBadRequest, "invalid_serial", "%v", err)
	}
	return serial, nil
}

func (o *onboardAPI) getDevice(r *request) (int, any, error) {
	svc, err := o.service()
	if err != nil {
		return 0, nil, err
	}
	serial, err := pathSerial(r)
	if err != nil {
		return 0, nil, err
	}
	d, err := svc.Device(r.ctx, r.realm(), serial)
	if err != nil {
		return 0, nil, onboardError(err)
	}
	return http.StatusOK, toCADeviceJSON(d), nil
}

func (o *onboardAPI) revoke(r *request) (int, any, error) {
	svc, err := o.service()
	if err != nil {
		return 0, nil, err
	}
	serial, err := pathSerial(r)
	if err != nil {
		return 0, nil, err
	}
	var in struct {
		Reason string `json:"reason"`
	}
	if r.ContentLength != 0 {
		if err := r.decode(&in); err != nil {
			return 0, nil, err
		}
	}
	d, err := svc.Revoke(r.ctx, r.realm(), serial, in.Reason, r.actor())
	if err != nil {
		return 0, nil, onboardError(err)
	}
	return http.StatusOK, toCADeviceJSON(d), nil
}

type caCertJSON struct {
	Serial    string    `json:"serial"`
	Device    string    `json:"device"`
	Kind      string    `json:"kind"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

func (o *onboardAPI) listCerts(r *request) (int, any, error) {
	svc, err := o.service()
	if err != nil {
		return 0, nil, err
	}
	after, limit, err := r.page("certificate")
	if err != nil {
		return 0, nil, err
	}
	device := r.URL.Query().Get("device")
	if device != "" {
		if err := ident.CheckName("device", device); err != nil {
			return 0, nil, errorf(http.StatusBadRequest, "invalid_serial", "%v", err)
		}
	}
	cs, err := svc.Certs(r.ctx, r.realm(), device, after, limit)
	if err != nil {
		return 0, nil, onboardError(err)
	}
	out := struct {
		Certs []caCertJSON `json:"certificates"`
		Next  string       `json:"next,omitempty"`
	}{Certs: make([]caCertJSON, 0, len(cs))}
	for _, c := range cs {
		out.Certs = append(out.Certs, caCertJSON{Serial: c.Serial, Device: c.Device, Kind: c.Kind, NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC()})
	}
	if len(cs) == limit {
		out.Next = cs[len(cs)-1].Serial
	}
	return http.StatusOK, out, nil
}
