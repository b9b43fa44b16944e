package base45

import (
	"bytes"
	"errors"
	"testing"
)

// The examples of RFC 9285, sections 4.3 and 4.4.
func TestRFC9285Vectors(t *testing.T) {
	for _, v := range []struct{ in, out string }{
		{"AB", "BB8"},
		{"Hello!!", "%69 VD92EX0"},
		{"base-45", "UJCLQE7W581"},
		{"ietf!", "QED8WEX0"},
		{"", ""},
	} {
		if got := Encode([]byte(v.in)); got != v.out {
			t.Errorf("Encode(%q) = %q, want %q", v.in, got, v.out)
		}
		got, err := Decode(v.out)
		if err != nil || string(got) != v.in {
			t.Errorf("Decode(%q) = %q, %v, want %q", v.out, got, err, v.in)
		}
		if EncodedLen(len(v.in)) != len(v.out) {
			t.Errorf("EncodedLen(%d) = %d, want %d", len(v.in), EncodedLen(len(v.in)), len(v.out))
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, s := range map[string]string{
		"length_1_mod_3":   "BB8A",
		"lowercase":        "bb8",
		"outside_alphabet": "BB#",
		"group_over_65535": "GGW", // 16 + 16*45 + 32*2025 = 65536
		"pair_over_255":    "::",  // 44 + 44*45
		"single_char":      "A",
	} {
		if _, err := Decode(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Decode(%q) err = %v, want ErrInvalid", name, s, err)
		}
	}
	// The largest values still decode.
	for s, want := range map[string][]byte{"FGW": {0xff, 0xff}, "U5": {0xff}} {
		if got, err := Decode(s); err != nil || !bytes.Equal(got, want) {
			t.Errorf("Decode(%q) = %x, %v, want %x", s, got, err, want)
		}
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add("BB8")
	f.Add("%69 VD92EX0")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := Decode(s)
		if err != nil {
			return
		}
		if Encode(b) != s {
			t.Fatalf("Decode(%q) = %x does not encode back", s, b)
		}
	})
}
