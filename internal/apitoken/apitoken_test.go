package apitoken

import (
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/keys"
)

func TestNewCheckHash(t *testing.T) {
	m, _ := keys.GenerateMaster()
	h := NewHasher(m)
	tok, hash, err := h.New()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, Prefix) || Check(tok) != nil {
		t.Fatalf("malformed new token %q", tok)
	}
	if !Equal(hash, h.Hash(tok)) {
		t.Fatal("hash is not deterministic")
	}
	tok2, _, _ := h.New()
	if tok == tok2 {
		t.Fatal("two tokens are equal")
	}
	other, _ := keys.GenerateMaster()
	if Equal(hash, NewHasher(other).Hash(tok)) {
		t.Fatal("the hash does not depend on the master key")
	}
	for _, bad := range []string{"", "opk_", "xyz_" + tok[4:], tok + "A", tok[:len(tok)-1] + "*"} {
		if Check(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
