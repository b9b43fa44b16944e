package offline_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/bundlefmt"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
)

var update = flag.Bool("update", false, "regenerate offline/testdata (good_*, fail_*, fuzz seeds)")

// The checked-in bundles are valid from tdFrom to tdUntil; t0 lies inside.
var (
	tdFrom  = time.Date(2029, 12, 31, 0, 0, 0, 0, time.UTC)
	tdUntil = time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)
)

// failCases maps every checked-in fail_* file to the error Decode must return.
var failCases = map[string]error{
	"fail_flipped_bit.bundle":        offline.ErrBadSignature,
	"fail_other_device.bundle":       offline.ErrWrongDevice,
	"fail_expired.bundle":            offline.ErrExpired,
	"fail_not_yet_valid.bundle":      offline.ErrNotYetValid,
	"fail_unknown_key.bundle":        offline.ErrUnknownKey,
	"fail_truncated.bundle":          offline.ErrMalformed,
	"fail_trailing_data.bundle":      offline.ErrMalformed,
	"fail_not_json.bundle":           offline.ErrMalformed,
	"fail_wrong_type.bundle":         offline.ErrMalformed,
	"fail_version_3.bundle":          offline.ErrMalformed,
	"fail_v1_with_used.bundle":       offline.ErrMalformed,
	"fail_used_below_none.bundle":    offline.ErrMalformed,
	"fail_acked_short_hash.bundle":   offline.ErrMalformed,
	"fail_acked_without_hash.bundle": offline.ErrMalformed,
	"fail_entries_length.bundle":     offline.ErrMalformed,
	"fail_no_entries.bundle":         offline.ErrMalformed,
	"fail_weak_kdf.bundle":           offline.ErrMalformed,
	"fail_huge_kdf.bundle":           offline.ErrMalformed,
	"fail_five_digits.bundle":        offline.ErrMalformed,
	"fail_short_salt.bundle":         offline.ErrMalformed,
	"fail_unknown_field.bundle":      offline.ErrMalformed,
	"fail_counter_overflow.bundle":   offline.ErrMalformed,
	"fail_secrets_unsorted.bundle":   offline.ErrMalformed,
	"fail_control_char_user.bundle":  offline.ErrMalformed,
}

func goodHOTPReq() bundle.Request {
	r := hotpReq(0, 10)
	r.NotBefore, r.NotAfter, r.Serial = tdFrom, tdUntil, 1000
	return r
}

func goodTOTPReq() bundle.Request {
	r := totpReq("2468")
	r.From, r.Until = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 1, 1, 1, 0, 0, 0, time.UTC)
	r.NotBefore, r.NotAfter, r.Serial = tdFrom, tdUntil, 1000
	r.Used, r.LastUsed = true, otp.DefaultTOTP.Step(r.From)-1 // used online just before the period
	return r
}

// signBody signs a hand-made body (for the malformed-but-signed cases).
func signBody(t *testing.T, h artifact.Header, body any) []byte {
	t.Helper()
	if h.Type == "" {
		h.Type = bundlefmt.BundleType
	}
	if h.Version == 0 {
		h.Version = bundlefmt.BundleVersion
	}
	if h.Subject == "" {
		h.Subject = "dev-1"
	}
	h.NotBefore, h.NotAfter, h.Serial = tdFrom, tdUntil, 1000
	data, err := artifact.Sign(testSigner(t), h, body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// goodBody decodes good_hotp.bundle's body as a generic map for editing.
func goodBody(t *testing.T, good []byte) map[string]any {
	t.Helper()
	b, err := bundlefmt.Decode(good, trusted(t), bundlefmt.Expect{Device: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	return jsonCopy(t, b.Body)
}

// edit returns a copy of m changed by f.
func edit(t *testing.T, m map[string]any, f func(map[string]any)) map[string]any {
	t.Helper()
	c := jsonCopy(t, m)
	f(c)
	return c
}

// jsonCopy returns v as a generic JSON object.
func jsonCopy(t *testing.T, v any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGenerateTestdata writes every file of offline/testdata but one:
// good_hotp_v1.bundle was written by the version 1 issuer (before Used and
// Acked) and is kept as it is, to show that version 1 still decodes.
func TestGenerateTestdata(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate offline/testdata")
	}
	files := map[string][]byte{"server.pub": keys.MarshalPublicPEM(testSigner(t).Public)}
	good := issue(t, goodHOTPReq())
	files["good_hotp.bundle"] = good
	files["good_totp_pin.bundle"] = issue(t, goodTOTPReq())

	flipped := append([]byte(nil), good...)
	i := bytes.Index(flipped, []byte(`"payload":"`)) + 200
	flipped[i] ^= 0x01 // a base64 letter to its neighbour: still base64, no longer signed
	if !bytes.ContainsAny(flipped[i:i+1], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") {
		t.Fatalf("flipped byte %q is not base64", flipped[i])
	}
	files["fail_flipped_bit.bundle"] = flipped
	r := goodHOTPReq()
	r.Device = "dev-2"
	files["fail_other_device.bundle"] = issue(t, r)
	r = goodHOTPReq()
	r.NotBefore, r.NotAfter = tdFrom.AddDate(-1, 0, 0), tdFrom.AddDate(0, 0, -1)
	files["fail_expired.bundle"] = issue(t, r)
	r = goodHOTPReq()
	r.NotBefore, r.NotAfter = tdUntil.AddDate(0, 0, 1), tdUntil.AddDate(1, 0, 0)
	files["fail_not_yet_valid.bundle"] = issue(t, r)
	foreign, _, err := bundleIssueWith(otherSigner(t), goodHOTPReq())
	if err != nil {
		t.Fatal(err)
	}
	files["fail_unknown_key.bundle"] = foreign
	files["fail_truncated.bundle"] = good[:len(good)*2/3]
	files["fail_trailing_data.bundle"] = append(append([]byte(nil), good...), []byte("{\"more\":1}\n")...)
	files["fail_not_json.bundle"] = []byte("this is not a bundle\n")

	body := goodBody(t, good)
	files["fail_wrong_type.bundle"] = signBody(t, artifact.Header{Type: "site-package"}, body)
	files["fail_version_3.bundle"] = signBody(t, artifact.Header{Version: 3}, body)
	files["fail_v1_with_used.bundle"] = signBody(t, artifact.Header{Version: 1}, edit(t, body, func(m map[string]any) { m["used"] = 5 }))
	files["fail_used_below_none.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) { m["used"] = -2 }))
	files["fail_acked_short_hash.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) {
		m["acked"], m["acked_hash"] = 3, "AAAA"
	}))
	files["fail_acked_without_hash.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) { m["acked"] = 3 }))
	files["fail_entries_length.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) {
		e := m["entries"].(string)
		m["entries"] = e[:len(e)-4] // 3 bytes short
	}))
	files["fail_no_entries.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) { m["entries"] = "" }))
	files["fail_weak_kdf.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) {
		m["kdf"] = map[string]any{"time": 1, "memory_kib": 4, "threads": 1}
	}))
	files["fail_huge_kdf.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) {
		m["kdf"] = map[string]any{"time": 3, "memory_kib": 4 << 20, "threads": 1}
	}))
	files["fail_five_digits.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) {
		m["otp"].(map[string]any)["digits"] = 5
	}))
	files["fail_short_salt.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) { m["salt"] = "AAAA" }))
	files["fail_unknown_field.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) { m["whitelist"] = true }))
	files["fail_counter_overflow.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) {
		m["first"] = uint64(bundlefmt.MaxCounter) - 3
	}))
	files["fail_secrets_unsorted.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) {
		s := m["secrets"].([]any)[0]
		m["secrets"] = []any{s, s}
	}))
	files["fail_control_char_user.bundle"] = signBody(t, artifact.Header{}, edit(t, body, func(m map[string]any) { m["user"] = "ali\x1bce" }))

	for name, data := range files {
		if err := os.WriteFile(filepath.Join("testdata", name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGenerateFuzzSeeds writes the seed corpora of FuzzDecodeBundle and
// FuzzApplyResponse: small bodies, so that the fuzzers' minimizer stays
// quick (see FuzzDecodeBundle).
func TestGenerateFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate offline/testdata/fuzz")
	}
	seeds := map[string]map[string][]byte{"FuzzDecodeBundle": fuzzBundleBodies(t), "FuzzApplyResponse": {}}
	for name, body := range fuzzResponseBodies {
		seeds["FuzzApplyResponse"][name] = []byte(body)
	}
	for fuzzer, m := range seeds {
		dir := filepath.Join("testdata", "fuzz", fuzzer)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range m {
			seed := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(seed), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("%v (regenerate with: go test ./offline -run TestGenerateTestdata -update)", err)
	}
	return data
}

func TestTestdataFiles(t *testing.T) {
	pub, err := keys.ParsePublicPEM(readTestdata(t, "server.pub"))
	if err != nil || !pub.Equal(testSigner(t).Public) {
		t.Fatalf("server.pub: %v", err)
	}
	names, _ := filepath.Glob(filepath.Join("testdata", "*.bundle"))
	sort.Strings(names)
	seen := 0
	for _, path := range names {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			data := readTestdata(t, name)
			b, err := bundlefmt.Decode(data, trusted(t), bundlefmt.Expect{Device: "dev-1", Now: t0})
			switch {
			case strings.HasPrefix(name, "good_"):
				if err != nil {
					t.Fatalf("good bundle refused: %v", err)
				}
				if b.User == "" || b.Count() < 1 {
					t.Fatalf("decoded %+v", b.Body)
				}
			case strings.HasPrefix(name, "fail_"):
				want, ok := failCases[name]
				if !ok {
					t.Fatalf("no expectation for %s: add it to failCases", name)
				}
				seen++
				if !errors.Is(err, want) {
					t.Fatalf("got %v, want %v", err, want)
				}
				t.Log(err)
				if strings.Contains(err.Error(), string(seed)) {
					t.Fatal("the seed is in an error")
				}
			default:
				t.Fatalf("testdata file %s is neither good_* nor fail_*", name)
			}
		})
	}
	if seen != len(failCases) {
		t.Fatalf("found %d fail_* files, expected %d", seen, len(failCases))
	}
}

// TestTestdataVerify runs the checked-in good bundles through a store with
// their codes.
func TestTestdataVerify(t *testing.T) {
	s, c, _ := newStore(t, quickPolicy)
	for _, name := range []string{"good_hotp.bundle", "good_totp_pin.bundle"} {
		if _, err := s.Import(ctx, readTestdata(t, name)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	hotp := codesAt(t, otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}, seed, 0, 1)
	for i, code := range hotp {
		r, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: code})
		if err != nil || r.Counter != uint64(i) {
			t.Fatalf("HOTP counter %d: %v", i, err)
		}
		if v, _ := r.Secret("door"); string(v) != "4711" {
			t.Fatalf("secret %q", v)
		}
	}
	at := time.Date(2030, 1, 1, 0, 30, 0, 0, time.UTC)
	c.Set(at)
	code := codesAt(t, otp.DefaultTOTP, seed, at.Unix())[0]
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: code, PIN: "2468"}); err != nil {
		t.Fatalf("TOTP+PIN: %v", err)
	}
	if _, err := s.Verify(ctx, offline.Attempt{User: "bob", Code: code, PIN: "2468"}); err == nil {
		t.Fatal("TOTP code accepted twice")
	}
	for _, name := range []string{"fail_flipped_bit.bundle", "fail_other_device.bundle", "fail_unknown_key.bundle"} {
		if _, err := s.Import(ctx, readTestdata(t, name)); err == nil {
			t.Fatalf("%s imported", name)
		}
	}
}

// Bundles of version 1 (issued before Used and Acked) still decode, import
// and verify until they expire: neither the floor nor the fork check applies.
func TestVersion1BundleStillWorks(t *testing.T) {
	data := readTestdata(t, "good_hotp_v1.bundle")
	b, err := bundlefmt.Decode(data, trusted(t), bundlefmt.Expect{Device: "dev-1", Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if b.Version != 1 || b.Used != -1 || b.Acked != 0 {
		t.Fatalf("version %d, used %d, acked %d", b.Version, b.Used, b.Acked)
	}
	if b2, err := bundlefmt.Decode(readTestdata(t, "good_hotp.bundle"), trusted(t), bundlefmt.Expect{Device: "dev-1", Now: t0}); err != nil || b2.Version != bundlefmt.BundleVersion {
		t.Fatalf("good_hotp.bundle is not the current version: %v", err)
	}
	s, _, _ := newStore(t, quickPolicy)
	if _, err := s.Import(ctx, data); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Verify(ctx, offline.Attempt{User: "alice", Code: hotpCodes(t, 1)[0]}); err != nil || r.Counter != 0 {
		t.Fatalf("verify: %v", err)
	}
}
