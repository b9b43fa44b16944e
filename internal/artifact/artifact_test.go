package artifact

import (
	"bytes"
	"crypto/ed25519"
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

	"github.com/outpost-auth/outpost/internal/keys"
)

var update = flag.Bool("update", false, "regenerate testdata vectors")

// testSigner is deterministic: master bytes 0x00..0x1f, epoch 0 (or another).
func testSigner(t testing.TB, epoch uint32) *keys.Signer {
	t.Helper()
	b := make([]byte, keys.Size)
	for i := range b {
		b[i] = byte(i)
	}
	m, err := keys.MasterFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return m.Signer(epoch)
}

var (
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	nbf = t0
	exp = t0.Add(24 * time.Hour)
)

type testBody struct {
	Site    string   `json:"site"`
	Entries []string `json:"entries"`
}

func testHeader() Header {
	return Header{Type: "bundle", Version: 1, Subject: "dev-7", IssuedAt: t0, NotBefore: nbf, NotAfter: exp, Serial: 42}
}

func testBodyValue() testBody { return testBody{Site: "site-7", Entries: []string{"a", "b"}} }

func mustSign(t testing.TB, s *keys.Signer, h Header, body any) []byte {
	t.Helper()
	b, err := Sign(s, h, body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func expect() Expect { return Expect{Type: "bundle", Subject: "dev-7", Now: t0.Add(time.Hour)} }

func TestSignVerify(t *testing.T) {
	s := testSigner(t, 0)
	data := mustSign(t, s, testHeader(), testBodyValue())
	h, raw, err := Verify(data, Keys{s.Public}, expect())
	if err != nil {
		t.Fatal(err)
	}
	want := testHeader()
	want.KeyID = s.KeyID
	if h != want {
		t.Fatalf("header %+v, want %+v", h, want)
	}
	var got testBody
	if err := DecodeBody(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Site != "site-7" || !slices.Equal(got.Entries, []string{"a", "b"}) {
		t.Fatalf("body %+v", got)
	}
	// Deterministic: same signer, header and body give the same bytes.
	if again := mustSign(t, s, testHeader(), testBodyValue()); !bytes.Equal(again, data) {
		t.Fatal("Sign is not deterministic for a fixed IssuedAt")
	}
	// Zero Expect: any type, any subject, no clock check.
	if _, _, err := Verify(data, Keys{s.Public}, Expect{}); err != nil {
		t.Fatal(err)
	}
	// A keyring of several keys (rotation: the old and the new epoch).
	ring := Keys{testSigner(t, 1).Public, s.Public}
	if _, _, err := Verify(data, ring, expect()); err != nil {
		t.Fatal(err)
	}
	// Times are stored in UTC whatever zone the caller used.
	h2 := testHeader()
	loc := time.FixedZone("X", 5*3600)
	h2.NotBefore, h2.NotAfter, h2.IssuedAt = nbf.In(loc), exp.In(loc), t0.In(loc)
	if !bytes.Equal(mustSign(t, s, h2, testBodyValue()), data) {
		t.Fatal("the time zone of the header's times changed the artifact")
	}
}

func TestSignRejects(t *testing.T) {
	s := testSigner(t, 0)
	for name, edit := range map[string]func(*Header){
		"no type":          func(h *Header) { h.Type = "" },
		"version 0":        func(h *Header) { h.Version = 0 },
		"empty window":     func(h *Header) { h.NotAfter = h.NotBefore },
		"inverted window":  func(h *Header) { h.NotAfter = h.NotBefore.Add(-time.Second) },
		"zero not after":   func(h *Header) { h.NotAfter = time.Time{} },
		"not-after before": func(h *Header) { h.NotBefore = h.NotAfter.Add(time.Hour) },
	} {
		h := testHeader()
		edit(&h)
		if _, err := Sign(s, h, testBodyValue()); err == nil {
			t.Errorf("%s: Sign accepted %+v", name, h)
		}
	}
	if _, err := Sign(s, testHeader(), func() {}); err == nil {
		t.Error("Sign accepted a body that is not JSON")
	}
	// The header's KeyID is always the signer's.
	h := testHeader()
	h.KeyID = "ed25519:0000000000000000"
	got, _, err := Verify(mustSign(t, s, h, nil), Keys{s.Public}, expect())
	if err != nil || got.KeyID != s.KeyID {
		t.Fatalf("kid %q, %v", got.KeyID, err)
	}
	// IssuedAt defaults to NotBefore (Sign never reads the wall clock).
	h = testHeader()
	h.IssuedAt = time.Time{}
	got, _, err = Verify(mustSign(t, s, h, nil), Keys{s.Public}, Expect{})
	if err != nil || !got.IssuedAt.Equal(h.NotBefore) {
		t.Fatalf("IssuedAt %v, %v", got.IssuedAt, err)
	}
}

// rawEnvelope signs an arbitrary payload, for shapes Sign refuses to make.
func rawEnvelope(t testing.TB, s *keys.Signer, envKID string, p []byte) []byte {
	t.Helper()
	env := envelope{Version: 1, KeyID: envKID, Payload: p, Sig: s.Sign(signedMessage(envKID, p))}
	return append(mustMarshal(t, env), '\n')
}

// mustMarshal is json.Marshal for the test's own values.
func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readVector reads a file of testdata.
func readVector(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// vectorFiles lists testdata/*.json; there must be some.
func vectorFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.json (go test ./internal/artifact -run TestArtifactVectors -update): %v", err)
	}
	return files
}

func payloadJSON(t testing.TB, h Header, body string) []byte {
	t.Helper()
	b, err := json.Marshal(payload{Header: h, Body: json.RawMessage(body)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// editEnvelope decodes an artifact's envelope as a generic object, edits it
// and encodes it again (without re-signing).
func editEnvelope(t testing.TB, data []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	return mustMarshal(t, m)
}

type badKeyring struct{}

func (badKeyring) PublicKey(string) (ed25519.PublicKey, bool) {
	return ed25519.PublicKey{1, 2, 3}, true
}

func TestVerifyFailures(t *testing.T) {
	s := testSigner(t, 0)
	other := testSigner(t, 1)
	ring := Keys{s.Public}
	good := mustSign(t, s, testHeader(), testBodyValue())
	hdr := testHeader()
	hdr.KeyID = s.KeyID

	for _, tc := range []struct {
		name string
		data []byte
		ring Keyring
		want Expect
		err  error // besides ErrInvalid
		msg  string
	}{
		{name: "unknown key", data: good, ring: Keys{other.Public}, want: expect(), err: ErrUnknownKey, msg: "outpost keys export-public"},
		{name: "empty keyring", data: good, ring: Keys{}, want: expect(), err: ErrUnknownKey},
		{name: "malformed keyring key", data: good, ring: badKeyring{}, want: expect(), err: ErrUnknownKey},
		{name: "signed by another key under our kid", data: rawEnvelope(t, other, s.KeyID, payloadJSON(t, hdr, "{}")), ring: ring, want: expect(), err: ErrBadSig},
		{name: "bad signature", data: editEnvelope(t, good, func(m map[string]any) {
			sig := []byte(m["sig"].(string))
			sig[3] ^= 1
			m["sig"] = string(sig)
		}), ring: ring, want: expect(), err: ErrBadSig},
		{name: "short signature", data: editEnvelope(t, good, func(m map[string]any) { m["sig"] = "AAAA" }), ring: ring, want: expect(), err: ErrBadSig},
		{name: "no signature", data: editEnvelope(t, good, func(m map[string]any) { delete(m, "sig") }), ring: ring, want: expect(), err: ErrBadSig},
		{name: "kid changed in envelope", data: editEnvelope(t, good, func(m map[string]any) { m["kid"] = other.KeyID }), ring: Keys{s.Public, other.Public}, want: expect(), err: ErrBadSig},
		{name: "kid mismatch envelope vs header", data: rawEnvelope(t, s, s.KeyID, payloadJSON(t, Header{Type: "bundle", Version: 1, KeyID: other.KeyID, Subject: "dev-7", NotBefore: nbf, NotAfter: exp}, "{}")), ring: ring, want: expect(), err: ErrBadSig, msg: "differs from envelope"},
		{name: "wrong type", data: good, ring: ring, want: Expect{Type: "revocation-list", Now: t0}, err: ErrWrongType, msg: `"bundle"`},
		{name: "wrong subject", data: good, ring: ring, want: Expect{Type: "bundle", Subject: "dev-1", Now: t0}, err: ErrWrongBound, msg: "dev-7"},
		{name: "not yet valid", data: good, ring: ring, want: Expect{Now: nbf.Add(-time.Second)}, err: ErrNotYetValid},
		{name: "not yet valid beyond skew", data: good, ring: ring, want: Expect{Now: nbf.Add(-2 * time.Minute), Skew: time.Minute}, err: ErrNotYetValid},
		{name: "expired", data: good, ring: ring, want: Expect{Now: exp.Add(time.Second)}, err: ErrExpired, msg: "ask for a new one"},
		{name: "expired beyond skew", data: good, ring: ring, want: Expect{Now: exp.Add(2 * time.Minute), Skew: time.Minute}, err: ErrExpired},
		{name: "oversize", data: good, ring: ring, want: Expect{MaxSize: len(good) - 1}, err: ErrTooLarge},
		{name: "oversize default", data: append(bytes.Repeat([]byte(" "), 64<<20), good...), ring: ring, want: Expect{}, err: ErrTooLarge},
		{name: "trailing data", data: append(bytes.Clone(good), "x"...), ring: ring, want: expect()},
		{name: "two artifacts", data: append(bytes.Clone(good), good...), ring: ring, want: expect()},
		{name: "truncated", data: good[:len(good)/2], ring: ring, want: expect(), msg: "truncated"},
		{name: "empty", data: nil, ring: ring, want: expect()},
		{name: "not json", data: []byte("\x89PNG"), ring: ring, want: expect()},
		{name: "envelope version 2", data: editEnvelope(t, good, func(m map[string]any) { m["outpost_artifact"] = 2 }), ring: ring, want: expect(), msg: "version 2"},
		{name: "envelope unknown field", data: editEnvelope(t, good, func(m map[string]any) { m["extra"] = 1 }), ring: ring, want: expect()},
		{name: "payload unknown field (signed)", data: rawEnvelope(t, s, s.KeyID, []byte(`{"hdr":{"type":"bundle","version":1,"kid":"`+s.KeyID+`"},"body":{},"x":1}`)), ring: ring, want: Expect{}},
		{name: "payload trailing data (signed)", data: rawEnvelope(t, s, s.KeyID, append(payloadJSON(t, hdr, "{}"), " {}"...)), ring: ring, want: Expect{}},
		{name: "payload not an object (signed)", data: rawEnvelope(t, s, s.KeyID, []byte(`"hello"`)), ring: ring, want: Expect{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, body, err := Verify(tc.data, tc.ring, tc.want)
			if err == nil {
				t.Fatal("verified")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("error %v, want %v", err, tc.err)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if body != nil || h != (Header{}) {
				t.Error("header or body returned with an error")
			}
		})
	}
}

func TestVerifyWindowEdges(t *testing.T) {
	s := testSigner(t, 0)
	good := mustSign(t, s, testHeader(), nil)
	for _, tc := range []struct {
		now  time.Time
		skew time.Duration
		ok   bool
	}{
		{nbf, 0, true},
		{exp, 0, true},
		{nbf.Add(-time.Nanosecond), 0, false},
		{exp.Add(time.Nanosecond), 0, false},
		{nbf.Add(-time.Minute), time.Minute, true},
		{exp.Add(time.Minute), time.Minute, true},
		{nbf.Add(-time.Minute - time.Nanosecond), time.Minute, false},
		{exp.Add(time.Minute + time.Nanosecond), time.Minute, false},
		{nbf.In(time.FixedZone("Y", -7*3600)), 0, true},
	} {
		_, _, err := Verify(good, Keys{s.Public}, Expect{Now: tc.now, Skew: tc.skew})
		if (err == nil) != tc.ok {
			t.Errorf("now %v skew %v: err %v, want ok=%v", tc.now, tc.skew, err, tc.ok)
		}
	}
}

// Flipping any bit of an artifact either leaves its verified content as it
// was (JSON formatting, e.g. the case of a key name) or makes Verify fail.
func TestVerifyEveryBitFlip(t *testing.T) {
	s := testSigner(t, 0)
	good := mustSign(t, s, testHeader(), testBodyValue())
	wantH, wantB, err := Verify(good, Keys{s.Public}, expect())
	if err != nil {
		t.Fatal(err)
	}
	same := 0
	for i := range good {
		for bit := 0; bit < 8; bit++ {
			data := bytes.Clone(good)
			data[i] ^= 1 << bit
			h, b, err := Verify(data, Keys{s.Public}, expect())
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("byte %d bit %d: %v does not wrap ErrInvalid", i, bit, err)
				}
				continue
			}
			if h != wantH || !bytes.Equal(b, wantB) {
				t.Fatalf("byte %d bit %d: verified with different content %+v %s", i, bit, h, b)
			}
			same++
		}
	}
	t.Logf("%d of %d bit flips were formatting only", same, 8*len(good))
}

func TestDecodeBody(t *testing.T) {
	var b testBody
	for _, in := range []string{`{"site":"x","extra":1}`, `{"site":"x"} {}`, `{"site":`, `[]`, ``} {
		if err := DecodeBody(json.RawMessage(in), &b); !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeBody(%q) = %v", in, err)
		}
	}
	if err := DecodeBody(json.RawMessage(`{"site":"x","entries":null}`), &b); err != nil || b.Site != "x" {
		t.Fatal(err)
	}
}

// ---- checked-in vectors: testdata/good_*.json and fail_*.json ----

// vectorExpect is what every vector is verified against.
func vectorExpect() Expect {
	return Expect{Type: "bundle", Subject: "dev-7", Now: t0.Add(time.Hour), Skew: time.Minute, MaxSize: 4096}
}

// artifactVectors maps each file to the error Verify must return (nil: verifies).
func artifactVectors() map[string]error {
	return map[string]error{
		"good_bundle.json":                 nil,
		"good_bundle_indented.json":        nil,
		"good_bundle_crlf.json":            nil,
		"good_bundle_empty_body.json":      nil,
		"fail_bad_sig.json":                ErrBadSig,
		"fail_payload_bit_flip.json":       ErrBadSig,
		"fail_other_signer.json":           ErrBadSig,
		"fail_kid_mismatch.json":           ErrBadSig,
		"fail_unknown_key.json":            ErrUnknownKey,
		"fail_wrong_type.json":             ErrWrongType,
		"fail_wrong_subject.json":          ErrWrongBound,
		"fail_not_yet_valid.json":          ErrNotYetValid,
		"fail_expired.json":                ErrExpired,
		"fail_oversize.json":               ErrTooLarge,
		"fail_trailing_data.json":          ErrInvalid,
		"fail_truncated.json":              ErrInvalid,
		"fail_unknown_field.json":          ErrInvalid,
		"fail_version_2.json":              ErrInvalid,
		"fail_payload_unknown_field.json":  ErrInvalid,
		"fail_payload_trailing_data.json":  ErrInvalid,
		"fail_sig_truncated.json":          ErrBadSig,
		"fail_empty.json":                  ErrInvalid,
		"fail_payload_header_missing.json": ErrInvalid,
	}
}

func generateArtifactVectors(t *testing.T) {
	s, other := testSigner(t, 0), testSigner(t, 1)
	hdr := testHeader()
	hdr.KeyID = s.KeyID
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	good := mustSign(t, s, testHeader(), testBodyValue())
	write("good_bundle.json", good)
	var ind bytes.Buffer
	if err := json.Indent(&ind, good, "", "  "); err != nil {
		t.Fatal(err)
	}
	write("good_bundle_indented.json", ind.Bytes())
	write("good_bundle_crlf.json", bytes.ReplaceAll(ind.Bytes(), []byte("\n"), []byte("\r\n")))
	write("good_bundle_empty_body.json", mustSign(t, s, testHeader(), struct{}{}))
	write("fail_bad_sig.json", editEnvelope(t, good, func(m map[string]any) {
		sig := []byte(m["sig"].(string))
		sig[0] ^= 1
		m["sig"] = string(sig)
	}))
	write("fail_payload_bit_flip.json", rawEnvelopeWithSig(t, good, func(p []byte) { p[10] ^= 1 }))
	write("fail_other_signer.json", rawEnvelope(t, other, s.KeyID, payloadJSON(t, hdr, `{}`)))
	h2 := hdr
	h2.KeyID = other.KeyID
	write("fail_kid_mismatch.json", rawEnvelope(t, s, s.KeyID, payloadJSON(t, h2, `{}`)))
	write("fail_unknown_key.json", mustSign(t, other, testHeader(), testBodyValue()))
	h3 := testHeader()
	h3.Type = "revocation-list"
	write("fail_wrong_type.json", mustSign(t, s, h3, nil))
	h3 = testHeader()
	h3.Subject = "dev-1"
	write("fail_wrong_subject.json", mustSign(t, s, h3, nil))
	h3 = testHeader()
	h3.NotBefore = t0.Add(2 * time.Hour)
	h3.NotAfter = t0.Add(48 * time.Hour)
	write("fail_not_yet_valid.json", mustSign(t, s, h3, nil))
	h3 = testHeader()
	h3.NotBefore = t0.Add(-48 * time.Hour)
	h3.NotAfter = t0.Add(58 * time.Minute)
	write("fail_expired.json", mustSign(t, s, h3, nil))
	write("fail_oversize.json", mustSign(t, s, testHeader(), testBody{Site: strings.Repeat("x", 4096)}))
	write("fail_trailing_data.json", append(bytes.Clone(good), "{}"...))
	write("fail_truncated.json", good[:len(good)-10])
	write("fail_unknown_field.json", editEnvelope(t, good, func(m map[string]any) { m["alg"] = "none" }))
	write("fail_version_2.json", editEnvelope(t, good, func(m map[string]any) { m["outpost_artifact"] = 2 }))
	write("fail_payload_unknown_field.json", rawEnvelope(t, s, s.KeyID, []byte(strings.TrimSuffix(string(payloadJSON(t, hdr, `{}`)), "}")+`,"extra":1}`)))
	write("fail_payload_trailing_data.json", rawEnvelope(t, s, s.KeyID, append(payloadJSON(t, hdr, `{}`), "\n{}"...)))
	write("fail_sig_truncated.json", editEnvelope(t, good, func(m map[string]any) { m["sig"] = m["sig"].(string)[:40] }))
	write("fail_empty.json", nil)
	write("fail_payload_header_missing.json", rawEnvelope(t, s, s.KeyID, []byte(`{"body":{}}`)))
}

// rawEnvelopeWithSig changes the payload of a signed artifact but keeps its signature.
func rawEnvelopeWithSig(t testing.TB, data []byte, edit func([]byte)) []byte {
	t.Helper()
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	edit(env.Payload)
	return mustMarshal(t, env)
}

func TestArtifactVectors(t *testing.T) {
	if *update {
		generateArtifactVectors(t)
		writeFuzzSeeds(t)
	}
	s := testSigner(t, 0)
	table := artifactVectors()
	files := vectorFiles(t)
	seen := map[string]bool{}
	for _, f := range files {
		name := filepath.Base(f)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			want, ok := table[name]
			if !ok {
				t.Fatalf("testdata/%s has no entry in artifactVectors", name)
			}
			data := readVector(t, f)
			h, body, err := Verify(data, Keys{s.Public}, vectorExpect())
			if want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if h.Serial != 42 || h.KeyID != s.KeyID || body == nil {
					t.Fatalf("header %+v body %s", h, body)
				}
				return
			}
			if !errors.Is(err, want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify = %v, want %v", err, want)
			}
		})
	}
	for name := range table {
		if !seen[name] {
			t.Errorf("testdata/%s missing (go test ./internal/artifact -run TestArtifactVectors -update)", name)
		}
	}
}

func writeFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range vectorFiles(t) {
		if strings.HasSuffix(f, "fail_oversize.json") {
			continue
		}
		seed := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", readVector(t, f))
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), seed, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzVerify: Verify never panics, every error wraps ErrInvalid, and what
// verifies is the good vector's content: a mutation may change formatting,
// never the signed header or body.
func FuzzVerify(f *testing.F) {
	s := testSigner(f, 0)
	ring := Keys{s.Public, testSigner(f, 1).Public}
	// Every checked-in file that the keyring verifies is a legitimately
	// signed artifact; a mutation may only ever verify as one of these.
	type content struct {
		h Header
		b json.RawMessage
	}
	var originals []content
	for _, name := range vectorFiles(f) {
		if h, body, err := Verify(readVector(f, name), ring, Expect{}); err == nil {
			originals = append(originals, content{h, body})
		}
	}
	if len(originals) < 4 {
		f.Fatalf("only %d verifiable vectors in testdata", len(originals))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, want := range []Expect{{}, vectorExpect()} {
			h, body, err := Verify(data, ring, want)
			if err != nil {
				if !errors.Is(err, ErrInvalid) || body != nil {
					t.Fatalf("Verify = %s, %v", body, err)
				}
				continue
			}
			if !slices.ContainsFunc(originals, func(o content) bool { return h == o.h && bytes.Equal(body, o.b) }) {
				t.Fatalf("a mutated artifact verified with new content: %+v %s", h, body)
			}
		}
	})
}
