package fieldsync

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

// Audit kinds written by this package. One constant per kind, so that a
// search finds every writer.
const (
	KindDeviceRegister = "device.register"
	KindDeviceEnrolKey = "device.enrol_code"
	KindDeviceEnrol    = "device.enrol"
	KindDeviceRevoke   = "device.revoke"
	// KindSyncApply summarises an applied upload that changed something.
	KindSyncApply = "sync.apply"
	// KindIncident is a refused upload that looks like an attack or damage
	// (data.incident names which); KindConflict a code accepted twice.
	KindIncident = "sync.incident"
	KindConflict = "sync.conflict"
	// KindOfflinePrefix + the device log's kind records each offline event
	// ("offline.verify.ok", …); kinds this server does not know are
	// recorded as KindOfflineOther with the device's kind in the data.
	KindOfflinePrefix = "offline."
	KindOfflineOther  = "offline.other"
)

// Errors of the device registry.
var (
	// ErrEnrolment: the device id, code or signature of an enrolment does
	// not match a pending device (deliberately not told apart).
	ErrEnrolment = errors.New("fieldsync: no pending device with this id and enrolment code (or the code expired)")
	// ErrBadKey: the public key is not a usable Ed25519 key.
	ErrBadKey = errors.New("fieldsync: not an Ed25519 public key")
)

// EnrolTTL is the default and MaxEnrolTTL the longest life of an enrolment code.
const (
	EnrolTTL    = 24 * time.Hour
	MaxEnrolTTL = 30 * 24 * time.Hour
)

// Register records a device with its public key, made on the device
// ('outpost field init' writes it to device.pub), as an administrator's act.
func (s *Service) Register(ctx context.Context, realm, id string, pub ed25519.PublicKey, actor string) (store.Device, error) {
	if len(pub) != ed25519.PublicKeySize {
		return store.Device{}, ErrBadKey
	}
	d := store.Device{Realm: realm, ID: id, Status: store.DeviceActive, PublicKey: pub, KeyID: keys.KeyID(pub), CreatedAt: s.now()}
	if err := s.Sync.CreateDevice(ctx, d); err != nil {
		return store.Device{}, err
	}
	return d, s.Audit.Record(ctx, KindDeviceRegister, actor, id, map[string]any{"realm": realm, "key_id": d.KeyID})
}

// NewEnrolmentCode creates a pending device (or renews the code of one
// still pending) and returns its one-time enrolment code: 160 random bits,
// printed in groups of four. Only its SHA-256 is stored.
func (s *Service) NewEnrolmentCode(ctx context.Context, realm, id string, ttl time.Duration, actor string) (string, time.Time, error) {
	if ttl <= 0 {
		ttl = EnrolTTL
	}
	if ttl > MaxEnrolTTL {
		return "", time.Time{}, fmt.Errorf("%w: an enrolment code lives at most %v", store.ErrInvalid, MaxEnrolTTL)
	}
	raw := make([]byte, 20)
	if _, err := rand.Read(raw); err != nil {
		return "", time.Time{}, err
	}
	enc := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw)
	var groups []string
	for i := 0; i < len(enc); i += 4 {
		groups = append(groups, enc[i:i+4])
	}
	code := strings.Join(groups, "-")
	h := codeHash(code)
	until := s.now().Add(ttl)
	err := s.Sync.CreateDevice(ctx, store.Device{Realm: realm, ID: id, Status: store.DevicePending, EnrolHash: h, EnrolUntil: until, CreatedAt: s.now()})
	if errors.Is(err, store.ErrExists) {
		if d, gerr := s.Sync.GetDevice(ctx, id); gerr == nil && d.Realm == realm && d.Status == store.DevicePending {
			err = s.Sync.ResetEnrolment(ctx, realm, id, h, until)
		}
	}
	if err != nil {
		return "", time.Time{}, err
	}
	return code, until, s.Audit.Record(ctx, KindDeviceEnrolKey, actor, id, map[string]any{"realm": realm, "until": until.UTC()})
}

// codeHash normalises an enrolment code (case, dashes, spaces) and hashes it.
func codeHash(code string) []byte {
	c := strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(code))
	h := sha256.Sum256([]byte(c))
	return h[:]
}

// Enrol registers a device's key with the one-time code an administrator
// gave it. The code is compared in constant time, the signature proves the
// device holds the private key, and the activation is one conditional write,
// so a code works once.
func (s *Service) Enrol(ctx context.Context, e syncproto.Enrol) (store.Device, error) {
	if err := e.Validate(); err != nil {
		return store.Device{}, err
	}
	d, err := s.Sync.GetDevice(ctx, e.Device)
	if errors.Is(err, store.ErrNotFound) {
		return store.Device{}, ErrEnrolment
	}
	if err != nil {
		return store.Device{}, err
	}
	h := codeHash(e.Code)
	pub := ed25519.PublicKey(e.PublicKey)
	ok := d.Status == store.DevicePending && subtle.ConstantTimeCompare(h, d.EnrolHash) == 1 && s.now().Before(d.EnrolUntil)
	if !ok || !ed25519.Verify(pub, syncproto.EnrolMessage(e.Device, pub, e.Code), e.Sig) {
		return store.Device{}, ErrEnrolment
	}
	if err := s.Sync.ActivateDevice(ctx, e.Device, h, pub, keys.KeyID(pub), s.now()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.Device{}, ErrEnrolment
		}
		return store.Device{}, err
	}
	d, err = s.Sync.GetDevice(ctx, e.Device)
	if err != nil {
		return store.Device{}, err
	}
	return d, s.Audit.Record(ctx, KindDeviceEnrol, "device:"+d.ID, d.ID, map[string]any{"realm": d.Realm, "key_id": d.KeyID})
}

// ExposedBundle is a bundle a revoked device held or was issued: its
// entries are hashes of that token's codes, open to an offline attack by
// whoever has the device (docs/offline.md, threat model).
type ExposedBundle struct {
	syncproto.TokenKey
	Serial   uint64    `json:"serial,omitempty"`
	Type     string    `json:"type,omitempty"`
	First    uint64    `json:"first,omitempty"`
	Last     uint64    `json:"last,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	// Source: "device_log" (the device reported importing it) or
	// "issued" (the audit log shows it was issued for the device).
	Source   string    `json:"source"`
	IssuedAt time.Time `json:"issued_at,omitzero"`
	// Burned: the token's online HOTP counter was moved past the bundle,
	// so none of its codes will ever be accepted online.
	Burned bool `json:"burned,omitempty"`
}

// RevokeReport is what Revoke did and what the administrator should do next.
type RevokeReport struct {
	Device  store.Device    `json:"-"`
	Bundles []ExposedBundle `json:"bundles"`
}

// maxIssueScan bounds how many bundle-issue audit entries Revoke reads.
const maxIssueScan = 100000

// Revoke stops a device from syncing (at once, on every replica: the state
// is in the database) and lists the bundles it holds or was issued, for
// revocation. With burnHOTP, each HOTP token's online counter is moved past
// the last counter of the device's bundle, so that codes an attacker might
// crack from a stolen bundle are refused online; the user's next codes
// (after the window) keep working. TOTP bundles expire at their not-after;
// shorten exposure by disabling the token or rotating static secrets.
func (s *Service) Revoke(ctx context.Context, realm, id string, burnHOTP bool, actor string) (RevokeReport, error) {
	if err := s.Sync.RevokeDevice(ctx, realm, id, s.now()); err != nil {
		return RevokeReport{}, err
	}
	d, err := s.Sync.GetDevice(ctx, id)
	if err != nil {
		return RevokeReport{}, err
	}
	rep := RevokeReport{Device: d, Bundles: []ExposedBundle{}}
	dts, err := s.Sync.ListDeviceTokens(ctx, realm, id)
	if err != nil {
		return rep, err
	}
	for _, t := range dts {
		if t.Serial == 0 {
			continue
		}
		b := ExposedBundle{TokenKey: syncproto.TokenKey{Realm: t.Realm, User: t.UserID, Token: t.TokenID}, Serial: t.Serial,
			Type: t.Type, First: t.First, Last: t.Last, NotAfter: t.NotAfter, Source: "device_log"}
		if burnHOTP && t.Type == "hotp" && t.Last <= syncproto.MaxCounter {
			err := s.Store.AdvanceToken(ctx, t.Realm, t.UserID, t.TokenID, int64(t.Last))
			switch {
			case err == nil, errors.Is(err, store.ErrReplayed):
				b.Burned = true
			case !errors.Is(err, store.ErrNotFound):
				return rep, err
			}
		}
		rep.Bundles = append(rep.Bundles, b)
	}
	// Bundles issued for the device, which it may hold without having
	// reported them yet.
	var before uint64
	for scanned := 0; scanned < maxIssueScan; {
		page, err := s.Sync.FindAudit(ctx, audit.BundleIssue, "", before, store.MaxListLimit)
		if err != nil {
			return rep, err
		}
		if len(page) == 0 {
			break
		}
		scanned += len(page)
		for _, e := range page {
			var v struct {
				Token  string `json:"token"`
				Device string `json:"device"`
			}
			if json.Unmarshal(e.Data, &v) != nil || v.Device != id {
				continue
			}
			rep.Bundles = append(rep.Bundles, ExposedBundle{TokenKey: syncproto.TokenKey{Realm: realm, User: e.Subject, Token: v.Token},
				Source: "issued", IssuedAt: e.Time})
		}
		before = page[len(page)-1].Seq
	}
	return rep, s.Audit.Record(ctx, KindDeviceRevoke, actor, id, map[string]any{"realm": realm, "bundles": len(rep.Bundles), "burn_hotp": burnHOTP})
}

// Devices lists realm's devices with ids after after, in id order.
func (s *Service) Devices(ctx context.Context, realm, after string, limit int) ([]store.Device, error) {
	return s.Sync.ListDevices(ctx, realm, after, limit)
}

// Device returns a device (store.ErrNotFound when there is none).
func (s *Service) Device(ctx context.Context, id string) (store.Device, error) {
	return s.Sync.GetDevice(ctx, id)
}

// DeviceIn returns nil when id is a registered (not pending) device of
// realm, else an error wrapping store.ErrNotFound.
func (s *Service) DeviceIn(ctx context.Context, realm, id string) error {
	d, err := s.Sync.GetDevice(ctx, id)
	if err != nil {
		return err
	}
	if d.Realm != realm || d.Status == store.DevicePending {
		return fmt.Errorf("%w: device %q in realm %q", store.ErrNotFound, id, realm)
	}
	return nil
}

// DeviceTokens returns what the server knows of a device's tokens.
func (s *Service) DeviceTokens(ctx context.Context, realm, device string) ([]store.DeviceToken, error) {
	return s.Sync.ListDeviceTokens(ctx, realm, device)
}
