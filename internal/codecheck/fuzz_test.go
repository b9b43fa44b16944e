package codecheck

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/cost"
)

var update = flag.Bool("update", false, "rewrite testdata (the sealed vector and the fuzz seeds)")

func readHex(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

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

// TestWriteTestdata (-update) writes the sealed vector and the seeds of
// FuzzOpen and FuzzMatch.
func TestWriteTestdata(t *testing.T) {
	if !*update {
		t.Skip("only with -update")
	}
	sealed, err := Seal(testPub, bind, code)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("testdata/good_sealed.hex", []byte(hex.EncodeToString(sealed)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeCorpus(t, "FuzzOpen", "good", sealed)
	writeCorpus(t, "FuzzOpen", "empty", nil)
	writeCorpus(t, "FuzzOpen", "zeros", make([]byte, len(sealed)))
	writeCorpus(t, "FuzzOpen", "truncated", sealed[:MinSealedSize-1])
	h, _ := NewHashFloor(code, bind, cheap, cost.Floor{})
	f, _ := NewFingerprint(code, bind, cheap)
	hj, _ := json.Marshal(h)
	fj, _ := json.Marshal(f)
	writeCorpus(t, "FuzzMatch", "good_hash", hj)
	writeCorpus(t, "FuzzMatch", "good_fingerprint", fj)
	writeCorpus(t, "FuzzMatch", "huge_memory", []byte(`{"params":{"t":1,"m":4194304,"p":1},"salt":"AAAAAAAAAAAAAAAAAAAAAA==","sum":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`))
	writeCorpus(t, "FuzzMatch", "wide_value", []byte(`{"params":{"t":1,"m":64,"p":1},"salt":"AAAAAAAAAAAAAAAAAAAAAA==","bits":10,"value":4096}`))
	writeCorpus(t, "FuzzMatch", "not_json", []byte("{"))
}

// FuzzOpen: Open never panics, fails only with ErrMalformed, and what it
// opens is the code that was sealed (only the good seed opens).
func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Open(testPriv, bind, data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if got != code {
			t.Fatalf("opened %q", got)
		}
	})
}

// FuzzMatch: check data as a device reads it from its manifest (JSON):
// Match never panics, errs only with ErrMalformed, and a Hash only matches
// the code it was made from (a fingerprint may pass other codes, by design).
func FuzzMatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var h Hash
		if json.Unmarshal(data, &h) == nil && cheapParams(h.Params) {
			ok, err := h.Match(otherCode, bind)
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("hash: %v", err)
			}
			if ok {
				t.Fatal("a fuzzed hash matched a code it was not made from")
			}
		}
		var fp Fingerprint
		if json.Unmarshal(data, &fp) == nil && cheapParams(fp.Params) {
			if _, err := fp.Match(code, bind); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("fingerprint: %v", err)
			}
		}
	})
}

// cheapParams skips parameters too costly to run thousands of times a
// second while fuzzing; the bounds themselves are tested in TestMalformed.
func cheapParams(p Params) bool {
	return p.Time <= 2 && p.MemoryKiB <= 1024 && p.Threads <= 2 || p.KDF().Validate() != nil
}
