package pin

import (
	"strings"
	"testing"
)

func TestHashAndCheck(t *testing.T) {
	h, err := Hash("4711")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(h), "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("not a PHC argon2id string: %s", h)
	}
	if strings.Contains(string(h), "4711") {
		t.Fatal("the hash contains the PIN")
	}
	if !Check(h, "4711") || Check(h, "4712") || Check(h, "") {
		t.Fatal("Check disagrees with Hash")
	}
	h2, err := Hash("4711")
	if err != nil {
		t.Fatal(err) // a nil second hash would differ from the first and prove nothing
	}
	if string(h) == string(h2) {
		t.Fatal("two hashes of one PIN are equal: the salt is not random")
	}
}

func TestValidate(t *testing.T) {
	for _, p := range []string{"1234", "123456789012"} {
		if Validate(p) != nil {
			t.Errorf("%q refused", p)
		}
	}
	for _, p := range []string{"", "123", "1234567890123", "12a4", "１２３４", "12 34"} {
		if Validate(p) == nil {
			t.Errorf("%q accepted", p)
		}
		if _, err := Hash(p); err == nil {
			t.Errorf("Hash(%q) accepted", p)
		}
	}
}

func TestCheckMalformedHashes(t *testing.T) {
	for _, h := range []string{"", "plain", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
		"$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHRzYWx0c2E$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=2,p=0$c2FsdA$aGFzaA", "$argon2id$v=19$m=19456,t=2,p=1$!!$aGFzaA",
		"$argon2id$v=19$m=19456,t=0,p=1$c2FsdHNhbHRzYWx0c2E$" + strings.Repeat("A", 43)} {
		if Check([]byte(h), "1234") {
			t.Errorf("malformed hash %q matched", h)
		}
	}
}
