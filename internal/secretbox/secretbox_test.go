package secretbox

import (
	"bytes"
	"errors"
	"testing"

	"github.com/outpost-auth/outpost/internal/keys"
)

func TestSealOpenBinding(t *testing.T) {
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	b := New(m, 0, "token-seed")
	ct, err := b.Seal([]byte("seed"), []byte("realm/alice/tok_1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte("seed")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	pt, err := b.Open(ct, []byte("realm/alice/tok_1"))
	if err != nil || string(pt) != "seed" {
		t.Fatalf("open: %q %v", pt, err)
	}
	other, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), ct...)
	flipped[len(flipped)-1] ^= 1
	for name, try := range map[string]func() ([]byte, error){
		"moved to another row": func() ([]byte, error) { return b.Open(ct, []byte("realm/bob/tok_1")) },
		"other purpose":        func() ([]byte, error) { return New(m, 0, "other").Open(ct, []byte("realm/alice/tok_1")) },
		"other epoch":          func() ([]byte, error) { return New(m, 1, "token-seed").Open(ct, []byte("realm/alice/tok_1")) },
		"other master key":     func() ([]byte, error) { return New(other, 0, "token-seed").Open(ct, []byte("realm/alice/tok_1")) },
		"flipped bit":          func() ([]byte, error) { return b.Open(flipped, []byte("realm/alice/tok_1")) },
		"truncated":            func() ([]byte, error) { return b.Open(ct[:10], []byte("realm/alice/tok_1")) },
	} {
		if _, err := try(); !errors.Is(err, ErrOpen) {
			t.Errorf("%s: %v, want ErrOpen", name, err)
		}
	}
}
