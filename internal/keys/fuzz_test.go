package keys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Seed corpora live in testdata/fuzz/FuzzName/. -update rewrites
// them from the good_* and fail_* vectors (see writeCorpus).

// writeCorpus writes one seed file in the go test fuzz v1 format.
func writeCorpus(t testing.TB, fuzzName, name string, data []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzzName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFuzzCorpus(t *testing.T) {
	if !*update {
		t.Skip("only with -update")
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*_*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata to seed FuzzOpen with: %v", err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if name == "derive_vectors.json" || name == "signer_vectors.json" || name == "fail_oversize.json" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		writeCorpus(t, "FuzzOpen", name, b)
	}
	m := testMaster(t)
	writeCorpus(t, "FuzzParsePublicPEM", "outpost", MarshalPublicPEM(m.Signer(0).Public))
	writeCorpus(t, "FuzzParsePublicPEM", "openssl_ed25519", []byte("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAiWoPqZRnSpWbsv3BLP2M75Ztym/08+ccowU/OjMUAGc=\n-----END PUBLIC KEY-----\n"))
	writeCorpus(t, "FuzzParsePublicPEM", "openssl_p256", []byte("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEI5WlrYjaIGkYX4AIjwG8JWAWsSzr\nkEke11KsHoNaQWy2s2633a5rw6RB/PBm7spIPbFYg1Jz+gMWoQXBLh5lsA==\n-----END PUBLIC KEY-----\n"))
	writeCorpus(t, "FuzzParsePublicPEM", "headers", []byte("-----BEGIN PUBLIC KEY-----\nProc-Type: 4,ENCRYPTED\n\nMCowBQYDK2VwAyEAiWoPqZRnSpWbsv3BLP2M75Ztym/08+ccowU/OjMUAGc=\n-----END PUBLIC KEY-----\n"))
	writeCorpus(t, "FuzzParsePublicPEM", "garbage", []byte("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n"))
}

// expensiveKDF reports whether data names an argon2id cost too high to run
// thousands of times a second while fuzzing. Open accepts up to 1 GiB and 10
// passes; those inputs are skipped, not failed: the bounds themselves are
// tested in TestVectors.
func expensiveKDF(data []byte) bool {
	var h struct {
		Params *KDFParams `json:"kdf_params"`
	}
	if json.Unmarshal(data, &h) != nil || h.Params == nil {
		return false
	}
	return h.Params.Time > 2 || h.Params.MemoryKiB > 16<<10 || h.Params.Threads > 2
}

// FuzzOpen: Open never panics, fails only with its two sentinel errors, and
// never returns a payload for a sealed file unless that file is one of the
// good vectors up to formatting (same authenticated values, same payload).
func FuzzOpen(f *testing.F) {
	type opened struct {
		s  Sealed
		pt []byte
	}
	var good []opened
	files, _ := filepath.Glob(filepath.Join("testdata", "good_*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		s, pt, err := Open(vectorPass, b)
		if err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		if !s.Unsealed {
			good = append(good, opened{s, pt})
		}
	}
	if len(good) == 0 {
		f.Fatal("no good vectors in testdata")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if expensiveKDF(data) {
			t.Skip()
		}
		s, pt, err := Open(vectorPass, data)
		if err != nil {
			if !errors.Is(err, ErrMalformedFile) && !errors.Is(err, ErrWrongPassphrase) {
				t.Fatalf("error of no documented class: %v", err)
			}
			if pt != nil || s.Purpose != "" {
				t.Fatal("payload or header returned with an error")
			}
			return
		}
		if s.Unsealed {
			// An unsealed file protects nothing by definition; callers warn.
			if len(pt) > MaxSealedPayload {
				t.Fatalf("unsealed payload of %d bytes", len(pt))
			}
			return
		}
		for _, g := range good {
			if sameSealed(g.s, s) && bytes.Equal(g.pt, pt) {
				return
			}
		}
		t.Fatalf("opened a sealed file that is none of the good vectors: %+v %x", s, pt)
	})
}

// FuzzParsePublicPEM: no panic; what parses is one 32-byte key that survives
// a Marshal/Parse round trip.
func FuzzParsePublicPEM(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePublicPEM(data)
		if err != nil {
			if !errors.Is(err, ErrNotPublicKey) || k != nil {
				t.Fatalf("ParsePublicPEM = %x, %v", k, err)
			}
			return
		}
		if len(k) != ed25519.PublicKeySize {
			t.Fatalf("key of %d bytes", len(k))
		}
		back, err := ParsePublicPEM(MarshalPublicPEM(k))
		if err != nil || !back.Equal(k) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
