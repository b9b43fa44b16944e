package otp_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/otp"
)

// uriCase is one testdata/uri file: "key: value" lines after # comments.
// The uri line is the input; good_* files list the expected key fields,
// fail_* files the expected error text.
type uriCase map[string]string

func readURICase(t *testing.T, path string) uriCase {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := uriCase{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			k, v = strings.TrimSuffix(line, ":"), ""
		}
		c[k] = v
	}
	if _, ok := c["uri"]; !ok {
		t.Fatalf("%s has no uri line", path)
	}
	return c
}

func uriCases(t *testing.T, prefix string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "uri", prefix+"*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/uri/%s* files: %v", prefix, err)
	}
	return files
}

func keyEqual(a, b *otp.Key) bool {
	return a.Params == b.Params && bytes.Equal(a.Secret, b.Secret) && a.Issuer == b.Issuer &&
		a.Account == b.Account && a.Counter == b.Counter
}

func TestParseURIGood(t *testing.T) {
	for _, f := range uriCases(t, "good_") {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c := readURICase(t, f)
			k, err := otp.ParseURI(c["uri"])
			if err != nil {
				t.Fatalf("ParseURI: %v", err)
			}
			got := map[string]string{
				"type":       k.Type.String(),
				"algorithm":  k.Algorithm.String(),
				"digits":     strconv.Itoa(k.Digits),
				"period":     strconv.FormatUint(k.Period, 10),
				"counter":    strconv.FormatUint(k.Counter, 10),
				"issuer":     k.Issuer,
				"account":    k.Account,
				"secret_hex": hex.EncodeToString(k.Secret),
			}
			for field, want := range c {
				if field == "uri" {
					continue
				}
				if g, ok := got[field]; !ok || g != want {
					t.Errorf("%s = %q, want %q", field, g, want)
				}
			}
			if k.T0 != 0 {
				t.Errorf("T0 = %d", k.T0)
			}
			if err := k.Validate(); err != nil {
				t.Errorf("a parsed key fails Validate: %v", err)
			}
			// Round trip: URI() parses back to an equal key and is canonical.
			u := k.URI()
			k2, err := otp.ParseURI(u)
			if err != nil {
				t.Fatalf("ParseURI(URI()) of %q: %v", u, err)
			}
			if !keyEqual(k, k2) {
				t.Errorf("round trip changed the key:\n%+v\n%+v", k, k2)
			}
			if u2 := k2.URI(); u2 != u {
				t.Errorf("URI() is not canonical:\n%s\n%s", u, u2)
			}
		})
	}
}

func TestParseURIFail(t *testing.T) {
	for _, f := range uriCases(t, "fail_") {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c := readURICase(t, f)
			want, ok := c["error"]
			if !ok || want == "" {
				t.Fatalf("%s has no error line", f)
			}
			k, err := otp.ParseURI(c["uri"])
			if err == nil {
				t.Fatalf("ParseURI accepted it: %+v", k)
			}
			if k != nil {
				t.Errorf("ParseURI returned a key with its error")
			}
			if !errors.Is(err, otp.ErrInvalidURI) {
				t.Errorf("error %v does not wrap ErrInvalidURI", err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
			// The message must not carry the secret (or any long part of it).
			if _, q, ok := strings.Cut(c["uri"], "secret="); ok {
				sec, _, _ := strings.Cut(q, "&")
				if len(sec) >= 8 && strings.Contains(err.Error(), sec[:8]) {
					t.Errorf("error %q contains the secret", err)
				}
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long: user input is not truncated", len(err.Error()))
			}
		})
	}
}

// Keys with awkward names survive URI() and ParseURI unchanged.
func TestURIRoundTrip(t *testing.T) {
	secret := []byte("0123456789abcdefghij")
	names := []struct{ issuer, account string }{
		{"", "alice"},
		{"Example", "alice@example.com"},
		{"ACME Co", "john doe"},
		{"Example", "alice:admin:eu"},
		{"Bäckerei Müller", "jürgen"},
		{"東京", "さくら 🌸"},
		{"a&b=c", "x?y#z"},
		{"100% sure", "50%25"},
		{"plus+sign", "a+b"},
		{"slash/issuer", "/leading/slash"},
		{"semi;colon", "comma,account"},
		{"quote\"s", "it's"},
		{"", "dev-7"},
	}
	params := []otp.Params{
		otp.DefaultTOTP,
		{Type: otp.TypeTOTP, Algorithm: otp.SHA256, Digits: 8, Period: 60},
		{Type: otp.TypeTOTP, Algorithm: otp.SHA512, Digits: 10, Period: 1},
		{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 7},
	}
	for _, n := range names {
		for _, p := range params {
			k := &otp.Key{Params: p, Secret: secret, Issuer: n.issuer, Account: n.account}
			if p.Type == otp.TypeHOTP {
				k.Counter = 1 << 40
			}
			if err := k.Validate(); err != nil {
				t.Fatalf("Validate(%q, %q): %v", n.issuer, n.account, err)
			}
			u := k.URI()
			got, err := otp.ParseURI(u)
			if err != nil {
				t.Fatalf("ParseURI(%q): %v", u, err)
			}
			if !keyEqual(k, got) {
				t.Errorf("round trip of %q:\n got %+v\nwant %+v", u, got, k)
			}
			if strings.Contains(u, "+") {
				t.Errorf("URI %q contains '+', which apps show as a plus or a space", u)
			}
		}
	}
}

func TestURIFormat(t *testing.T) {
	k := &otp.Key{Params: otp.DefaultTOTP, Secret: []byte("12345678901234567890"), Issuer: "ACME Co", Account: "john doe"}
	want := "otpauth://totp/ACME%20Co:john%20doe?algorithm=SHA1&digits=6&issuer=ACME%20Co&period=30&secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	if got := k.URI(); got != want {
		t.Errorf("URI() =\n%s\nwant\n%s", got, want)
	}
	h := &otp.Key{Params: otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA256, Digits: 8}, Secret: []byte("12345678901234567890"), Account: "dev-7", Counter: 3}
	want = "otpauth://hotp/dev-7?algorithm=SHA256&counter=3&digits=8&secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	if got := h.URI(); got != want {
		t.Errorf("URI() =\n%s\nwant\n%s", got, want)
	}
}

func TestKeyValidate(t *testing.T) {
	good := func() *otp.Key {
		return &otp.Key{Params: otp.DefaultTOTP, Secret: bytes.Repeat([]byte{7}, 20), Issuer: "Example", Account: "alice"}
	}
	tests := []struct {
		name   string
		modify func(*otp.Key)
		msg    string
	}{
		{"T0 set", func(k *otp.Key) { k.T0 = 60 }, "cannot carry T0"},
		{"bad params", func(k *otp.Key) { k.Digits = 4 }, "use 6 to 10"},
		{"period on HOTP", func(k *otp.Key) { k.Type = otp.TypeHOTP }, "HOTP has no period"},
		{"counter on TOTP", func(k *otp.Key) { k.Counter = 1 }, "TOTP has no counter"},
		{"short secret", func(k *otp.Key) { k.Secret = k.Secret[:15] }, "at least 16"},
		{"no secret", func(k *otp.Key) { k.Secret = nil }, "at least 16"},
		{"huge secret", func(k *otp.Key) { k.Secret = make([]byte, otp.MaxSecretLen+1) }, "more than 1024"},
		{"issuer colon", func(k *otp.Key) { k.Issuer = "a:b" }, "contains a colon"},
		{"account colon without issuer", func(k *otp.Key) { k.Issuer, k.Account = "", "a:b" }, "set an issuer"},
		{"empty account", func(k *otp.Key) { k.Account = "" }, "account name is missing"},
		{"account spaces", func(k *otp.Key) { k.Account = " alice" }, "spaces around it"},
		{"issuer spaces", func(k *otp.Key) { k.Issuer = "Example " }, "spaces around it"},
		{"account newline", func(k *otp.Key) { k.Account = "alice\nroot" }, "control character"},
		{"issuer escape", func(k *otp.Key) { k.Issuer = "\x1b[31mred" }, "control character"},
		{"account invalid UTF-8", func(k *otp.Key) { k.Account = "\xff" }, "not valid UTF-8"},
		{"URI too long", func(k *otp.Key) { k.Account = strings.Repeat("é", 1500) }, "more than 4096"},
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("valid key: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := good()
			tt.modify(k)
			err := k.Validate()
			if !errors.Is(err, otp.ErrInvalidURI) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Validate = %v; want ErrInvalidURI saying %q", err, tt.msg)
			}
		})
	}
}

func TestSecretCoding(t *testing.T) {
	for n := 0; n <= 64; n++ {
		b := bytes.Repeat([]byte{0xa5}, n)
		s := otp.EncodeSecret(b)
		if strings.Contains(s, "=") {
			t.Fatalf("EncodeSecret pads: %q", s)
		}
		if n == 0 {
			continue
		}
		for _, in := range []string{s, strings.ToLower(s), s + strings.Repeat("=", (8-len(s)%8)%8)} {
			got, err := otp.DecodeSecret(in)
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("DecodeSecret(%q) = %x, %v; want %x", in, got, err, b)
			}
		}
	}
	for _, bad := range []string{"", "   ", "====", "A", "ABC", "ABCDEF", "GEZDGNBVG", "GEZDGNBV1", "GEZD-GNBV", "ÄBCDEFGH",
		strings.Repeat("A", 2000), strings.Repeat("A ", 1<<20)} {
		if _, err := otp.DecodeSecret(bad); err == nil {
			t.Errorf("DecodeSecret(%.20q) accepted it", bad)
		}
	}
	if b, err := otp.DecodeSecret(strings.Repeat("A", 1637)); err != nil || len(b) != otp.MaxSecretLen-1 {
		t.Errorf("a 1023-byte secret: %d bytes, %v", len(b), err)
	}
}
