package fieldsync_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

// fuzzUploads are FuzzReceive's seeds (also in testdata/fuzz/FuzzReceive):
// upload bodies of device dev-1, whose log is init, import, and the
// attempt and acceptance of counter 1. "@entryN" stands for the device's log entry N
// ("@hashN" for its hash, the head_hash), which the
// harness splices in: entries are signed by the device's key, which is
// made afresh for every run, so a checked-in entry could never verify.
var fuzzUploads = map[string]string{
	"whole_log":    `{"device":"dev-1","after":0,"entries":["@entry1","@entry2","@entry3","@entry4"],"head":4,"head_hash":"@hash4","tokens":[` + fuzzTokenState + `]}`,
	"after_two":    `{"device":"dev-1","after":2,"entries":["@entry3","@entry4"],"head":4,"head_hash":"@hash4","tokens":[` + fuzzTokenState + `]}`,
	"more_to_come": `{"device":"dev-1","after":0,"entries":["@entry1"],"head":4,"head_hash":"@hash4","tokens":[]}`,
	"state_only": `{"device":"dev-1","after":4,"entries":[],"head":4,"head_hash":"@hash4","tokens":[` + fuzzTokenState + `,` +
		`{"realm":"acme","user":"bob","token":"tok-9","last_used":-1,"failures":3,"wiped":true,"remaining":0}]}`,
	"unsigned_file": `{"outpost_artifact":1,"kid":"ed25519:0000000000000000","payload":"e30=","sig":"AAAA"}`,
}

const fuzzTokenState = `{"realm":"acme","user":"alice","token":"tok-1","last_used":1,"failures":0,"type":"hotp","serial":7,` +
	`"first":1,"last":4,"remaining":3,"secrets":0}`

// FuzzReceive runs Receive end to end on a real store (SQLite in a
// temporary directory) with a registered device: each input is tried as an
// upload file, as anyone may post one, and — when it is JSON — as the body
// of an upload signed by the device with its next serial, so that the
// checks behind the signature (chain, replay, state, apply) are fuzzed
// too. Nothing may panic. A refused upload must leave the device's
// acknowledgement, applied serial and the token's online state as they
// were; an accepted one must advance the serial and answer with a response
// signed by the server for that upload.
//
// The store lives across executions, as a server's does: accepted uploads
// raise the token's state for good. Refusals are audited once per serial
// and kind, so most executions only read.
//
// Real signed uploads are not seeds: a mutated one never passes the
// signature, and at 2 KB the minimizer would spend its whole budget on
// each (see site's FuzzPackageBody). The setup checks instead that the
// device's own upload is accepted and that the whole_log seed is too.
func FuzzReceive(f *testing.F) {
	for _, body := range fuzzUploads {
		f.Add([]byte(body))
	}
	fx := newFuzzFixture(f)
	if _, err := fx.svc.Receive(ctx, fx.deviceUpload, "fuzz"); err != nil {
		f.Fatalf("the device's own upload is refused: %v", err)
	}
	if _, err := fx.svc.Receive(ctx, fx.sign(f, []byte(fuzzUploads["whole_log"])), "fuzz"); err != nil {
		f.Fatalf("the whole_log seed is refused: %v", err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fx.receive(t, data)
		if json.Valid(data) {
			fx.receive(t, fx.sign(t, data))
		}
	})
}

type fuzzFixture struct {
	st           store.Store
	ss           store.SyncStore
	svc          *fieldsync.Service
	server       *keys.Signer
	device       *keys.Signer
	clock        *fakeClock
	entries      map[string][]byte // "@entryN" → entry N's JSON, "@hashN" → its hash
	deviceUpload []byte
}

func newFuzzFixture(f *testing.F) *fuzzFixture {
	st := storetest.Open(f, storetest.SQLitePath(f))
	m, err := keys.MasterFromBytes([]byte("outpost fieldsync test master k!"))
	must(f, err)
	// Years ahead: nothing here may lean on the wall clock.
	ck := &fakeClock{t: time.Date(2031, 6, 1, 8, 0, 0, 0, time.UTC)}
	fx := &fuzzFixture{st: st, ss: st.(store.SyncStore), server: m.Signer(0), clock: ck, entries: map[string][]byte{}}
	fx.svc = &fieldsync.Service{Store: st, Sync: fx.ss, Audit: &audit.Log{Store: st, Now: ck.Now}, Signer: fx.server, Now: ck.Now, Workers: 1}
	must(f, st.CreateRealm(ctx, store.Realm{ID: realm, Name: "ACME"}))
	must(f, st.CreateUser(ctx, store.User{Realm: realm, ID: "alice"}))
	must(f, st.CreateToken(ctx, store.Token{Realm: realm, UserID: "alice", ID: "tok-1", Type: "hotp", Algorithm: "SHA1", Digits: 6,
		SeedMode: store.SeedDerived, Status: store.TokenActive, CreatedAt: ck.Now()}))

	dir := filepath.Join(f.TempDir(), "dev-1")
	dev, err := offline.Init(ctx, dir, offline.Config{DeviceID: "dev-1", ServerKey: fx.server.Public, Policy: quick},
		offline.Options{Now: ck.Now, Workers: 1})
	must(f, err)
	defer dev.Close()
	_, err = fx.svc.Register(ctx, realm, "dev-1", dev.DevicePublicKey(), "test")
	must(f, err)
	secret := []byte("12345678901234567890")
	params := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	data, _, err := bundle.Issue(ctx, bundle.Request{Realm: realm, User: "alice", TokenID: "tok-1", Params: params, Secret: secret,
		Device: "dev-1", First: 1, Count: 4, Serial: 7, KDF: testKDF, Override: true,
		Now: ck.Now(), NotBefore: ck.Now().Add(-time.Hour), NotAfter: ck.Now().Add(48 * time.Hour)}, fx.server, nil)
	must(f, err)
	_, err = dev.Import(ctx, data)
	must(f, err)
	code, err := params.CodeAt(secret, 1)
	must(f, err)
	_, err = dev.Verify(ctx, offline.Attempt{User: "alice", Code: code})
	must(f, err)

	es, err := devicelog.ReadFile(ctx, filepath.Join(dir, offline.DatabaseFile))
	must(f, err)
	if len(es) != 4 {
		f.Fatalf("the device log has %d entries, the seeds expect 4", len(es))
	}
	for _, e := range es {
		b, err := json.Marshal(e)
		must(f, err)
		fx.entries[fmt.Sprintf(`"@entry%d"`, e.Seq)] = b
		h, err := json.Marshal(e.Hash)
		must(f, err)
		fx.entries[fmt.Sprintf(`"@hash%d"`, e.Seq)] = h
	}
	fx.deviceUpload, _, err = dev.PrepareUpload(ctx, offline.UploadOptions{})
	must(f, err)
	id, err := devicelog.LoadOrCreateIdentity(dir)
	must(f, err)
	fx.device = &keys.Signer{Private: id.Private, Public: id.Public, KeyID: id.KeyID}
	return fx
}

// sign splices the device's entries into body and signs it as the
// device's next upload (or, if body is not JSON, returns nil).
func (fx *fuzzFixture) sign(t testing.TB, body []byte) []byte {
	d, err := fx.ss.GetDevice(ctx, "dev-1")
	must(t, err)
	for k, v := range fx.entries {
		body = bytes.ReplaceAll(body, []byte(k), v)
	}
	now := fx.clock.Now()
	data, err := artifact.Sign(fx.device, artifact.Header{Type: syncproto.UploadType, Version: syncproto.UploadVersion, Subject: "dev-1",
		Serial: d.UploadSerial + 1, IssuedAt: now, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(10 * time.Minute)}, json.RawMessage(body))
	if err != nil {
		return nil
	}
	return data
}

// state is what a refused upload must not change.
type fuzzState struct {
	acked, serial uint64
	ackedHash     []byte
	used          int64
}

func (fx *fuzzFixture) state(t *testing.T) fuzzState {
	d, err := fx.ss.GetDevice(ctx, "dev-1")
	must(t, err)
	tok, err := fx.st.GetToken(ctx, realm, "alice", "tok-1")
	must(t, err)
	return fuzzState{d.AckedSeq, d.UploadSerial, d.AckedHash, tok.LastUsed}
}

func (fx *fuzzFixture) receive(t *testing.T, data []byte) {
	if data == nil {
		return
	}
	before := fx.state(t)
	res, err := fx.svc.Receive(ctx, data, "fuzz")
	after := fx.state(t)
	if err != nil {
		if after.acked != before.acked || after.serial != before.serial || !bytes.Equal(after.ackedHash, before.ackedHash) || after.used != before.used {
			t.Fatalf("a refused upload (%v) changed the state from %+v to %+v", err, before, after)
		}
		return
	}
	h, body, err := artifact.Verify(res.Signed, artifact.Keys{fx.server.Public}, artifact.Expect{Type: syncproto.ResponseType, Subject: "dev-1"})
	if err != nil {
		t.Fatalf("the answer does not verify: %v", err)
	}
	resp, err := syncproto.DecodeResponse(body)
	if err != nil {
		t.Fatalf("the answer does not decode: %v", err)
	}
	if resp.UploadSerial != h.Serial || h.Serial != after.serial || after.serial < before.serial || after.acked < before.acked ||
		resp.Acked != after.acked || after.used < before.used {
		t.Fatalf("accepted upload: state %+v → %+v, answer serial %d acked %d", before, after, h.Serial, resp.Acked)
	}
}
