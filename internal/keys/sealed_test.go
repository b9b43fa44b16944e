package keys

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testKDF keeps unit tests fast; the accepted minimum memory cost.
var testKDF = KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1}

// vectorPass is the passphrase of every sealed file in testdata.
var vectorPass = []byte("correct horse battery staple")

var vectorCreated = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func subjectPayload() []byte { return []byte("12345678901234567890") }

func mustSeal(t testing.TB, pass []byte, kdf KDFParams, s Sealed, payload []byte) []byte {
	t.Helper()
	b, err := Seal(pass, kdf, s, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpenRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		s       Sealed
		payload []byte
	}{
		{"master", Sealed{Purpose: "master-key"}, testSecret()},
		{"subject", Sealed{Purpose: "subject-key", Subject: "tech-042", Epoch: 7, Meta: map[string]string{"digits": "6", "issuer": "Outpost"}}, subjectPayload()},
		{"escapes", Sealed{Purpose: "p", Subject: "técnico <042> & \u2028 \"quoted\"", Meta: map[string]string{"k<>": "v\x00"}}, []byte{0}},
		{"empty payload", Sealed{Purpose: "p"}, []byte{}},
		{"max payload", Sealed{Purpose: "p"}, bytes.Repeat([]byte{0xa5}, MaxSealedPayload)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.s.Created = vectorCreated.Add(3 * time.Hour)
			data := mustSeal(t, vectorPass, testKDF, tc.s, tc.payload)
			if bytes.Contains(data, tc.payload) && len(tc.payload) > 4 {
				t.Fatal("the payload appears in the clear in the sealed file")
			}
			s, pt, err := Open(vectorPass, data)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pt, tc.payload) {
				t.Fatalf("payload %x, want %x", pt, tc.payload)
			}
			if s.Purpose != tc.s.Purpose || s.Subject != tc.s.Subject || s.Epoch != tc.s.Epoch || s.Unsealed {
				t.Fatalf("header %+v, sealed %+v", s, tc.s)
			}
			if len(s.Meta) != len(tc.s.Meta) {
				t.Fatalf("meta %v, want %v", s.Meta, tc.s.Meta)
			}
			for k, v := range tc.s.Meta {
				if s.Meta[k] != v {
					t.Fatalf("meta %v, want %v", s.Meta, tc.s.Meta)
				}
			}
			if !s.Created.Equal(tc.s.Created) || s.Created.Location() != time.UTC {
				t.Fatalf("created %v, sealed with %v", s.Created, tc.s.Created)
			}
		})
	}
}

func TestSealIsRandomized(t *testing.T) {
	s := Sealed{Purpose: "p", Created: vectorCreated}
	a := mustSeal(t, vectorPass, testKDF, s, testSecret())
	b := mustSeal(t, vectorPass, testKDF, s, testSecret())
	var fa, fb sealedFile
	if err := json.Unmarshal(a, &fa); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fb); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(fa.Salt, fb.Salt) || bytes.Equal(fa.Nonce, fb.Nonce) || bytes.Equal(fa.Ciphertext, fb.Ciphertext) {
		t.Fatal("two seals of the same payload share salt, nonce or ciphertext")
	}
}

func TestSealDefaultKDF(t *testing.T) {
	data := mustSeal(t, vectorPass, DefaultKDF, Sealed{Purpose: "master-key"}, testSecret())
	var f sealedFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if *f.Params != DefaultKDF || f.KDF != "argon2id" {
		t.Fatalf("file records kdf %s %+v, want argon2id %+v", f.KDF, *f.Params, DefaultKDF)
	}
	if _, pt, err := Open(vectorPass, data); err != nil || !bytes.Equal(pt, testSecret()) {
		t.Fatalf("Open at DefaultKDF: %v", err)
	}
	if err := checkKDF(DefaultKDF); err != nil {
		t.Fatalf("DefaultKDF is outside the accepted range: %v", err)
	}
}

func TestOpenWrongPassphrase(t *testing.T) {
	data := mustSeal(t, vectorPass, testKDF, Sealed{Purpose: "p"}, testSecret())
	for _, p := range [][]byte{nil, {}, []byte("correct horse battery stapl"), []byte("correct horse battery staple "), []byte("Correct horse battery staple")} {
		s, pt, err := Open(p, data)
		if !errors.Is(err, ErrWrongPassphrase) {
			t.Errorf("Open(%q) = %v, want ErrWrongPassphrase", p, err)
		}
		if pt != nil || s.Purpose != "" {
			t.Errorf("Open(%q) returned data with its error", p)
		}
		if err != nil && strings.Contains(err.Error(), string(vectorPass[:8])) {
			t.Errorf("error mentions the passphrase: %v", err)
		}
	}
}

func TestSealRejects(t *testing.T) {
	s := Sealed{Purpose: "p"}
	if _, err := Seal([]byte("1234567"), testKDF, s, nil); !errors.Is(err, ErrWeakPassphrase) {
		t.Errorf("7-character passphrase: %v, want ErrWeakPassphrase", err)
	}
	if _, err := Seal(nil, testKDF, s, nil); !errors.Is(err, ErrWeakPassphrase) {
		t.Errorf("empty passphrase: %v, want ErrWeakPassphrase", err)
	}
	if _, err := Seal([]byte("12345678"), testKDF, s, nil); err != nil {
		t.Errorf("8-character passphrase refused: %v", err)
	}
	for _, k := range []KDFParams{
		{Time: 0, MemoryKiB: 8 << 10, Threads: 1},
		{Time: 11, MemoryKiB: 8 << 10, Threads: 1},
		{Time: 1, MemoryKiB: 1024, Threads: 1},
		{Time: 1, MemoryKiB: 1<<20 + 1, Threads: 1},
		{Time: 1, MemoryKiB: 8 << 10, Threads: 0},
		{Time: 1, MemoryKiB: 8 << 10, Threads: 17},
	} {
		if _, err := Seal(vectorPass, k, s, nil); err == nil {
			t.Errorf("Seal accepted KDF cost %+v", k)
		}
	}
	if _, err := Seal(vectorPass, testKDF, s, make([]byte, MaxSealedPayload+1)); err == nil {
		t.Error("Seal accepted an oversize payload")
	}
	if _, err := SealInsecure(s, make([]byte, MaxSealedPayload+1)); err == nil {
		t.Error("SealInsecure accepted an oversize payload")
	}
}

func TestInsecureFile(t *testing.T) {
	data, err := SealInsecure(Sealed{Purpose: "master-key", Subject: "demo"}, testSecret())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{nil, vectorPass} {
		s, pt, err := Open(p, data)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Unsealed || s.Purpose != "master-key" || s.Subject != "demo" || !bytes.Equal(pt, testSecret()) {
			t.Fatalf("Open(unsealed) = %+v %x", s, pt)
		}
	}
	if !bytes.Contains(data, []byte(`"kdf": "none"`)) || !bytes.Contains(data, []byte("insecure_plaintext")) {
		t.Fatalf("an unsealed file must say so in plain sight:\n%s", data)
	}
	// A sealed file is never reported as unsealed.
	s, _, err := Open(vectorPass, mustSeal(t, vectorPass, testKDF, Sealed{Purpose: "p"}, nil))
	if err != nil || s.Unsealed {
		t.Fatalf("sealed file: Unsealed=%v err=%v", s.Unsealed, err)
	}
}

// editFile decodes a sealed file, lets edit change it, and encodes it again.
func editFile(t testing.TB, data []byte, edit func(*sealedFile)) []byte {
	t.Helper()
	var f sealedFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	edit(&f)
	b, err := marshalFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// editJSON decodes a file as a generic JSON object, so that tests can add,
// remove and mistype fields.
func editJSON(t testing.TB, data []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// tamperings change one authenticated value of a sealed file each. The
// result must fail as ErrWrongPassphrase: the header is GCM's additional data.
func tamperings() map[string]func(*sealedFile) {
	return map[string]func(*sealedFile){
		"purpose":     func(f *sealedFile) { f.Purpose = "master-key" },
		"subject":     func(f *sealedFile) { f.Subject = "tech-043" },
		"no subject":  func(f *sealedFile) { f.Subject = "" },
		"epoch":       func(f *sealedFile) { f.Epoch++ },
		"meta value":  func(f *sealedFile) { f.Meta["digits"] = "8" },
		"meta added":  func(f *sealedFile) { f.Meta["extra"] = "" },
		"meta gone":   func(f *sealedFile) { f.Meta = nil },
		"created":     func(f *sealedFile) { f.Created = f.Created.Add(time.Second) },
		"kdf time":    func(f *sealedFile) { f.Params.Time++ },
		"kdf memory":  func(f *sealedFile) { f.Params.MemoryKiB += 1024 },
		"kdf threads": func(f *sealedFile) { f.Params.Threads++ },
		"salt":        func(f *sealedFile) { f.Salt[0] ^= 1 },
		"nonce":       func(f *sealedFile) { f.Nonce[11] ^= 0x80 },
		"ciphertext":  func(f *sealedFile) { f.Ciphertext[0] ^= 1 },
		"tag":         func(f *sealedFile) { f.Ciphertext[len(f.Ciphertext)-1] ^= 1 },
		"ciphertext truncated by one": func(f *sealedFile) {
			f.Ciphertext = f.Ciphertext[:len(f.Ciphertext)-1]
		},
	}
}

func TestOpenTamperedHeader(t *testing.T) {
	orig := mustSeal(t, vectorPass, testKDF, Sealed{Purpose: "subject-key", Subject: "tech-042", Epoch: 3,
		Meta: map[string]string{"digits": "6", "issuer": "Outpost"}}, subjectPayload())
	for name, edit := range tamperings() {
		t.Run(name, func(t *testing.T) {
			data := editFile(t, orig, edit)
			if bytes.Equal(data, orig) {
				t.Fatal("tampering changed nothing")
			}
			s, pt, err := Open(vectorPass, data)
			if !errors.Is(err, ErrWrongPassphrase) {
				t.Fatalf("Open(tampered %s) = %v, want ErrWrongPassphrase", name, err)
			}
			if pt != nil || s.Subject != "" {
				t.Fatal("returned content with the error")
			}
		})
	}
	// Re-encoding without a change still opens (the test's encoder is sound).
	if _, _, err := Open(vectorPass, editFile(t, orig, func(*sealedFile) {})); err != nil {
		t.Fatal(err)
	}
}

// Every byte of a sealed file matters or is formatting: flipping any one bit
// either leaves the values as they were or makes Open fail.
func TestOpenEveryBitFlip(t *testing.T) {
	orig := mustSeal(t, vectorPass, testKDF, Sealed{Purpose: "p", Subject: "s", Created: vectorCreated}, []byte("payload!"))
	want, wantPT, err := Open(vectorPass, orig)
	if err != nil {
		t.Fatal(err)
	}
	if testing.Short() {
		t.Skip("argon2id per flipped bit")
	}
	opened := 0
	for i := range orig {
		// One bit per byte keeps this to one argon2id run per byte; the
		// fuzzer (FuzzOpen) tries the rest.
		for _, bit := range []byte{0x01} {
			data := bytes.Clone(orig)
			data[i] ^= bit
			s, pt, err := Open(vectorPass, data)
			if err != nil {
				if !errors.Is(err, ErrWrongPassphrase) && !errors.Is(err, ErrMalformedFile) {
					t.Fatalf("byte %d bit %#x: unexpected error class %v", i, bit, err)
				}
				continue
			}
			opened++
			if !sameSealed(s, want) || !bytes.Equal(pt, wantPT) {
				t.Fatalf("byte %d bit %#x: opened with different content %+v %q", i, bit, s, pt)
			}
		}
	}
	t.Logf("%d of %d single-bit changes were formatting only (e.g. JSON key case) and opened unchanged", opened, len(orig))
}

func sameSealed(a, b Sealed) bool {
	if a.Purpose != b.Purpose || a.Subject != b.Subject || a.Epoch != b.Epoch || !a.Created.Equal(b.Created) || a.Unsealed != b.Unsealed || len(a.Meta) != len(b.Meta) {
		return false
	}
	for k, v := range a.Meta {
		if w, ok := b.Meta[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// ---- checked-in vectors: testdata/good_*.json and testdata/fail_*.json ----

type vectorWant struct {
	// err is nil for good files.
	err     error
	sealed  Sealed
	payload []byte
}

func vectorSubject() Sealed {
	return Sealed{Purpose: "subject-key", Subject: "tech-042", Epoch: 3, Created: vectorCreated,
		Meta: map[string]string{"type": "totp", "algorithm": "SHA1", "digits": "6", "period": "30", "issuer": "Outpost"}}
}

// vectorTable lists every file in testdata that TestVectors expects, with
// what opening it with vectorPass must give. A file in testdata without an
// entry, or an entry without a file, fails the test.
func vectorTable() map[string]vectorWant {
	master := Sealed{Purpose: "master-key", Created: vectorCreated}
	unicode := Sealed{Purpose: "subject-key", Subject: "técnico <042> & \u2028", Created: vectorCreated, Meta: map[string]string{"note": "\"quoted\"\t\\"}}
	unsealed := master
	unsealed.Unsealed = true
	m := map[string]vectorWant{
		"good_master.json":          {sealed: master, payload: testSecret()},
		"good_subject.json":         {sealed: vectorSubject(), payload: subjectPayload()},
		"good_subject_crlf.json":    {sealed: vectorSubject(), payload: subjectPayload()},
		"good_subject_compact.json": {sealed: vectorSubject(), payload: subjectPayload()},
		"good_unicode.json":         {sealed: unicode, payload: []byte{0, 1, 2}},
		"good_unsealed.json":        {sealed: unsealed, payload: testSecret()},
		"good_empty_meta.json":      {sealed: master, payload: testSecret()},
	}
	for _, name := range []string{"bad_mac", "tampered_purpose", "tampered_subject", "tampered_epoch",
		"tampered_meta", "tampered_created", "tampered_kdf_time", "tampered_kdf_memory", "tampered_salt",
		"tampered_nonce", "ciphertext_cut_by_one"} {
		m["fail_"+name+".json"] = vectorWant{err: ErrWrongPassphrase}
	}
	for _, name := range []string{"empty", "truncated", "truncated_header", "oversize", "trailing_data",
		"two_objects", "unknown_field", "unknown_nested_field", "version_2", "version_0", "wrong_format",
		"huge_memory", "huge_time", "huge_threads", "zero_threads", "toy_memory", "unknown_kdf",
		"no_kdf_params", "short_salt", "long_nonce", "no_ciphertext", "short_ciphertext", "huge_ciphertext",
		"bad_base64", "not_json", "array", "null", "string_epoch", "negative_epoch",
		"unsealed_with_ciphertext", "unsealed_downgrade", "sealed_with_plaintext", "unsealed_oversize_payload"} {
		m["fail_"+name+".json"] = vectorWant{err: ErrMalformedFile}
	}
	return m
}

// generateVectors writes testdata/good_* and fail_*. Only with -update.
func generateVectors(t *testing.T) {
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, err := filepath.Glob(filepath.Join("testdata", "good_*.json"))
	if err != nil {
		t.Fatal(err)
	}
	fails, err := filepath.Glob(filepath.Join("testdata", "fail_*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(old, fails...) {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	master := mustSeal(t, vectorPass, testKDF, Sealed{Purpose: "master-key", Created: vectorCreated}, testSecret())
	subject := mustSeal(t, vectorPass, testKDF, vectorSubject(), subjectPayload())
	write("good_master.json", master)
	write("good_subject.json", subject)
	write("good_subject_crlf.json", bytes.ReplaceAll(subject, []byte("\n"), []byte("\r\n")))
	var compact bytes.Buffer
	json.Compact(&compact, subject)
	write("good_subject_compact.json", compact.Bytes())
	write("good_unicode.json", mustSeal(t, vectorPass, testKDF, Sealed{Purpose: "subject-key", Subject: "técnico <042> & \u2028",
		Created: vectorCreated, Meta: map[string]string{"note": "\"quoted\"\t\\"}}, []byte{0, 1, 2}))
	unsealed, err := SealInsecure(Sealed{Purpose: "master-key", Created: vectorCreated}, testSecret())
	if err != nil {
		t.Fatal(err)
	}
	write("good_unsealed.json", unsealed)
	write("good_empty_meta.json", editJSON(t, master, func(m map[string]any) { m["meta"] = map[string]any{} }))

	ed := func(name string, edit func(*sealedFile)) { write("fail_"+name+".json", editFile(t, subject, edit)) }
	ej := func(name string, edit func(map[string]any)) { write("fail_"+name+".json", editJSON(t, subject, edit)) }
	ed("bad_mac", func(f *sealedFile) { f.Ciphertext[len(f.Ciphertext)-1] ^= 1 })
	ed("tampered_purpose", func(f *sealedFile) { f.Purpose = "master-key" })
	ed("tampered_subject", func(f *sealedFile) { f.Subject = "tech-043" })
	ed("tampered_epoch", func(f *sealedFile) { f.Epoch = 4 })
	ed("tampered_meta", func(f *sealedFile) { f.Meta["digits"] = "8" })
	ed("tampered_created", func(f *sealedFile) { f.Created = f.Created.Add(-time.Hour) })
	ed("tampered_kdf_time", func(f *sealedFile) { f.Params.Time = 2 })
	ed("tampered_kdf_memory", func(f *sealedFile) { f.Params.MemoryKiB = 9 << 10 })
	ed("tampered_salt", func(f *sealedFile) { f.Salt[15] ^= 0xff })
	ed("tampered_nonce", func(f *sealedFile) { f.Nonce[0] ^= 0xff })
	ed("ciphertext_cut_by_one", func(f *sealedFile) { f.Ciphertext = f.Ciphertext[:len(f.Ciphertext)-1] })

	write("fail_empty.json", nil)
	write("fail_truncated.json", subject[:len(subject)/2])
	write("fail_truncated_header.json", subject[:40])
	write("fail_oversize.json", editJSON(t, subject, func(m map[string]any) {
		m["meta"].(map[string]any)["padding"] = strings.Repeat("A", MaxSealedFileSize)
	}))
	write("fail_trailing_data.json", append(bytes.Clone(subject), "trailing"...))
	write("fail_two_objects.json", append(bytes.Clone(subject), subject...))
	ej("unknown_field", func(m map[string]any) { m["comment"] = "hello" })
	ej("unknown_nested_field", func(m map[string]any) { m["kdf_params"].(map[string]any)["salt_len"] = 16 })
	ej("version_2", func(m map[string]any) { m["version"] = 2 })
	ej("version_0", func(m map[string]any) { m["version"] = 0 })
	ej("wrong_format", func(m map[string]any) { m["format"] = "age-encryption.org/v1" })
	ej("huge_memory", func(m map[string]any) { m["kdf_params"].(map[string]any)["memory_kib"] = 4 << 20 })
	ej("huge_time", func(m map[string]any) { m["kdf_params"].(map[string]any)["time"] = 1000 })
	ej("huge_threads", func(m map[string]any) { m["kdf_params"].(map[string]any)["threads"] = 255 })
	ej("zero_threads", func(m map[string]any) { m["kdf_params"].(map[string]any)["threads"] = 0 })
	ej("toy_memory", func(m map[string]any) { m["kdf_params"].(map[string]any)["memory_kib"] = 8 })
	ej("unknown_kdf", func(m map[string]any) { m["kdf"] = "scrypt" })
	ej("no_kdf_params", func(m map[string]any) { delete(m, "kdf_params") })
	ed("short_salt", func(f *sealedFile) { f.Salt = f.Salt[:8] })
	ed("long_nonce", func(f *sealedFile) { f.Nonce = append(f.Nonce, 0) })
	ej("no_ciphertext", func(m map[string]any) { delete(m, "ciphertext") })
	ed("short_ciphertext", func(f *sealedFile) { f.Ciphertext = f.Ciphertext[:15] })
	ed("huge_ciphertext", func(f *sealedFile) { f.Ciphertext = make([]byte, MaxSealedPayload+17) })
	ej("bad_base64", func(m map[string]any) { m["ciphertext"] = "!!!not base64!!!" })
	write("fail_not_json.json", []byte{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0})
	write("fail_array.json", []byte("[]\n"))
	write("fail_null.json", []byte("null\n"))
	ej("string_epoch", func(m map[string]any) { m["epoch"] = "3" })
	ej("negative_epoch", func(m map[string]any) { m["epoch"] = -1 })
	write("fail_unsealed_with_ciphertext.json", editJSON(t, unsealed, func(m map[string]any) { m["ciphertext"] = "AAAAAAAAAAAAAAAAAAAAAA==" }))
	// An attacker who turns a sealed file into an "unsealed" one keeps the
	// encryption fields; Open refuses the mixture.
	ej("unsealed_downgrade", func(m map[string]any) { m["kdf"] = "none"; m["insecure_plaintext"] = "AAAA" })
	ej("sealed_with_plaintext", func(m map[string]any) { m["insecure_plaintext"] = "AAAA" })
	write("fail_unsealed_oversize_payload.json", editFile(t, unsealed, func(f *sealedFile) { f.Plaintext = make([]byte, MaxSealedPayload+1) }))
}

func TestVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	table := vectorTable()
	files, _ := filepath.Glob(filepath.Join("testdata", "*_*.json"))
	var names []string
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasPrefix(name, "good_") || strings.HasPrefix(name, "fail_") {
			names = append(names, name)
		}
	}
	for name := range table {
		if !slices.Contains(names, name) {
			t.Errorf("testdata/%s is missing (run go test ./internal/keys -run TestVectors -update once)", name)
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			want, ok := table[name]
			if !ok {
				t.Fatalf("testdata/%s has no entry in vectorTable", name)
			}
			data, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			s, pt, err := Open(vectorPass, data)
			if want.err != nil {
				if !errors.Is(err, want.err) {
					t.Fatalf("Open = %v, want %v", err, want.err)
				}
				if pt != nil {
					t.Fatal("payload returned with an error")
				}
				if slices.Contains([]string{"fail_huge_memory.json", "fail_huge_time.json", "fail_huge_threads.json"}, name) && !strings.Contains(err.Error(), "argon2id cost") {
					t.Errorf("error does not name the cost: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open = %v", err)
			}
			if !sameSealed(s, want.sealed) || !bytes.Equal(pt, want.payload) {
				t.Fatalf("Open = %+v %x, want %+v %x", s, pt, want.sealed, want.payload)
			}
			if !s.Unsealed {
				if _, _, err := Open([]byte("wrong passphrase"), data); !errors.Is(err, ErrWrongPassphrase) {
					t.Fatalf("wrong passphrase: %v", err)
				}
			}
		})
	}
}

// The size limit is checked before the file is parsed: a multi-megabyte
// input fails at once.
func TestOpenOversizeFast(t *testing.T) {
	big := bytes.Repeat([]byte(" "), 64<<20)
	start := time.Now()
	if _, _, err := Open(vectorPass, big); !errors.Is(err, ErrMalformedFile) {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("rejecting 64 MiB took %v", d)
	}
}
