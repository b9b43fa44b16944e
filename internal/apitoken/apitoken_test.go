package apitoken

import (
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/keys"
)

func TestNewCheckHash(t *testing.T) {
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
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
	tok2, _, err := h.New()
	if err != nil {
		t.Fatal(err) // an empty second token would differ and prove nothing
	}
	if tok == tok2 {
		t.Fatal("two tokens are equal")
	}
	other, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	if Equal(hash, NewHasher(other).Hash(tok)) {
		t.Fatal("the hash does not depend on the master key")
	}
	for _, bad := range []string{"", "opk_", "xyz_" + tok[4:], tok + "A", tok[:len(tok)-1] + "*"} {
		if Check(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
