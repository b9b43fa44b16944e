package fieldsync_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

var ctx = context.Background()

// testKDF keeps bundles cheap; every bundle overrides the floor explicitly.
var testKDF = cost.KDF{Time: 1, MemoryKiB: 64, Threads: 1}

// quick is a device policy without delays, so that tests need no clock moves between failures.
var quick = offline.Policy{MaxFailures: 50, ClockTolerance: 5 * time.Minute, TOTPBack: 1, TOTPForward: 1, HOTPLookahead: 4}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// engines names each engine with a function giving a fresh database.
var engines = []struct {
	name string
	dsn  func(t testing.TB) string
}{
	{"sqlite", storetest.SQLitePath},
	{"postgres", storetest.PostgresDSN},
}

// forEngine runs fn on a fresh harness per engine.
func forEngine(t *testing.T, fn func(t *testing.T, h *harness)) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) { fn(t, newHarness(t, eng.dsn(t))) })
	}
}

// harness is a server (store, online service, sync service) and field devices.
type harness struct {
	t         *testing.T
	st        store.Store
	ss        store.SyncStore
	svc       *fieldsync.Service
	on        *online.Service
	signer    *keys.Signer
	clock     *fakeClock
	tok       store.Token
	seed      []byte
	params    otp.Params
	incidents map[string]int
	mu        sync.Mutex
}

const realm = "acme"

func newHarness(t *testing.T, dsn string) *harness {
	t.Helper()
	st := storetest.Open(t, dsn)
	m, err := keys.MasterFromBytes([]byte("outpost fieldsync test master k!"))
	if err != nil {
		t.Fatal(err)
	}
	// A minute ahead of the real clock, which stamps bundles' issue times:
	// bundles issued by a test are older than the answers of later syncs.
	ck := &fakeClock{t: time.Date(2031, 6, 1, 8, 0, 0, 0, time.UTC)} // years ahead: no test may lean on the wall clock
	al := &audit.Log{Store: st, Now: ck.Now}
	h := &harness{t: t, st: st, ss: st.(store.SyncStore), signer: m.Signer(0), clock: ck, incidents: map[string]int{}}
	h.on = &online.Service{Store: st, Seeds: online.NewSeeds(m), Policy: online.DefaultPolicy, Audit: al, Now: ck.Now}
	h.svc = &fieldsync.Service{Store: st, Sync: h.ss, Audit: al, Signer: h.signer, Now: ck.Now, Workers: 2,
		Incident: func(kind string) { h.mu.Lock(); h.incidents[kind]++; h.mu.Unlock() }}
	must(t, st.CreateRealm(ctx, store.Realm{ID: realm, Name: "ACME"}))
	must(t, st.CreateUser(ctx, store.User{Realm: realm, ID: "alice"}))
	h.tok, h.seed = h.enrol("alice", otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6})
	h.params = otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	return h
}

// enrol creates an active token for user; its first code (counter 0) is consumed by the confirmation.
func (h *harness) enrol(user string, p otp.Params) (store.Token, []byte) {
	h.t.Helper()
	tok, seed, err := h.on.Enrol(ctx, realm, user, p, store.SeedDerived, "test")
	must(h.t, err)
	code, err := p.Generate(seed, 0, h.clock.Now())
	must(h.t, err)
	_, err = h.on.Confirm(ctx, realm, user, tok.ID, code, "test")
	must(h.t, err)
	tok, err = h.st.GetToken(ctx, realm, user, tok.ID)
	must(h.t, err)
	return tok, seed
}

func (h *harness) code(counter uint64) string {
	c, err := h.params.CodeAt(h.seed, counter)
	must(h.t, err)
	return c
}

func (h *harness) count(kind string) int { h.mu.Lock(); defer h.mu.Unlock(); return h.incidents[kind] }

// device is a field store registered with the server.
type device struct {
	h   *harness
	s   *offline.Store
	dir string
	id  string
}

func (h *harness) device(id string) *device {
	h.t.Helper()
	dir := filepath.Join(h.t.TempDir(), id)
	s, err := offline.Init(ctx, dir, offline.Config{DeviceID: id, ServerKey: h.signer.Public, Policy: quick},
		offline.Options{Now: h.clock.Now, Workers: 2})
	must(h.t, err)
	h.t.Cleanup(func() { s.Close() })
	_, err = h.svc.Register(ctx, realm, id, s.DevicePublicKey(), "test")
	must(h.t, err)
	return &device{h: h, s: s, dir: dir, id: id}
}

// bundle issues and imports an HOTP bundle of counters first..first+count-1 for the harness token.
func (d *device) bundle(first uint64, count int, mod func(*bundle.Request)) offline.ImportResult {
	d.h.t.Helper()
	d.h.clock.Advance(time.Second) // a later serial than any bundle before it (serial = issue time)
	req := bundle.Request{Realm: realm, User: d.h.tok.UserID, TokenID: d.h.tok.ID, Params: d.h.params, Secret: d.h.seed, Device: d.id,
		First: first, Count: count, KDF: testKDF, Override: true, Now: d.h.clock.Now(), NotBefore: d.h.clock.Now().Add(-time.Hour), NotAfter: d.h.clock.Now().Add(48 * time.Hour)}
	if mod != nil {
		mod(&req)
	}
	data := d.h.issue(req)
	res, err := d.s.Import(ctx, data)
	must(d.h.t, err)
	return res
}

// issue signs a bundle as the server does: recorded as issued to its device
// before it is handed out.
func (h *harness) issue(req bundle.Request) []byte {
	h.t.Helper()
	data, err := h.tryIssue(req)
	must(h.t, err)
	return data
}

// tryIssue is issue for goroutines (a refill runs in the background).
func (h *harness) tryIssue(req bundle.Request) ([]byte, error) {
	data, _, err := bundle.Issue(ctx, req, h.signer, nil)
	if err != nil {
		return nil, err
	}
	return data, h.svc.RecordIssued(ctx, data, req.Device)
}

func (d *device) verify(counter uint64) error {
	_, err := d.s.Verify(ctx, offline.Attempt{User: d.h.tok.UserID, Code: d.h.code(counter)})
	return err
}

// upload prepares the device's next upload.
func (d *device) upload() []byte {
	d.h.t.Helper()
	up, _, err := d.s.PrepareUpload(ctx, offline.UploadOptions{})
	must(d.h.t, err)
	return up
}

// sync runs one full round: upload, server, answer applied.
func (d *device) sync() (offline.SyncReport, *fieldsync.Result) {
	d.h.t.Helper()
	d.h.clock.Advance(time.Second) // time passes between a bundle's issue and the next sync
	res, err := d.h.svc.Receive(ctx, d.upload(), "test")
	must(d.h.t, err)
	rep, err := d.s.ApplyResponse(ctx, res.Signed)
	must(d.h.t, err)
	return rep, res
}

// identity is the device's signing key, to craft uploads the device would not make.
func (d *device) identity() *keys.Signer {
	d.h.t.Helper()
	id, err := devicelog.LoadOrCreateIdentity(d.dir)
	must(d.h.t, err)
	return &keys.Signer{Private: id.Private, Public: id.Public, KeyID: id.KeyID}
}

// log returns the device's whole log.
func (d *device) log() []eventlog.Entry {
	d.h.t.Helper()
	es, err := devicelog.ReadFile(ctx, filepath.Join(d.dir, offline.DatabaseFile))
	must(d.h.t, err)
	return es
}

// craft signs an upload body as the device, with serial.
func (d *device) craft(serial uint64, u syncproto.Upload) []byte {
	d.h.t.Helper()
	now := d.h.clock.Now()
	data, err := artifact.Sign(d.identity(), artifact.Header{Type: syncproto.UploadType, Version: 1, Subject: d.id, Serial: serial,
		IssuedAt: now, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(10 * time.Minute)}, u)
	must(d.h.t, err)
	return data
}

// decodeUpload reads back an upload the device made (signature checked).
func (d *device) decodeUpload(data []byte) (artifact.Header, syncproto.Upload) {
	d.h.t.Helper()
	hdr, body, err := artifact.Verify(data, artifact.Keys{d.s.DevicePublicKey()}, artifact.Expect{Type: syncproto.UploadType})
	must(d.h.t, err)
	u, err := syncproto.DecodeUpload(body)
	must(d.h.t, err)
	return hdr, u
}

// auditOf returns the audit entries of kind (all when kind is "").
func (h *harness) audit(kind string) []eventlog.Entry {
	h.t.Helper()
	var all []eventlog.Entry
	for {
		page, err := h.st.ListAudit(ctx, uint64(len(all)), 1000)
		must(h.t, err)
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
	}
	if i, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		h.t.Fatalf("audit chain broken at %d: %v", i, err)
	}
	if kind == "" {
		return all
	}
	var out []eventlog.Entry
	for _, e := range all {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// recordedSeqs returns, per device log seq, how often the audit log records it for device id.
func (h *harness) recordedSeqs(id string) map[uint64]int {
	h.t.Helper()
	out := map[uint64]int{}
	for _, e := range h.audit("") {
		if e.Actor != "device:"+id || len(e.Kind) < 8 || e.Kind[:8] != "offline." {
			continue
		}
		var v struct {
			Seq uint64 `json:"seq"`
		}
		must(h.t, json.Unmarshal(e.Data, &v))
		out[v.Seq]++
	}
	return out
}

func (h *harness) lastUsed() int64 {
	h.t.Helper()
	tok, err := h.st.GetToken(ctx, realm, h.tok.UserID, h.tok.ID)
	must(h.t, err)
	return tok.LastUsed
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func signEnrol(k *keys.Signer, id, code string) []byte {
	return ed25519.Sign(k.Private, syncproto.EnrolMessage(id, k.Public, code))
}
