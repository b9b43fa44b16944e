// Package enrol is the onboarding service (docs/onboarding.md): first
// contact with proof of possession bound to the TLS connection, EST
// enrolment, renewal over mutual TLS (with a grace after expiry),
// revocation, and the check of a device's certificate at every handshake
// and request. Every rule of who gets a certificate lives here; the CA
// (internal/ca) only signs, and the HTTP front end (internal/server) only
// parses and answers.
//
// First contact, over TLS 1.3 to the device listener:
//
//	nonce, _, err := svc.Challenge(ctx, realm, serial)     // POST /v1/enrol/challenge
//	// the device signs ProofMessage(nonce, exporter) with its label key,
//	// where exporter = ExportKeyingMaterial(ExporterLabel, nil, 32) of
//	// the same connection it sends the answer on
//	iss, err := svc.Enrol(ctx, enrol.Request{...})            // POST /v1/enrol
//
// EST (RFC 7030) enrols with [Service.EnrolEST]: the CSR's
// challengePassword carries the nonce, and optionally the exporter value
// of the connection (see EnrolEST for what each binding is worth).
// Renewal is [Service.Renew], authenticated by the device's certificate;
// [Service.Authenticate] checks that certificate for every handshake
// ([Service.VerifyConnection]) and request. The roster of vouched devices
// is the [Vouches] interface (internal/roster implements it).
//
// Refusals wrap one of the sentinel errors below, are audited
// (device.refused, with the reason) and issue nothing.
package enrol

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/ca"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/store"
)

// Vouches is what enrolment asks of the roster (internal/roster implements it).
type Vouches interface {
	// Live returns nil when the roster holds a vouch for serial with exactly this public key
	// (PKIX SubjectPublicKeyInfo DER) that is neither withdrawn nor expired (an enrolled
	// device's vouch stays live until withdrawn); otherwise an error saying why (no vouch,
	// withdrawn, expired, held for review, key mismatch; the roster audits a key mismatch as an
	// incident itself).
	Live(ctx context.Context, realm, serial string, spki []byte) error
	// Enrolled records that the device got its first certificate.
	Enrolled(ctx context.Context, realm, serial string, spki []byte) error
}

// Defaults of a Service's durations.
const (
	DefaultValidity     = 24 * time.Hour
	DefaultGrace        = 30 * 24 * time.Hour
	DefaultChallengeTTL = 5 * time.Minute
	// backdate is how far before issuance a certificate starts, for devices
	// whose clocks run a little behind.
	backdate = 5 * time.Minute
)

// ExporterLabel is the TLS exporter label (RFC 5705, RFC 8446 section 7.5)
// of the value a device signs at first contact: 32 bytes, no context.
const ExporterLabel = "EXPORTER-outpost-enrol-v1"

// ExporterLen is the exporter value's length.
const ExporterLen = 32

// NonceLen is a challenge nonce's length in bytes (hex on the wire).
const NonceLen = 32

// Refusals. Callers branch on them with errors.Is; the message says what to do.
var (
	ErrNoRoster    = errors.New("enrol: no roster configured: this server cannot check vouches, so it enrols no device")
	ErrInvalid     = errors.New("enrol: invalid request")
	ErrChallenge   = errors.New("enrol: challenge unknown, used or expired: ask for a new one")
	ErrBinding     = errors.New("enrol: the proof is not bound to this connection")
	ErrVouch       = errors.New("enrol: no live vouch for this device and key")
	ErrKeyMismatch = errors.New("enrol: this serial is enrolled with another key")
	ErrRevoked     = errors.New("enrol: this device is revoked")
	ErrExpired     = errors.New("enrol: the certificate has expired")
	ErrNoCert      = errors.New("enrol: no client certificate: connect with the device's certificate")
	ErrNotDevice   = ca.ErrNotDevice
	ErrNoTLS       = errors.New("enrol: not a TLS 1.3 connection with an exporter")
)

// Service is the onboarding service. Its zero durations take the defaults.
type Service struct {
	Store store.CAStore
	Audit *audit.Log
	CA    *ca.Authority
	// Vouches is the roster; nil refuses every enrolment with ErrNoRoster.
	Vouches Vouches
	Now     func() time.Time
	// Validity of a device certificate; Grace: how long after expiry a
	// certificate still renews itself; ChallengeTTL: a nonce's life.
	Validity, Grace, ChallengeTTL time.Duration
	// Observe, when set, hears each outcome: ("enrol"|"renew", path) or
	// ("refused", reason), for metrics.
	Observe func(event, detail string)
}

func (s *Service) now() time.Time { return clock.Or(s.Now)() }

func or(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (s *Service) observe(event, detail string) {
	if s.Observe != nil {
		s.Observe(event, detail)
	}
}

// Issued is a certificate the service issued: the leaf and the chain to
// (not including) the root.
type Issued struct {
	Realm, Serial string
	Cert          *x509.Certificate
	// Chain is the leaf then the issuing CA, DER.
	Chain [][]byte
}

// checkIDs checks a realm (an API id) and a serial (the label's rule).
func checkIDs(realm, serial string) error {
	if err := ident.CheckAPI("realm", realm); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := ident.CheckName("serial", serial); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// refuse audits a refusal (device.refused, data.reason) and returns err.
func (s *Service) refuse(ctx context.Context, realm, serial, reason string, err error) error {
	s.observe("refused", reason)
	if s.Audit != nil {
		subject := serial
		if ident.CheckName("serial", serial) != nil {
			subject = "(invalid)"
		}
		if rerr := s.Audit.Record(ctx, audit.DeviceRefused, "device", subject,
			map[string]string{"realm": ident.Clip(realm), "reason": reason}); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}

// Challenge makes a single-use nonce for realm's device serial, alive for
// ChallengeTTL. Only its hash is stored.
func (s *Service) Challenge(ctx context.Context, realm, serial string) ([]byte, time.Time, error) {
	if err := checkIDs(realm, serial); err != nil {
		return nil, time.Time{}, err
	}
	if s.Vouches == nil {
		return nil, time.Time{}, ErrNoRoster
	}
	nonce := make([]byte, NonceLen)
	if _, err := rand.Read(nonce); err != nil {
		return nil, time.Time{}, err
	}
	now := s.now()
	exp := now.Add(or(s.ChallengeTTL, DefaultChallengeTTL))
	h := sha256.Sum256(nonce)
	if err := s.Store.CreateChallenge(ctx, store.Challenge{NonceHash: h[:], Realm: realm, Serial: serial, Expires: exp}, now); err != nil {
		return nil, time.Time{}, err
	}
	return nonce, exp, nil
}

// ProofMessage is what a device signs at first contact: a domain label,
// the nonce and the TLS exporter value of its connection. ECDSA keys sign
// its SHA-256 (ASN.1 signature), Ed25519 keys sign it as it is.
func ProofMessage(nonce, exporter []byte) []byte {
	m := append([]byte("outpost-enrol-v1\x00"), nonce...)
	return append(m, exporter...)
}

// SignProof signs ProofMessage(nonce, exporter) with a device key.
func SignProof(key crypto.Signer, nonce, exporter []byte) ([]byte, error) {
	msg := ProofMessage(nonce, exporter)
	if _, ok := key.Public().(ed25519.PublicKey); ok {
		return key.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	sum := sha256.Sum256(msg)
	return key.Sign(rand.Reader, sum[:], crypto.SHA256)
}

func verifyProof(pub crypto.PublicKey, msg, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(msg)
		return ecdsa.VerifyASN1(k, sum[:], sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	}
	return false
}

// Request is a first contact: the device's answer to a challenge, and the
// server's own exporter value of the connection it came on.
type Request struct {
	Realm, Serial string
	Nonce         []byte
	// CSR is the PKCS#10 request for the label's key, DER.
	CSR []byte
	// Signature is the device key's signature of ProofMessage(Nonce, its exporter).
	Signature []byte
	// Exporter is the server side's ExportKeyingMaterial(ExporterLabel, nil, 32).
	Exporter []byte
}

// Enrol checks a first contact and issues the device's certificate: the
// exporter is the server's (so an answer relayed from or replayed on
// another connection fails), the signature verifies with the CSR's key,
// the CSR asks for nothing else, the nonce is live and is consumed, the
// roster holds a live vouch for this serial and key, and the serial is not
// enrolled with another key nor revoked. Then it issues, records (audited
// device.enrol) and tells the roster (Enrolled).
func (s *Service) Enrol(ctx context.Context, r Request) (Issued, error) {
	if err := checkIDs(r.Realm, r.Serial); err != nil {
		return Issued{}, s.refuse(ctx, r.Realm, r.Serial, "invalid", err)
	}
	if s.Vouches == nil {
		return Issued{}, s.refuse(ctx, r.Realm, r.Serial, "no_roster", ErrNoRoster)
	}
	if len(r.Exporter) != ExporterLen {
		return Issued{}, s.refuse(ctx, r.Realm, r.Serial, "no_tls", ErrNoTLS)
	}
	csr, err := ParseCSR(r.CSR)
	if err != nil {
		return Issued{}, s.refuse(ctx, r.Realm, r.Serial, "csr", err)
	}
	if err := checkSubject(csr, r.Serial); err != nil {
		return Issued{}, s.refuse(ctx, r.Realm, r.Serial, "csr", err)
	}
	if len(r.Nonce) != NonceLen || !verifyProof(csr.Req.PublicKey, ProofMessage(r.Nonce, r.Exporter), r.Signature) {
		return Issued{}, s.refuse(ctx, r.Realm, r.Serial, "binding", fmt.Errorf("%w: the signature does not verify over the nonce and this connection's exporter value with the CSR's key (a proof made on another connection, or by another key)", ErrBinding))
	}
	if err := s.consume(ctx, r.Realm, r.Serial, r.Nonce); err != nil {
		return Issued{}, err
	}
	return s.first(ctx, r.Realm, r.Serial, csr, "json")
}

// EnrolEST is EST simpleenroll (RFC 7030 section 4.2.1) for realm. The
// serial is the CSR's common name. Its challengePassword is the one-time
// token: the hex nonce of POST /v1/enrol/challenge, optionally followed by
// "." and the hex exporter value of this connection (RFC 7030 section 3.5's
// channel binding, with the TLS 1.3 exporter in place of tls-unique). With
// the exporter, the CSR's signature binds the request to the connection as
// Enrol does; with the nonce alone (what openssl req and curl can do from
// a shell) the request is bound to the nonce, which is single-use and
// short-lived, but not to the connection: a CSR captured before use could
// be sent on another connection. Either way the certificate is for the
// CSR's key, which the roster's vouch names, and useless without its
// private key.
func (s *Service) EnrolEST(ctx context.Context, realm string, body []byte, exporter []byte) (Issued, error) {
	csr, err := DecodeESTBody(body)
	if err != nil {
		return Issued{}, s.refuse(ctx, realm, "", "csr", err)
	}
	serial := csr.Req.Subject.CommonName
	if err := checkIDs(realm, serial); err != nil {
		return Issued{}, s.refuse(ctx, realm, serial, "invalid", fmt.Errorf("%w (the CSR's common name must be the device serial)", err))
	}
	if s.Vouches == nil {
		return Issued{}, s.refuse(ctx, realm, serial, "no_roster", ErrNoRoster)
	}
	nonceHex, bound, hasBinding := strings.Cut(csr.ChallengePassword, ".")
	nonce, err := hex.DecodeString(nonceHex)
	if err != nil || len(nonce) != NonceLen {
		return Issued{}, s.refuse(ctx, realm, serial, "challenge", fmt.Errorf("%w: put the hex nonce of POST /v1/enrol/challenge in the CSR's challengePassword", ErrChallenge))
	}
	if hasBinding {
		got, err := hex.DecodeString(bound)
		if err != nil || len(exporter) != ExporterLen || subtle.ConstantTimeCompare(got, exporter) != 1 {
			return Issued{}, s.refuse(ctx, realm, serial, "binding", fmt.Errorf("%w: the challengePassword's exporter value is not this connection's", ErrBinding))
		}
	}
	if err := s.consume(ctx, realm, serial, nonce); err != nil {
		return Issued{}, err
	}
	path := "est"
	if hasBinding {
		path = "est_bound"
	}
	return s.first(ctx, realm, serial, csr, path)
}

func checkSubject(csr *CSR, serial string) error {
	if cn := csr.Req.Subject.CommonName; cn != "" && cn != serial {
		return csrError("its common name %q is not the serial %q", ident.Clip(cn), serial)
	}
	return nil
}

func (s *Service) consume(ctx context.Context, realm, serial string, nonce []byte) error {
	h := sha256.Sum256(nonce)
	err := s.Store.ConsumeChallenge(ctx, h[:], realm, serial, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return s.refuse(ctx, realm, serial, "challenge", fmt.Errorf("%w (a nonce is for one serial, used once, within %v)", ErrChallenge, or(s.ChallengeTTL, DefaultChallengeTTL)))
	}
	return err
}

// first issues a first-contact certificate once the proof has been checked.
func (s *Service) first(ctx context.Context, realm, serial string, csr *CSR, path string) (Issued, error) {
	if err := s.Vouches.Live(ctx, realm, serial, csr.SPKI); err != nil {
		return Issued{}, s.refuse(ctx, realm, serial, "vouch", fmt.Errorf("%w: %w", ErrVouch, err))
	}
	if err := s.standing(ctx, realm, serial, csr.SPKI); err != nil {
		return Issued{}, err
	}
	iss, err := s.issue(ctx, realm, serial, csr, "enrol", audit.DeviceEnrol, path)
	if err != nil {
		return Issued{}, err
	}
	if err := s.Vouches.Enrolled(ctx, realm, serial, csr.SPKI); err != nil {
		return Issued{}, fmt.Errorf("enrol: the roster did not record the enrolment (enrol again): %w", err)
	}
	s.observe("enrol", path)
	return iss, nil
}

// standing refuses a serial held by another key, or revoked.
func (s *Service) standing(ctx context.Context, realm, serial string, spki []byte) error {
	d, err := s.Store.GetCADevice(ctx, realm, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	case subtle.ConstantTimeCompare(d.SPKI, spki) != 1:
		return s.refuse(ctx, realm, serial, "key_mismatch", fmt.Errorf("%w: a second device presents serial %s; it is refused (check the device and its label)", ErrKeyMismatch, serial))
	case d.Status == store.CADeviceRevoked:
		return s.refuse(ctx, realm, serial, "revoked", fmt.Errorf("%w: device %s was revoked; it gets no certificate", ErrRevoked, serial))
	}
	return nil
}

func (s *Service) issue(ctx context.Context, realm, serial string, csr *CSR, kind, auditKind, path string) (Issued, error) {
	now := s.now()
	notAfter := now.Add(or(s.Validity, DefaultValidity))
	der, sn, err := s.CA.IssueDevice(csr.Req.PublicKey, realm, serial, now.Add(-backdate), notAfter)
	if err != nil {
		return Issued{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Issued{}, err
	}
	data, _ := json.Marshal(map[string]any{"realm": realm, "cert": sn, "not_after": notAfter.UTC(), "path": path})
	e := eventlog.Entry{Time: now, Kind: auditKind, Actor: "device:" + serial, Subject: serial, Data: data}
	err = s.Store.RecordIssue(ctx, store.CADevice{Realm: realm, Serial: serial, SPKI: csr.SPKI, UpdatedAt: now},
		store.CACert{Serial: sn, Realm: realm, Device: serial, Kind: kind, NotBefore: cert.NotBefore, NotAfter: notAfter, DER: der}, e)
	if errors.Is(err, store.ErrConflict) { // revoked or taken since standing was read
		if serr := s.standing(ctx, realm, serial, csr.SPKI); serr != nil {
			return Issued{}, serr
		}
	}
	if errors.Is(err, store.ErrNotFound) { // no such realm
		return Issued{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err != nil {
		return Issued{}, err
	}
	return Issued{Realm: realm, Serial: serial, Cert: cert, Chain: [][]byte{der, s.CA.Issuing.Raw}}, nil
}

// Identity is a device authenticated by its certificate.
type Identity struct {
	ca.Identity
	// Expired is set when the certificate has expired but is within the
	// grace: only renewal accepts it.
	Expired bool
}

// Authenticate checks the certificate chain a device presented (leaf
// first): issued by this CA, for clientAuth, naming an enrolled device
// with this very key that is not revoked and whose vouch is live. A
// certificate past its expiry is accepted only with grace set and less
// than Grace after it expired (Identity.Expired is then true); beyond that
// the device must enrol again (ErrExpired).
func (s *Service) Authenticate(ctx context.Context, certs []*x509.Certificate, grace bool) (Identity, error) {
	if len(certs) == 0 {
		return Identity{}, ErrNoCert
	}
	leaf, now := certs[0], s.now()
	var id Identity
	var err error
	if now.After(leaf.NotAfter) && s.CA.IssuedHere(leaf) {
		switch {
		case !grace:
			return Identity{}, fmt.Errorf("%w: it expired at %s; renew it (outpost device renew)", ErrExpired, leaf.NotAfter.UTC().Format(time.RFC3339))
		case now.Sub(leaf.NotAfter) > or(s.Grace, DefaultGrace):
			return Identity{}, fmt.Errorf("%w: it expired at %s, more than the grace of %v ago; enrol again (first contact)", ErrExpired, leaf.NotAfter.UTC().Format(time.RFC3339), or(s.Grace, DefaultGrace))
		}
		id.Expired = true
		id.Identity, err = s.CA.VerifyDevice(leaf, leaf.NotAfter)
	} else {
		id.Identity, err = s.CA.VerifyDevice(leaf, now)
	}
	if err != nil {
		return Identity{}, err
	}
	d, err := s.Store.GetCADevice(ctx, id.Realm, id.Serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Identity{}, fmt.Errorf("%w: no enrolled device %s", ErrNotDevice, id.Serial)
	case err != nil:
		return Identity{}, err
	case d.Status == store.CADeviceRevoked:
		return Identity{}, fmt.Errorf("%w: device %s was revoked", ErrRevoked, id.Serial)
	case subtle.ConstantTimeCompare(d.SPKI, leaf.RawSubjectPublicKeyInfo) != 1:
		return Identity{}, fmt.Errorf("%w: the certificate's key is not device %s's", ErrNotDevice, id.Serial)
	}
	if s.Vouches == nil {
		return Identity{}, ErrNoRoster
	}
	if err := s.Vouches.Live(ctx, id.Realm, id.Serial, d.SPKI); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrVouch, err)
	}
	return id, nil
}

// VerifyConnection is a tls.Config.VerifyConnection for the device
// listener (which requests, but does not require, a client certificate):
// a connection without one passes (first contact; routes that need one
// refuse it), one with a certificate passes only when Authenticate with
// the grace accepts it, so that another CA's, a revoked device's or a
// long-expired certificate fails the handshake itself. It reads the
// device's status per handshake.
func (s *Service) VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.Check(ctx, cs.PeerCertificates, true)
	return err
}

// Check is Authenticate that audits and counts its refusals (device.refused
// with the reason), except a missing certificate, which is no attack: the
// check of every handshake and of every request that needs a certificate.
func (s *Service) Check(ctx context.Context, certs []*x509.Certificate, grace bool) (Identity, error) {
	id, err := s.Authenticate(ctx, certs, grace)
	if err == nil || errors.Is(err, ErrNoCert) {
		return id, err
	}
	realm, serial := claimed(certs)
	return Identity{}, s.refuse(ctx, realm, serial, reasonOf(err), err)
}

// claimed is the realm and serial a certificate claims, unverified, for
// the audit entry of its refusal ("" when it names none).
func claimed(certs []*x509.Certificate) (realm, serial string) {
	if len(certs) == 0 || len(certs[0].URIs) != 1 {
		return "", ""
	}
	rest, ok := strings.CutPrefix(certs[0].URIs[0].String(), ca.URIPrefix)
	if !ok {
		return "", ""
	}
	realm, serial, _ = strings.Cut(rest, ":")
	return realm, serial
}

// Renew issues a new certificate for an authenticated device (Authenticate
// with the grace) for the same key: the CSR's key must be the
// certificate's. The roster's vouch must still be live.
func (s *Service) Renew(ctx context.Context, peer []*x509.Certificate, csrDER []byte) (Issued, error) {
	id, err := s.Check(ctx, peer, true)
	if err != nil {
		return Issued{}, err
	}
	csr, err := ParseCSR(csrDER)
	if err != nil {
		return Issued{}, s.refuse(ctx, id.Realm, id.Serial, "csr", err)
	}
	if err := checkSubject(csr, id.Serial); err != nil {
		return Issued{}, s.refuse(ctx, id.Realm, id.Serial, "csr", err)
	}
	if subtle.ConstantTimeCompare(csr.SPKI, id.Cert.RawSubjectPublicKeyInfo) != 1 {
		return Issued{}, s.refuse(ctx, id.Realm, id.Serial, "key_change", fmt.Errorf("%w: a renewal keeps the key; this CSR is for another key (a new key needs a new label and vouch)", ErrCSR))
	}
	iss, err := s.issue(ctx, id.Realm, id.Serial, csr, "renew", audit.DeviceRenew, map[bool]string{true: "grace", false: "live"}[id.Expired])
	if err != nil {
		return Issued{}, err
	}
	s.observe("renew", map[bool]string{true: "grace", false: "live"}[id.Expired])
	return iss, nil
}

// RenewEST is Renew for an EST simplereenroll body (base64 PKCS#10).
func (s *Service) RenewEST(ctx context.Context, peer []*x509.Certificate, body []byte) (Issued, error) {
	csr, err := DecodeESTBody(body)
	if err != nil {
		return Issued{}, s.refuse(ctx, "", "", "csr", err)
	}
	return s.Renew(ctx, peer, csr.Req.Raw)
}

// reasonOf names an authentication failure for the audit log and metrics.
func reasonOf(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{{ErrNoCert, "no_cert"}, {ErrExpired, "expired"}, {ErrRevoked, "revoked"}, {ErrVouch, "vouch"}, {ErrNoRoster, "no_roster"}, {ErrNotDevice, "not_device"}} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "error"
}

// Revoke revokes realm's device serial (audited device.revoke by actor,
// with reason, free text of at most 256 bytes) and returns it: it gets no
// certificate again, and its current one fails at the next handshake and
// request.
// store.ErrNotFound for an unknown device, store.ErrConflict when it is
// revoked already.
func (s *Service) Revoke(ctx context.Context, realm, serial, reason, actor string) (store.CADevice, error) {
	if err := checkIDs(realm, serial); err != nil {
		return store.CADevice{}, err
	}
	if err := ident.CheckText("reason", reason); err != nil {
		return store.CADevice{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	now := s.now()
	data, _ := json.Marshal(map[string]string{"realm": realm, "reason": reason})
	if err := s.Store.RevokeCADevice(ctx, realm, serial, now, eventlog.Entry{Time: now, Kind: audit.DeviceRevoke, Actor: actor, Subject: serial, Data: data}); err != nil {
		return store.CADevice{}, err
	}
	return s.Store.GetCADevice(ctx, realm, serial)
}

// Device returns realm's device serial (store.ErrNotFound).
func (s *Service) Device(ctx context.Context, realm, serial string) (store.CADevice, error) {
	if err := checkIDs(realm, serial); err != nil {
		return store.CADevice{}, err
	}
	return s.Store.GetCADevice(ctx, realm, serial)
}

// Devices lists realm's devices after a serial, limit at a time.
func (s *Service) Devices(ctx context.Context, realm, after string, limit int) ([]store.CADevice, error) {
	return s.Store.ListCADevices(ctx, realm, after, limit)
}

// Certs lists realm's certificates (device's only when set) after a serial number.
func (s *Service) Certs(ctx context.Context, realm, device, after string, limit int) ([]store.CACert, error) {
	return s.Store.ListCACerts(ctx, realm, device, after, limit)
}
