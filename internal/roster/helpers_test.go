package roster_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/roster"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/offline"
)

var ctx = context.Background()

const realm = "acme"

func forEngine(t *testing.T, fn func(t *testing.T, h *harness)) {
	for _, eng := range storetest.Engines {
		t.Run(eng.Name, func(t *testing.T) { fn(t, newHarness(t, eng.DSN(t))) })
	}
}

// harness is a server (store, sync, roster) and field devices.
type harness struct {
	t         testing.TB
	st        store.Store
	sync      *fieldsync.Service
	roster    *roster.Service
	signer    *keys.Signer
	clock     *storetest.Clock
	mu        sync.Mutex
	counts    map[string]int
	withdrawn []string
}

func newHarness(t testing.TB, dsn string) *harness {
	t.Helper()
	st := storetest.Open(t, dsn)
	m, err := keys.MasterFromBytes([]byte("outpost roster test master key!!"))
	must(t, err)
	ck := storetest.NewClock(time.Date(2031, 6, 1, 8, 0, 0, 0, time.UTC)) // years ahead: no test leans on the wall clock
	h := &harness{t: t, st: st, signer: m.Signer(0), clock: ck, counts: map[string]int{}}
	h.roster = &roster.Service{Store: st.(store.RosterStore), Now: ck.Now,
		Count: func(e string) { h.mu.Lock(); h.counts[e]++; h.mu.Unlock() },
		OnWithdraw: func(_ context.Context, realm, serial string) error {
			h.mu.Lock()
			h.withdrawn = append(h.withdrawn, realm+"/"+serial)
			h.mu.Unlock()
			return nil
		}}
	h.sync = &fieldsync.Service{Store: st, Sync: st.(store.SyncStore), Audit: &audit.Log{Store: st, Now: ck.Now}, Signer: h.signer,
		Now: ck.Now, Workers: 2, Entries: h.roster}
	must(t, st.CreateRealm(ctx, store.Realm{ID: realm, Name: "ACME"}))
	return h
}

func (h *harness) count(e string) int { h.mu.Lock(); defer h.mu.Unlock(); return h.counts[e] }

// staff is a field device registered with the server.
type staff struct {
	h   *harness
	s   *offline.Store
	dir string
	id  string
	key *keys.Signer
}

// staff registers a field device; allowed lets it vouch.
func (h *harness) staff(id string, allowed bool) *staff {
	h.t.Helper()
	dir := filepath.Join(h.t.TempDir(), id)
	s, err := offline.Init(ctx, dir, offline.Config{DeviceID: id, ServerKey: h.signer.Public}, offline.Options{Now: h.clock.Now, Workers: 1})
	must(h.t, err)
	h.t.Cleanup(func() { s.Close() })
	_, err = h.sync.Register(ctx, realm, id, s.DevicePublicKey(), "test")
	must(h.t, err)
	if allowed {
		_, err := h.roster.Allow(ctx, realm, id, true, "admin")
		must(h.t, err)
	}
	return &staff{h: h, s: s, dir: dir, id: id}
}

// label makes a device key and its label payload; it returns the payload and the key's SPKI.
func label(t testing.TB, serial string) (string, []byte) {
	t.Helper()
	key, err := device.GenerateKey(device.P256)
	must(t, err)
	return labelFor(t, serial, key.Public())
}

func labelFor(t testing.TB, serial string, pub crypto.PublicKey) (string, []byte) {
	t.Helper()
	l, err := device.NewLabel(serial, "gw-100", pub)
	must(t, err)
	p, err := l.Payload()
	must(t, err)
	spki, err := x509.MarshalPKIXPublicKey(pub)
	must(t, err)
	return p, spki
}

func (d *staff) vouch(payload string) offline.Vouched {
	d.h.t.Helper()
	v, err := d.s.Vouch(ctx, offline.VouchRequest{Label: payload, Site: "site-1", Location: "52.37,4.89"})
	must(d.h.t, err)
	return v
}

func (d *staff) upload() []byte {
	d.h.t.Helper()
	up, _, err := d.s.PrepareUpload(ctx, offline.UploadOptions{})
	must(d.h.t, err)
	return up
}

// sync runs one round: upload, server, answer applied.
func (d *staff) sync() *fieldsync.Result {
	d.h.t.Helper()
	d.h.clock.Advance(time.Second)
	res, err := d.h.sync.Receive(ctx, d.upload(), "test")
	must(d.h.t, err)
	_, err = d.s.ApplyResponse(ctx, res.Signed)
	must(d.h.t, err)
	return res
}

// identity is the device's own signing key: what its holder can make sign anything.
func (d *staff) identity() *keys.Signer {
	d.h.t.Helper()
	if d.key == nil {
		id, err := devicelog.LoadOrCreateIdentity(d.dir)
		must(d.h.t, err)
		d.key = &keys.Signer{Private: id.Private, Public: id.Public, KeyID: id.KeyID}
	}
	return d.key
}

// forge appends entries (data as given) to the device's acknowledged log
// head and signs the upload with the device's own key, as its holder could.
func (d *staff) forge(serial uint64, datas ...any) []byte {
	d.h.t.Helper()
	return d.forgeAt(serial, d.h.clock.Now(), datas...)
}

// forgeAt is forge with the entries dated at.
func (d *staff) forgeAt(serial uint64, at time.Time, datas ...any) []byte {
	d.h.t.Helper()
	dev, err := d.h.st.(store.SyncStore).GetDevice(ctx, d.id)
	must(d.h.t, err)
	var prev *eventlog.Entry
	if dev.AckedSeq > 0 {
		prev = &d.log()[dev.AckedSeq-1]
	}
	up, _ := d.sign(serial, prev, at, datas...)
	return up
}

// sign makes the entries of datas (JSON-encoded unless []byte) after prev,
// and an upload of them with serial, all signed with the device's own key.
// It returns the upload and the entries.
func (d *staff) sign(serial uint64, prev *eventlog.Entry, at time.Time, datas ...any) ([]byte, []eventlog.Entry) {
	d.h.t.Helper()
	id := d.identity()
	var after uint64
	if prev != nil {
		after = prev.Seq
	}
	var es []eventlog.Entry
	for _, data := range datas {
		raw, ok := data.([]byte)
		if !ok {
			var err error
			raw, err = json.Marshal(data)
			must(d.h.t, err)
		}
		subject := ""
		var v struct {
			Serial string `json:"serial"`
		}
		if json.Unmarshal(raw, &v) == nil {
			subject = v.Serial
		}
		n, err := eventlog.Next(prev, eventlog.Entry{Time: at, Kind: "vouch", Actor: d.id, Subject: subject, Data: raw}, id.Private)
		if err != nil {
			return nil, nil // not an entry eventlog makes (bounds, JSON)
		}
		es = append(es, n)
		prev = &es[len(es)-1]
	}
	u := syncproto.Upload{Device: d.id, After: after, Entries: es, Head: prev.Seq, HeadHash: prev.Hash, Tokens: []syncproto.TokenState{}}
	now := d.h.clock.Now()
	data, err := artifact.Sign(id, artifact.Header{Type: syncproto.UploadType, Version: syncproto.UploadVersion, Subject: d.id, Serial: serial,
		IssuedAt: now, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(10 * time.Minute)}, u)
	must(d.h.t, err)
	return data, es
}

// log returns the device's whole log.
func (d *staff) log() []eventlog.Entry {
	d.h.t.Helper()
	es, err := devicelog.ReadFile(ctx, filepath.Join(d.dir, offline.DatabaseFile))
	must(d.h.t, err)
	return es
}

// audit returns the audit entries of kind, checking the chain.
func (h *harness) audit(kind string) []eventlog.Entry {
	h.t.Helper()
	all, err := h.st.ListAudit(ctx, 0, 1000)
	must(h.t, err)
	if i, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		h.t.Fatalf("audit chain broken at %d: %v", i, err)
	}
	var out []eventlog.Entry
	for _, e := range all {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func incidentKinds(t testing.TB, es []eventlog.Entry) []string {
	var out []string
	for _, e := range es {
		var v struct {
			Incident string `json:"incident"`
		}
		must(t, json.Unmarshal(e.Data, &v))
		out = append(out, v.Incident)
	}
	return out
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
