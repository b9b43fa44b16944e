package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// Device onboarding (docs/onboarding.md). Like DeliveryStore, an interface
// of its own: every store Open returns also implements CAStore,
//
//	cs, ok := st.(store.CAStore)
//
// and internal/ca (the CA's keys) and internal/enrol (the rules of
// enrolment, renewal and revocation) are its callers. The store knows no
// rule: it writes what it is given, on the conditions stated below, with
// the audit entry in the same transaction. The tables are migration 0009's.

// CAKey is one of the CA's certificates with its sealed private key.
type CAKey struct {
	// Name is "root" or "issuing".
	Name string
	// Cert is the certificate, DER; SealedKey its PKCS#8 private key sealed
	// under a master-derived key (internal/ca).
	Cert, SealedKey []byte
	CreatedAt       time.Time
}

// CADevice is an onboarded device: one per (realm, serial).
type CADevice struct {
	Realm, Serial string
	// SPKI is the device key's PKIX SubjectPublicKeyInfo, DER.
	SPKI []byte
	// Status is CADeviceActive or CADeviceRevoked.
	Status                string
	EnrolledAt, UpdatedAt time.Time
	// NotAfter is the expiry of the latest certificate issued to it;
	// Certs counts them.
	NotAfter time.Time
	Certs    int64
}

// Device statuses.
const (
	CADeviceActive  = "active"
	CADeviceRevoked = "revoked"
)

// CACert is a certificate issued to a device.
type CACert struct {
	// Serial is the certificate's serial number in lower-case hex.
	Serial, Realm, Device string
	// Kind is "enrol" or "renew".
	Kind                string
	NotBefore, NotAfter time.Time
	DER                 []byte
}

// Challenge is a single-use nonce of first contact, kept by its hash.
type Challenge struct {
	NonceHash     []byte
	Realm, Serial string
	Expires       time.Time
}

// CAStore stores the CA, onboarded devices, their certificates and the
// challenges of first contact.
type CAStore interface {
	// InitCA stores root and issuing with the audit entry e in one
	// transaction, unless a CA is stored already: then nothing is written
	// and created is false (several replicas starting at once agree on the
	// first one's CA; read it back with CAKeys).
	InitCA(ctx context.Context, root, issuing CAKey, e eventlog.Entry) (created bool, err error)
	// CAKeys returns the stored root and issuing CA (ErrNotFound when none).
	CAKeys(ctx context.Context) (root, issuing CAKey, err error)

	// CreateChallenge stores c (ErrExists for a nonce hash already stored)
	// and, in the same transaction, deletes the challenges that expired
	// before prune (the caller's now), so that unused ones do not pile up.
	CreateChallenge(ctx context.Context, c Challenge, prune time.Time) error
	// ConsumeChallenge deletes the challenge with this nonce hash, realm and
	// serial if it expires after now, atomically: of two concurrent calls
	// one at most succeeds. ErrNotFound when there is no such live challenge.
	ConsumeChallenge(ctx context.Context, nonceHash []byte, realm, serial string, now time.Time) error

	// RecordIssue stores certificate c of device d and the audit entry e in
	// one transaction. The device row is created when absent; when present
	// it must hold the same SPKI and be active, and then its UpdatedAt,
	// NotAfter and count of certificates are updated. Otherwise nothing is
	// written and the answer is ErrConflict (another key holds the serial,
	// or the device is revoked: read it to tell which). ErrNotFound when
	// the realm does not exist.
	RecordIssue(ctx context.Context, d CADevice, c CACert, e eventlog.Entry) error
	// GetCADevice returns realm's device serial (ErrNotFound).
	GetCADevice(ctx context.Context, realm, serial string) (CADevice, error)
	// ListCADevices returns up to limit (1..MaxListLimit) of realm's
	// devices with Serial > after, ordered by Serial.
	ListCADevices(ctx context.Context, realm, after string, limit int) ([]CADevice, error)
	// RevokeCADevice marks an active device revoked at `at`, with the audit
	// entry e in the same transaction. ErrNotFound when there is no such
	// device, ErrConflict when it is revoked already (nothing is written).
	RevokeCADevice(ctx context.Context, realm, serial string, at time.Time, e eventlog.Entry) error
	// ListCACerts returns up to limit (1..MaxListLimit) of realm's
	// certificates with Serial > after, ordered by Serial; with device set,
	// only that device's.
	ListCACerts(ctx context.Context, realm, device, after string, limit int) ([]CACert, error)
}

var _ CAStore = (*sqlStore)(nil)

func checkCAKey(k CAKey) error {
	if k.Name != "root" && k.Name != "issuing" {
		return invalid("CA key name %q: want root or issuing", k.Name)
	}
	if len(k.Cert) == 0 || len(k.SealedKey) == 0 {
		return invalid("CA key %q needs its certificate and sealed key", k.Name)
	}
	return first(checkBlob("CA certificate", k.Cert), checkBlob("sealed CA key", k.SealedKey))
}

func (s *sqlStore) InitCA(ctx context.Context, root, issuing CAKey, e eventlog.Entry) (bool, error) {
	if err := first(checkCAKey(root), checkCAKey(issuing)); err != nil {
		return false, err
	}
	if root.Name != "root" || issuing.Name != "issuing" {
		return false, invalid("InitCA takes the root, then the issuing CA")
	}
	defer s.chainLock()()
	var created bool
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		created = false
		var n int64
		if err := q.queryRow(ctx, `SELECT COUNT(*) FROM ca_keys`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		for _, k := range []CAKey{root, issuing} {
			if _, err := q.exec(ctx, `INSERT INTO ca_keys (name, cert, sealed_key, created_us) VALUES ($1, $2, $3, $4)`,
				k.Name, k.Cert, k.SealedKey, s.stamp(k.CreatedAt)); err != nil {
				return err
			}
		}
		created = true
		_, err := appendAuditIn(ctx, s, q, []eventlog.Entry{e})
		return err
	})
	if errors.Is(err, ErrExists) { // another replica stored its CA first
		return false, nil
	}
	return created, err
}

func (s *sqlStore) CAKeys(ctx context.Context) (CAKey, CAKey, error) {
	rs, err := s.e.reader().query(ctx, `SELECT name, cert, sealed_key, created_us FROM ca_keys ORDER BY name`)
	ks, err := collect(s, rs, err,
		func(r row) (CAKey, error) {
			var k CAKey
			var created int64
			err := r.Scan(&k.Name, &k.Cert, &k.SealedKey, &created)
			k.CreatedAt = fromMicros(created)
			return k, err
		})
	if err != nil {
		return CAKey{}, CAKey{}, err
	}
	var root, issuing CAKey
	for _, k := range ks {
		switch k.Name {
		case "root":
			root = k
		case "issuing":
			issuing = k
		}
	}
	if root.Cert == nil || issuing.Cert == nil {
		return CAKey{}, CAKey{}, fmt.Errorf("%w: no CA stored (run 'outpost ca init' or start 'outpost serve')", ErrNotFound)
	}
	return root, issuing, nil
}

func (s *sqlStore) CreateChallenge(ctx context.Context, c Challenge, prune time.Time) error {
	if err := first(checkID("realm ID", c.Realm), checkID("device serial", c.Serial)); err != nil {
		return err
	}
	if len(c.NonceHash) != 32 || c.Expires.IsZero() {
		return invalid("a challenge needs a 32-byte nonce hash and an expiry")
	}
	return classify(s.e, s.e.transact(ctx, func(q querier) error {
		if _, err := q.exec(ctx, `DELETE FROM enrol_challenges WHERE expires_us < $1`, micros(prune)); err != nil {
			return err
		}
		_, err := q.exec(ctx, `INSERT INTO enrol_challenges (nonce_hash, realm, serial, expires_us) VALUES ($1, $2, $3, $4)`,
			c.NonceHash, c.Realm, c.Serial, micros(c.Expires))
		return err
	}))
}

func (s *sqlStore) ConsumeChallenge(ctx context.Context, nonceHash []byte, realm, serial string, now time.Time) error {
	var n int64
	err := s.e.write(ctx, func(q querier) error {
		var err error
		n, err = q.exec(ctx, `DELETE FROM enrol_challenges WHERE nonce_hash = $1 AND realm = $2 AND serial = $3 AND expires_us > $4`,
			nonceHash, realm, serial, micros(now))
		return err
	})
	return s.mustChange(n, err, "no live challenge for %q in realm %q", serial, realm)
}

func checkCADevice(d CADevice) error {
	if err := first(checkID("realm ID", d.Realm), checkID("device serial", d.Serial)); err != nil {
		return err
	}
	if len(d.SPKI) == 0 {
		return invalid("device %q needs its public key", d.Serial)
	}
	return checkBlob("device public key", d.SPKI)
}

func checkCACert(c CACert) error {
	if err := first(checkID("realm ID", c.Realm), checkID("device serial", c.Device)); err != nil {
		return err
	}
	if c.Serial == "" || len(c.Serial) > 64 || (c.Kind != "enrol" && c.Kind != "renew") {
		return invalid("certificate %q: a hex serial and kind enrol or renew", c.Serial)
	}
	if len(c.DER) == 0 || c.NotAfter.IsZero() {
		return invalid("certificate %q needs its DER and expiry", c.Serial)
	}
	return checkBlob("certificate", c.DER)
}

const caDeviceColumns = `realm, serial, spki, status, enrolled_us, updated_us, not_after_us, certs`

func scanCADevice(r row) (CADevice, error) {
	var d CADevice
	var enrolled, updated, notAfter int64
	err := r.Scan(&d.Realm, &d.Serial, &d.SPKI, &d.Status, &enrolled, &updated, &notAfter, &d.Certs)
	d.EnrolledAt, d.UpdatedAt, d.NotAfter = fromMicros(enrolled), fromMicros(updated), fromMicros(notAfter)
	return d, err
}

const caCertColumns = `serial, realm, device, kind, not_before_us, not_after_us, der`

func scanCACert(r row) (CACert, error) {
	var c CACert
	var nb, na int64
	err := r.Scan(&c.Serial, &c.Realm, &c.Device, &c.Kind, &nb, &na, &c.DER)
	c.NotBefore, c.NotAfter = fromMicros(nb), fromMicros(na)
	return c, err
}

func (s *sqlStore) RecordIssue(ctx context.Context, d CADevice, c CACert, e eventlog.Entry) error {
	if err := first(checkCADevice(d), checkCACert(c)); err != nil {
		return err
	}
	if c.Realm != d.Realm || c.Device != d.Serial {
		return invalid("certificate %q is not the device's", c.Serial)
	}
	at := s.stamp(d.UpdatedAt)
	defer s.chainLock()()
	var changed bool
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		n, err := q.exec(ctx, `INSERT INTO ca_devices (`+caDeviceColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, 1)
			ON CONFLICT (realm, serial) DO UPDATE SET updated_us = excluded.updated_us, not_after_us = excluded.not_after_us,
				certs = ca_devices.certs + 1
			WHERE ca_devices.spki = excluded.spki AND ca_devices.status = $4`,
			d.Realm, d.Serial, d.SPKI, CADeviceActive, at, at, micros(c.NotAfter))
		if err != nil {
			return err
		}
		if changed = n > 0; !changed {
			return nil
		}
		if _, err := q.exec(ctx, `INSERT INTO ca_certs (`+caCertColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			c.Serial, c.Realm, c.Device, c.Kind, micros(c.NotBefore), micros(c.NotAfter), c.DER); err != nil {
			return err
		}
		_, err = appendAuditIn(ctx, s, q, []eventlog.Entry{e})
		return err
	})
	switch {
	case errors.Is(err, errForeignKey):
		return fmt.Errorf("%w: realm %q (create it first)", ErrNotFound, d.Realm)
	case err != nil:
		return err
	case !changed:
		return fmt.Errorf("%w: device %q in realm %q holds another key or is revoked", ErrConflict, d.Serial, d.Realm)
	}
	return nil
}

func (s *sqlStore) GetCADevice(ctx context.Context, realm, serial string) (CADevice, error) {
	d, err := scanCADevice(s.e.reader().queryRow(ctx, `SELECT `+caDeviceColumns+` FROM ca_devices WHERE realm = $1 AND serial = $2`, realm, serial))
	if err != nil {
		return CADevice{}, s.noRows(err, "device %q in realm %q", serial, realm)
	}
	return d, nil
}

func (s *sqlStore) ListCADevices(ctx context.Context, realm, after string, limit int) ([]CADevice, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	rs, err := s.e.reader().query(ctx, `SELECT `+caDeviceColumns+` FROM ca_devices WHERE realm = $1 AND serial > $2 ORDER BY serial LIMIT $3`,
		realm, after, int64(limit))
	return collect(s, rs, err, scanCADevice)
}

func (s *sqlStore) RevokeCADevice(ctx context.Context, realm, serial string, at time.Time, e eventlog.Entry) error {
	defer s.chainLock()()
	var changed bool
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		n, err := q.exec(ctx, `UPDATE ca_devices SET status = $1, updated_us = $2 WHERE realm = $3 AND serial = $4 AND status = $5`,
			CADeviceRevoked, s.stamp(at), realm, serial, CADeviceActive)
		if err != nil {
			return err
		}
		if changed = n > 0; !changed {
			return nil
		}
		_, err = appendAuditIn(ctx, s, q, []eventlog.Entry{e})
		return err
	})
	if err != nil || changed {
		return err
	}
	if _, err := s.GetCADevice(ctx, realm, serial); err != nil {
		return err
	}
	return fmt.Errorf("%w: device %q in realm %q is revoked already", ErrConflict, serial, realm)
}

func (s *sqlStore) ListCACerts(ctx context.Context, realm, device, after string, limit int) ([]CACert, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	rs, err := s.e.reader().query(ctx, `SELECT `+caCertColumns+` FROM ca_certs WHERE realm = $1 AND ($2 = '' OR device = $2) AND serial > $3
		ORDER BY serial LIMIT $4`, realm, device, after, int64(limit))
	return collect(s, rs, err, scanCACert)
}
