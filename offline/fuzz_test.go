package offline_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/offline"
)

// FuzzDecodeBundle feeds arbitrary bytes to Decode twice: as a bundle file,
// and — when they are JSON — as the body of a correctly signed bundle, so
// that the body checks behind the signature are fuzzed too. Nothing may
// panic, and whatever Decode accepts must satisfy the format's invariants.
//
// The seeds are one-entry bodies of a few hundred bytes, not bundle files:
// Go's minimizer runs the target O(n²) times for an n-byte input, and the
// 1.7 to 11 KB bundle files the fuzzer used to start from cost a worker
// its whole 60 s minimization budget for every new input (a handful of
// executions a minute were reported). A mutated file never passes the
// signature anyway; internal/artifact's FuzzVerify covers the envelope.
func FuzzDecodeBundle(f *testing.F) {
	for _, body := range fuzzBundleBodies(f) {
		f.Add(body)
	}
	s := testSigner(f)
	keys := trusted(f)
	want := bundlefmt.Expect{Device: "dev-1", Now: t0}
	f.Fuzz(func(t *testing.T, data []byte) {
		if b, err := bundlefmt.Decode(data, keys, want); err == nil {
			check(t, b)
		}
		if !json.Valid(data) {
			return
		}
		art, err := artifact.Sign(s, artifact.Header{Type: bundlefmt.BundleType, Version: bundlefmt.BundleVersion, Subject: "dev-1",
			NotBefore: tdFrom, NotAfter: tdUntil}, json.RawMessage(data))
		if err != nil {
			return
		}
		if b, err := bundlefmt.Decode(art, keys, want); err == nil {
			check(t, b)
		}
	})
}

// fuzzBundleBodies are FuzzDecodeBundle's seeds (TestGenerateFuzzSeeds
// writes them to its corpus): the bodies of one-entry HOTP and TOTP+PIN
// bundles, which Decode accepts once signed, and two that it refuses.
func fuzzBundleBodies(t testing.TB) map[string][]byte {
	t.Helper()
	hotp := hotpReq(0, 1)
	totp := totpReq("2468")
	totp.From, totp.Until = t0, t0.Add(30*time.Second)
	out := map[string][]byte{"empty_object": []byte("{}"), "not_json": []byte("this is not a bundle\n")}
	for name, req := range map[string]bundle.Request{"hotp_body": hotp, "totp_pin_body": totp} {
		req.NotBefore, req.NotAfter = tdFrom, tdUntil
		b, err := bundlefmt.Decode(issue(t, req), trusted(t), bundlefmt.Expect{Device: "dev-1", Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		body, err := json.Marshal(b.Body)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = body
	}
	return out
}

func check(t *testing.T, b *bundlefmt.Bundle) {
	t.Helper()
	if b.Count() < 1 || b.Count() > bundlefmt.MaxEntries || b.Last() < b.First || b.Last() > bundlefmt.MaxCounter {
		t.Fatalf("accepted a bundle with %d entries from %d", b.Count(), b.First)
	}
	if err := b.Params.Validate(); err != nil {
		t.Fatalf("accepted invalid params: %v", err)
	}
	if err := b.KDF.Validate(); err != nil {
		t.Fatalf("accepted invalid KDF: %v", err)
	}
	// Exercise the entry path when the KDF is as cheap as the seeds' (about
	// 0.1 ms; at 256 KiB and two passes it is 0.6 ms, more than the rest of
	// the input, and the minimizer runs it thousands of times).
	if b.KDF.MemoryKiB <= 64 && b.KDF.Time == 1 {
		code := "0000000000"[:b.Params.Digits]
		b.OpenEntry(b.First, code, "")
		for _, n := range b.SecretNames() {
			b.OpenSecret(make([]byte, 32), n)
		}
	}
}

// Stand-ins in FuzzApplyResponse's inputs for what the fuzzer cannot know:
// the serial of the upload being answered, the hash of log entry 2 (the
// first import) and a refill bundle signed by the server.
const (
	fuzzSerial = `"@serial"`
	fuzzHash   = `"@hash2"`
	fuzzRefill = `"@bundle"`
)

// fuzzResponseBodies are FuzzApplyResponse's seeds (TestGenerateFuzzSeeds
// writes them to its corpus): answers that ApplyResponse applies, one of
// each kind, and one for an upload the store never made.
var fuzzResponseBodies = map[string]string{
	"ack_and_advance": `{"device":"dev-1","upload_serial":"@serial","acked":2,"acked_hash":"@hash2",` +
		`"tokens":[{"realm":"acme","user":"alice","token":"tok-1","status":"active","last_used":2}]}`,
	"revoke": `{"device":"dev-1","upload_serial":"@serial","acked":0,"tokens":[` +
		`{"realm":"acme","user":"alice","token":"tok-1","status":"disabled","last_used":-1},` +
		`{"realm":"acme","user":"bob","token":"tok-2","status":"deleted","last_used":-1}]}`,
	"refill_and_conflict": `{"device":"dev-1","upload_serial":"@serial","acked":0,"tokens":[],` +
		`"conflicts":[{"realm":"acme","user":"alice","token":"tok-1","counter":1,"device_seq":2,"other":"online","other_audit_seq":7}],` +
		`"refills":[{"realm":"acme","user":"alice","token":"tok-1","bundle":"@bundle"}],` +
		`"no_refill":[{"realm":"acme","user":"bob","token":"tok-2","reason":"the user has a PIN"}]}`,
	"other_upload": `{"device":"dev-1","upload_serial":99,"acked":0,"tokens":[]}`,
}

// FuzzApplyResponse signs arbitrary bodies with the server's key as the
// answer to the store's latest upload and applies them to one real field
// store (SQLite in a temporary directory) holding an HOTP and a TOTP+PIN
// bundle. Nothing may panic; a refused answer must leave the sync state
// (the applied answer, the acknowledged entry) as it was; an applied one
// must move it to this answer and acknowledge no entry beyond the log.
//
// The store lives across executions, as a device's does: answers advance
// and revoke its tokens for good, and each applied answer is followed by a
// new upload for the next one to answer.
func FuzzApplyResponse(f *testing.F) {
	for _, body := range fuzzResponseBodies {
		f.Add([]byte(body))
	}
	c := &fakeClock{t: t0}
	s, err := offline.Init(ctx, f.TempDir(), offline.Config{DeviceID: "dev-1", ServerKey: testSigner(f).Public, Policy: quickPolicy},
		offline.Options{Now: c.Now, Workers: 1})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	for _, req := range []bundle.Request{hotpReq(1, 4), totpReq("2468")} {
		if _, err := s.Import(ctx, issue(f, req)); err != nil {
			f.Fatal(err)
		}
	}
	refill, err := json.Marshal(issue(f, hotpReq(5, 4)))
	if err != nil {
		f.Fatal(err)
	}
	es, err := devicelog.Since(ctx, s.DB(), 1, 1)
	if err != nil || len(es) != 1 {
		f.Fatalf("log entry 2: %v", err)
	}
	hash2, err := json.Marshal(es[0].Hash)
	if err != nil {
		f.Fatal(err)
	}
	server := testSigner(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		before, err := s.SyncState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if before.ResponseSerial >= before.UploadSerial {
			if _, _, err := s.PrepareUpload(ctx, offline.UploadOptions{}); err != nil {
				t.Fatal(err)
			}
			before.UploadSerial++
		}
		serial := before.ResponseSerial + 1
		body = bytes.ReplaceAll(body, []byte(fuzzSerial), strconv.AppendUint(nil, serial, 10))
		body = bytes.ReplaceAll(body, []byte(fuzzHash), hash2)
		body = bytes.ReplaceAll(body, []byte(fuzzRefill), refill)
		now := c.Now()
		data, err := artifact.Sign(server, artifact.Header{Type: syncproto.ResponseType, Version: syncproto.ResponseVersion, Subject: "dev-1",
			Serial: serial, IssuedAt: now, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, json.RawMessage(body))
		if err != nil {
			return
		}
		rep, applyErr := s.ApplyResponse(ctx, data)
		after, err := s.SyncState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if applyErr != nil {
			if after.ResponseSerial != before.ResponseSerial || after.Acked != before.Acked || !bytes.Equal(after.AckedHash, before.AckedHash) {
				t.Fatalf("a refused answer (%v) moved the sync state from %+v to %+v", applyErr, before, after)
			}
			return
		}
		if after.ResponseSerial != serial || after.Acked < before.Acked || after.Acked > after.LogHead || rep.Acked != after.Acked {
			t.Fatalf("applied answer %d left the sync state at %+v (was %+v), report acked %d", serial, after, before, rep.Acked)
		}
	})
}
