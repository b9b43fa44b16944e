package syncproto_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

var update = flag.Bool("update", false, "rewrite the testdata files")

// Fixed keys and times, so that the checked-in files are reproducible.
func signer(name string) *keys.Signer {
	seed := sha256.Sum256([]byte("outpost syncproto testdata " + name))
	priv := ed25519.NewKeyFromSeed(seed[:])
	pub := priv.Public().(ed25519.PublicKey)
	return &keys.Signer{Private: priv, Public: pub, KeyID: keys.KeyID(pub)}
}

var (
	device = signer("device dev-7")
	server = signer("server")
	t0     = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

// deviceLog is a small signed device log: an import, then attempts and acceptances.
func deviceLog(t testing.TB) []eventlog.Entry {
	t.Helper()
	var log []eventlog.Entry
	add := func(kind string, data string) {
		var prev *eventlog.Entry
		if len(log) > 0 {
			prev = &log[len(log)-1]
		}
		e, err := eventlog.Next(prev, eventlog.Entry{Time: t0.Add(time.Duration(len(log)) * time.Second), Kind: kind, Actor: "dev-7",
			Subject: "alice", Data: json.RawMessage(data)}, device.Private)
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, e)
	}
	add("import", `{"realm":"acme","token":"tok-1","serial":1,"type":"hotp","first":1,"last":20}`)
	for c := 1; c <= 3; c++ {
		add("verify.attempt", fmt.Sprintf(`{"realm":"acme","token":"tok-1","serial":1,"from":%d,"to":%d}`, c, c+4))
		add("verify.ok", fmt.Sprintf(`{"realm":"acme","token":"tok-1","serial":1,"counter":%d}`, c))
	}
	return log
}

func goodUpload(t testing.TB) syncproto.Upload {
	log := deviceLog(t)
	return syncproto.Upload{Device: "dev-7", After: 0, Entries: log, Head: uint64(len(log)), HeadHash: log[len(log)-1].Hash,
		Tokens: []syncproto.TokenState{{Realm: "acme", User: "alice", Token: "tok-1", LastUsed: 3, Type: "hotp", Serial: 1,
			First: 1, Last: 20, Remaining: 17, NotAfter: t0.Add(24 * time.Hour)}}}
}

func goodResponse(t testing.TB) syncproto.Response {
	log := deviceLog(t)
	return syncproto.Response{Device: "dev-7", UploadSerial: 1, Acked: uint64(len(log)), AckedHash: log[len(log)-1].Hash,
		Tokens:    []syncproto.ServerToken{{TokenKey: syncproto.TokenKey{Realm: "acme", User: "alice", Token: "tok-1"}, Status: "active", LastUsed: 5}},
		Conflicts: []syncproto.Conflict{{TokenKey: syncproto.TokenKey{Realm: "acme", User: "alice", Token: "tok-1"}, Counter: 3, DeviceSeq: 7, Other: "online", OtherAuditSeq: 12}}}
}

func sign(t testing.TB, s *keys.Signer, typ string, body any) []byte {
	t.Helper()
	data, err := artifact.Sign(s, artifact.Header{Type: typ, Version: 1, Subject: "dev-7", Serial: 1, IssuedAt: t0,
		NotBefore: t0.Add(-time.Minute), NotAfter: t0.Add(syncproto.FileValidity)}, body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// rawBody signs a hand-written body (for fields the Go types cannot express).
func rawBody(t testing.TB, s *keys.Signer, typ, body string) []byte {
	return sign(t, s, typ, json.RawMessage(body))
}

type testFile struct {
	name string
	data func(t testing.TB) []byte
	// want: the error of artifact.Verify or of decoding; nil for good files.
	want error
	// chain: the entries decode but their chain does not verify.
	chain bool
}

func uploadWith(mod func(u *syncproto.Upload)) func(t testing.TB) []byte {
	return func(t testing.TB) []byte {
		u := goodUpload(t)
		mod(&u)
		return sign(t, device, syncproto.UploadType, u)
	}
}

func bodyEdit(t testing.TB, v any, edit func(string) string) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return edit(string(b))
}

var files = []testFile{
	{name: "good_upload.sync", data: uploadWith(func(*syncproto.Upload) {})},
	{name: "good_upload_no_entries.sync", data: uploadWith(func(u *syncproto.Upload) { u.After, u.Entries = u.Head, []eventlog.Entry{} })},
	{name: "good_response.answer", data: func(t testing.TB) []byte { return sign(t, server, syncproto.ResponseType, goodResponse(t)) }},
	{name: "fail_truncated.sync", want: artifact.ErrInvalid, data: func(t testing.TB) []byte {
		d := uploadWith(func(*syncproto.Upload) {})(t)
		return d[:len(d)/2]
	}},
	{name: "fail_flipped_bit.sync", want: artifact.ErrBadSig, data: func(t testing.TB) []byte {
		d := uploadWith(func(*syncproto.Upload) {})(t)
		i := bytes.Index(d, []byte(`"payload":"`)) + 40
		d[i] ^= 0x01
		if d[i] == '+' || d[i] == '/' || d[i] == '"' { // keep it base64
			d[i] = 'A'
		}
		return d
	}},
	{name: "fail_trailing_data.sync", want: artifact.ErrInvalid, data: func(t testing.TB) []byte {
		return append(uploadWith(func(*syncproto.Upload) {})(t), []byte(`{}`)...)
	}},
	{name: "fail_not_json.sync", want: artifact.ErrInvalid, data: func(testing.TB) []byte { return []byte("outpost sync\x00\x01") }},
	{name: "fail_unknown_key.sync", want: artifact.ErrUnknownKey, data: func(t testing.TB) []byte {
		return sign(t, signer("another device"), syncproto.UploadType, goodUpload(t))
	}},
	{name: "fail_wrong_type.sync", want: artifact.ErrWrongType, data: func(t testing.TB) []byte {
		return sign(t, device, syncproto.ResponseType, goodUpload(t))
	}},
	{name: "fail_unknown_field.sync", want: syncproto.ErrMalformed, data: func(t testing.TB) []byte {
		return rawBody(t, device, syncproto.UploadType, bodyEdit(t, goodUpload(t), func(s string) string { return strings.Replace(s, `{"device"`, `{"admin":true,"device"`, 1) }))
	}},
	{name: "fail_control_char_device.sync", want: syncproto.ErrMalformed, data: uploadWith(func(u *syncproto.Upload) { u.Device = "dev\n7" })},
	{name: "fail_head_before_entries.sync", want: syncproto.ErrMalformed, data: uploadWith(func(u *syncproto.Upload) { u.Head = 2 })},
	{name: "fail_head_without_hash.sync", want: syncproto.ErrMalformed, data: uploadWith(func(u *syncproto.Upload) { u.HeadHash = nil })},
	{name: "fail_head_short_hash.sync", want: syncproto.ErrMalformed, data: uploadWith(func(u *syncproto.Upload) { u.HeadHash = u.HeadHash[:8] })},
	{name: "fail_duplicate_token.sync", want: syncproto.ErrMalformed, data: uploadWith(func(u *syncproto.Upload) { u.Tokens = append(u.Tokens, u.Tokens[0]) })},
	{name: "fail_last_used_below_none.sync", want: syncproto.ErrMalformed, data: uploadWith(func(u *syncproto.Upload) { u.Tokens[0].LastUsed = -2 })},
	{name: "fail_bundle_range_reversed.sync", want: syncproto.ErrMalformed, data: uploadWith(func(u *syncproto.Upload) { u.Tokens[0].First = 30 })},
	{name: "fail_unknown_otp_type.sync", want: syncproto.ErrMalformed, data: uploadWith(func(u *syncproto.Upload) { u.Tokens[0].Type = "sms" })},
	{name: "fail_negative_after.sync", want: syncproto.ErrMalformed, data: func(t testing.TB) []byte {
		return rawBody(t, device, syncproto.UploadType, bodyEdit(t, goodUpload(t), func(s string) string { return strings.Replace(s, `"after":0`, `"after":-1`, 1) }))
	}},
	{name: "fail_missing_entry.sync", chain: true, data: uploadWith(func(u *syncproto.Upload) { u.Entries = slices.Delete(u.Entries, 2, 3) })},
	{name: "fail_reordered_entries.sync", chain: true, data: uploadWith(func(u *syncproto.Upload) { u.Entries[1], u.Entries[2] = u.Entries[2], u.Entries[1] })},
	{name: "fail_altered_entry.sync", chain: true, data: uploadWith(func(u *syncproto.Upload) { u.Entries[4].Subject = "mallory" })},
	{name: "fail_resigned_entry.sync", chain: true, data: func(t testing.TB) []byte {
		// Rewritten and re-hashed by someone without the device key.
		u := goodUpload(t)
		e := u.Entries[3]
		n, err := eventlog.Next(&u.Entries[2], eventlog.Entry{Time: e.Time, Kind: e.Kind, Actor: e.Actor, Subject: e.Subject, Data: json.RawMessage(`{"counter":9}`)}, signer("thief").Private)
		if err != nil {
			t.Fatal(err)
		}
		u.Entries[3] = n
		return sign(t, device, syncproto.UploadType, u)
	}},
	{name: "fail_response_bad_status.answer", want: syncproto.ErrMalformed, data: func(t testing.TB) []byte {
		r := goodResponse(t)
		r.Tokens[0].Status = "burned"
		return sign(t, server, syncproto.ResponseType, r)
	}},
	{name: "fail_response_short_hash.answer", want: syncproto.ErrMalformed, data: func(t testing.TB) []byte {
		r := goodResponse(t)
		r.AckedHash = r.AckedHash[:8]
		return sign(t, server, syncproto.ResponseType, r)
	}},
	{name: "fail_response_by_device.answer", want: artifact.ErrUnknownKey, data: func(t testing.TB) []byte {
		return sign(t, device, syncproto.ResponseType, goodResponse(t))
	}},
}

// check verifies and decodes a file the way the server (uploads) and the
// device (answers) do.
func check(data []byte, answer bool) (chainErr, err error) {
	ring, typ := artifact.Keys{device.Public}, syncproto.UploadType
	if answer {
		ring, typ = artifact.Keys{server.Public}, syncproto.ResponseType
	}
	_, body, err := artifact.Verify(data, ring, artifact.Expect{Type: typ, Subject: "dev-7", Now: t0, Skew: time.Minute, MaxSize: syncproto.MaxUploadSize})
	if err != nil {
		return nil, err
	}
	if answer {
		_, err = syncproto.DecodeResponse(body)
		return nil, err
	}
	u, err := syncproto.DecodeUpload(body)
	if err != nil {
		return nil, err
	}
	var anchor *eventlog.Entry
	if u.After > 0 && len(u.Entries) > 0 {
		anchor = &eventlog.Entry{Seq: u.After, Hash: u.Entries[0].Prev}
	}
	_, cerr := eventlog.VerifyChain(anchor, u.Entries, device.Public)
	return cerr, nil
}

// TestTestdata checks every good_* and fail_* file: each fails exactly as its name says.
func TestTestdata(t *testing.T) {
	if *update {
		for _, f := range files {
			if err := os.WriteFile(filepath.Join("testdata", f.name), f.data(t), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for name, pub := range map[string][]byte{"device.pub": keys.MarshalPublicPEM(device.Public), "server.pub": keys.MarshalPublicPEM(server.Public)} {
			if err := os.WriteFile(filepath.Join("testdata", name), pub, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	names, _ := filepath.Glob(filepath.Join("testdata", "*.sync"))
	answers, _ := filepath.Glob(filepath.Join("testdata", "*.answer"))
	if len(names)+len(answers) != len(files) {
		t.Errorf("%d files in testdata, %d cases: run go test -run TestTestdata -update", len(names)+len(answers), len(files))
	}
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", f.name))
			if err != nil {
				t.Fatal(err)
			}
			chainErr, err := check(data, strings.HasSuffix(f.name, ".answer"))
			switch {
			case strings.HasPrefix(f.name, "good_") && (err != nil || chainErr != nil):
				t.Fatalf("good file refused: %v %v", err, chainErr)
			case f.chain && (err != nil || !errors.Is(chainErr, eventlog.ErrBroken)):
				t.Fatalf("decoding: %v; chain: %v (want a broken chain)", err, chainErr)
			case f.want != nil && !errors.Is(err, f.want):
				t.Fatalf("got %v, want %v", err, f.want)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	u := goodUpload(t)
	u.Entries = make([]eventlog.Entry, syncproto.MaxEntries+1)
	u.Head = uint64(len(u.Entries))
	if err := u.Validate(); !errors.Is(err, syncproto.ErrMalformed) {
		t.Errorf("too many entries: %v", err)
	}
	u = goodUpload(t)
	u.Tokens = make([]syncproto.TokenState, syncproto.MaxTokens+1)
	if err := u.Validate(); !errors.Is(err, syncproto.ErrMalformed) {
		t.Errorf("too many tokens: %v", err)
	}
	r := goodResponse(t)
	r.Refills = []syncproto.Refill{{TokenKey: r.Tokens[0].TokenKey}}
	if err := r.Validate(); !errors.Is(err, syncproto.ErrMalformed) {
		t.Errorf("empty refill bundle: %v", err)
	}
	// Pending refills and ignored claims: bounded like the rest.
	k := r.Tokens[0].TokenKey
	for name, mod := range map[string]func(*syncproto.Response){
		"pending without id": func(r *syncproto.Response) { r.Pending = []syncproto.PendingRefill{{TokenKey: k}} },
		"pending retry too late": func(r *syncproto.Response) {
			r.Pending = []syncproto.PendingRefill{{TokenKey: k, ID: "x", RetryAfter: 3601}}
		},
		"pending retry negative": func(r *syncproto.Response) {
			r.Pending = []syncproto.PendingRefill{{TokenKey: k, ID: "x", RetryAfter: -1}}
		},
		"pending without token": func(r *syncproto.Response) { r.Pending = []syncproto.PendingRefill{{ID: "x"}} },
		"too many pending":      func(r *syncproto.Response) { r.Pending = make([]syncproto.PendingRefill, syncproto.MaxTokens+1) },
		"ignored without kind":  func(r *syncproto.Response) { r.Ignored = []syncproto.IgnoredClaim{{TokenKey: k}} },
		"ignored long reason": func(r *syncproto.Response) {
			r.Ignored = []syncproto.IgnoredClaim{{TokenKey: k, Incident: "x", Reason: strings.Repeat("r", 513)}}
		},
		"ignored negative claims": func(r *syncproto.Response) {
			r.Ignored = []syncproto.IgnoredClaim{{TokenKey: k, Incident: "x", Claims: -1}}
		},
	} {
		r := goodResponse(t)
		mod(&r)
		if err := r.Validate(); !errors.Is(err, syncproto.ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	r = goodResponse(t)
	r.Pending = []syncproto.PendingRefill{{TokenKey: k, ID: "refill_0123", RetryAfter: 10}}
	r.Ignored = []syncproto.IgnoredClaim{{TokenKey: k, Incident: "unissued_token", Claims: 2, Reason: "never issued"}}
	if err := r.Validate(); err != nil {
		t.Errorf("pending and ignored: %v", err)
	}
	e := syncproto.Enrol{Device: "dev-7", PublicKey: device.Public, Code: "ABCD", Sig: make([]byte, 64)}
	if err := e.Validate(); err != nil {
		t.Error(err)
	}
	for _, bad := range []syncproto.Enrol{
		{Device: "", PublicKey: device.Public, Code: "A", Sig: make([]byte, 64)},
		{Device: "d", PublicKey: device.Public[:31], Code: "A", Sig: make([]byte, 64)},
		{Device: "d", PublicKey: device.Public, Code: "", Sig: make([]byte, 64)},
		{Device: "d", PublicKey: device.Public, Code: strings.Repeat("A", 129), Sig: make([]byte, 64)},
		{Device: "d", PublicKey: device.Public, Code: "A", Sig: make([]byte, 63)},
	} {
		if err := bad.Validate(); !errors.Is(err, syncproto.ErrMalformed) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	// The enrolment signature binds the device, the key and the code.
	m := syncproto.EnrolMessage("dev-7", device.Public, "ABCD")
	for _, other := range [][]byte{syncproto.EnrolMessage("dev-8", device.Public, "ABCD"), syncproto.EnrolMessage("dev-7", server.Public, "ABCD"),
		syncproto.EnrolMessage("dev-7", device.Public, "ABCE")} {
		if bytes.Equal(m, other) {
			t.Error("enrolment messages collide")
		}
	}
	if bytes.Contains(m, []byte("ABCD")) {
		t.Error("the enrolment message carries the code in the clear")
	}
}

// FuzzDecodeUpload: no input panics the decoder, and whatever it accepts
// encodes and decodes again to an accepted upload.
func FuzzDecodeUpload(f *testing.F) {
	for _, name := range []string{"good_upload.sync", "fail_unknown_field.sync", "fail_head_before_entries.sync"} {
		if body, err := fileBody(name); err == nil {
			f.Add(body)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		u, err := syncproto.DecodeUpload(body)
		if err != nil {
			return
		}
		again, err := json.Marshal(u)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := syncproto.DecodeUpload(again); err != nil {
			t.Fatalf("re-encoded upload refused: %v", err)
		}
	})
}

// FuzzDecodeResponse: the same for answers.
func FuzzDecodeResponse(f *testing.F) {
	for _, name := range []string{"good_response.answer", "fail_response_bad_status.answer"} {
		if body, err := fileBody(name); err == nil {
			f.Add(body)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := syncproto.DecodeResponse(body)
		if err != nil {
			return
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := syncproto.DecodeResponse(again); err != nil {
			t.Fatalf("re-encoded response refused: %v", err)
		}
	})
}

// fileBody returns the signed body of a testdata file (without checking the signature).
func fileBody(name string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		return nil, err
	}
	var env struct {
		Payload []byte `json:"payload"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, err
	}
	var p struct {
		Body json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		return nil, err
	}
	return p.Body, nil
}
