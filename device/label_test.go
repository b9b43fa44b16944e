package device

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/base45"
	"github.com/outpost-auth/outpost/internal/proctest"
)

// fixedKeys are deterministic keys so the named cases below are stable.
func fixedP256(t testing.TB) *ecdsa.PublicKey {
	t.Helper()
	// The P-256 base point: a valid key whose encoding is fixed.
	c := elliptic.P256()
	return &ecdsa.PublicKey{Curve: c, X: c.Params().Gx, Y: c.Params().Gy}
}

func fixedEd25519() ed25519.PublicKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)).Public().(ed25519.PublicKey)
}

// raw builds a payload from body bytes, with a correct checksum unless
// sum is given.
func raw(body []byte, sum ...byte) string {
	if sum == nil {
		s := sha256.Sum256(body)
		sum = s[:4]
	}
	return Prefix + base45.Encode(append(append([]byte(nil), body...), sum...))
}

func body(version, kt byte, serial, model string, key []byte, extra ...byte) []byte {
	b := []byte{version, kt, byte(len(serial))}
	b = append(b, serial...)
	b = append(b, byte(len(model)))
	b = append(b, model...)
	b = append(b, byte(len(key)))
	b = append(b, key...)
	return append(b, extra...)
}

func TestDecodeLabelCases(t *testing.T) {
	p256 := elliptic.MarshalCompressed(elliptic.P256(), fixedP256(t).X, fixedP256(t).Y)
	ed := []byte(fixedEd25519())
	long := strings.Repeat("S", 65)
	good := body(1, 1, "SN-0001", "gw-100", p256)
	goodPayload := raw(good)
	badPoint := append([]byte{2}, bytes.Repeat([]byte{0xff}, 32)...) // x >= p
	tests := []struct {
		name    string
		payload string
		err     error
	}{
		{"good_p256", goodPayload, nil},
		{"good_ed25519", raw(body(1, 2, "SN-0002", "sensor.v2", ed)), nil},
		{"good_longest", raw(body(1, 1, strings.Repeat("S", 64), strings.Repeat("m", 64), p256)), nil},
		{"fail_checksum", raw(good, 0, 0, 0, 0), ErrChecksum},
		{"fail_truncated_key", raw(good[:len(good)-1]), ErrMalformed},
		{"fail_version_0", raw(body(0, 1, "SN-0001", "gw-100", p256)), ErrVersion},
		{"fail_version_2", raw(body(2, 1, "SN-0001", "gw-100", p256)), ErrVersion},
		{"fail_key_type", raw(body(1, 9, "SN-0001", "gw-100", p256)), ErrMalformed},
		{"fail_key_type_mismatch", raw(body(1, 2, "SN-0001", "gw-100", p256)), ErrMalformed},
		{"fail_bad_point", raw(body(1, 1, "SN-0001", "gw-100", badPoint)), ErrMalformed},
		{"fail_truncated_body", raw(good[:8]), ErrMalformed},
		{"fail_truncated_text", goodPayload[:len(goodPayload)-2], ErrChecksum},
		{"fail_truncated_tiny", raw([]byte{1}), ErrMalformed},
		{"fail_empty", "", ErrMalformed},
		{"fail_prefix_only", Prefix, ErrMalformed},
		{"fail_oversize_field", raw(body(1, 1, long, "gw-100", p256)), ErrMalformed},
		{"fail_oversize_text", Prefix + strings.Repeat("0", MaxPayload), ErrMalformed},
		{"fail_trailing_data", raw(body(1, 1, "SN-0001", "gw-100", p256, 0)), ErrMalformed},
		{"fail_bad_serial", raw(body(1, 1, "SN 0001", "gw-100", p256)), ErrMalformed},
		{"fail_zero_length_model", raw(body(1, 1, "SN-0001", "", p256)), ErrMalformed},
		{"fail_wrong_prefix", "OPX:" + goodPayload[len(Prefix):], ErrMalformed},
		{"fail_lowercase", strings.ToLower(goodPayload), ErrMalformed},
		{"fail_garbage", "OPD:@@@@", ErrMalformed},
		{"fail_base45_length", goodPayload + "AA", ErrMalformed},
		{"fail_base45_overflow", Prefix + "GGW", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := DecodeLabel(tt.payload)
			if tt.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				again, err := l.Payload()
				if err != nil || again != tt.payload {
					t.Fatalf("re-encoded %q, %v; want %q", again, err, tt.payload)
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if l != nil {
				t.Fatal("a label came back with an error")
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	for _, kt := range []KeyType{P256, Ed25519} {
		t.Run(kt.String(), func(t *testing.T) {
			key, err := GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			l, err := NewLabel("SN-0042", "gw-100", key.Public())
			if err != nil {
				t.Fatal(err)
			}
			p, err := l.Payload()
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(`^[0-9A-Z $%*+\-./:]+$`).MatchString(p) {
				t.Fatalf("payload %q leaves the QR alphanumeric set", p)
			}
			got, err := DecodeLabel(p)
			if err != nil {
				t.Fatal(err)
			}
			if got.Serial != l.Serial || got.Model != l.Model || got.KeyType() != kt {
				t.Fatalf("got %+v", got)
			}
			type equaler interface{ Equal(x crypto.PublicKey) bool }
			if !key.Public().(equaler).Equal(got.PublicKey) {
				t.Fatal("public key differs")
			}
			fb, err := got.Fallback()
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(`^SN-0042 [A-Z2-7]{4}(-[A-Z2-7]{4}){4}$`).MatchString(fb) {
				t.Fatalf("fallback %q", fb)
			}
			if len(p) > MaxPayload {
				t.Fatalf("payload of %d > MaxPayload %d", len(p), MaxPayload)
			}
		})
	}
}

func TestNewLabelRejects(t *testing.T) {
	pub := fixedP256(t)
	for name, tc := range map[string]struct {
		serial, model string
		pub           any
	}{
		"empty_serial": {"", "m", pub},
		"long_model":   {"s", strings.Repeat("m", 65), pub},
		"space":        {"s 1", "m", pub},
		"p384":         {"s", "m", &ecdsa.PublicKey{Curve: elliptic.P384(), X: big.NewInt(1), Y: big.NewInt(1)}},
		"rsa_like":     {"s", "m", "not a key"},
		"short_ed":     {"s", "m", ed25519.PublicKey{1, 2}},
	} {
		if _, err := NewLabel(tc.serial, tc.model, tc.pub); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestKeyFile(t *testing.T) {
	for _, kt := range []KeyType{P256, Ed25519} {
		t.Run(kt.String(), func(t *testing.T) {
			key, err := GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "device.key")
			if err := WriteKeyFile(path, key); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
			}
			b, _ := os.ReadFile(path)
			if !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----\n")) {
				t.Fatalf("not PKCS#8 PEM: %.40q", b)
			}
			back, err := ReadKeyFile(path)
			if err != nil {
				t.Fatal(err)
			}
			type equaler interface {
				Equal(x crypto.PrivateKey) bool
			}
			if !back.(equaler).Equal(key) {
				t.Fatal("key read back differs")
			}
			other, _ := GenerateKey(kt)
			if err := WriteKeyFile(path, other); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("overwrite: err = %v, want fs.ErrExist", err)
			}
			if b2, _ := os.ReadFile(path); !bytes.Equal(b, b2) {
				t.Fatal("the key file changed")
			}
		})
	}
}

// TestZbarimgDecodesLabel reads the PNG label back with a real QR reader.
// zbarimg comes from Debian's zbar-tools; the test skips without it
// unless OUTPOST_REQUIRE_INTEROP=1.
func TestZbarimgDecodesLabel(t *testing.T) {
	for _, kt := range []KeyType{P256, Ed25519} {
		t.Run(kt.String(), func(t *testing.T) {
			key, err := GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			l, err := NewLabel(strings.Repeat("S", 64), strings.Repeat("M", 64), key.Public())
			if err != nil {
				t.Fatal(err)
			}
			want, _ := l.Payload()
			png, err := l.PNG(0)
			if err != nil {
				t.Fatal(err)
			}
			got := proctest.Zbarimg(t, png)
			if got != want {
				t.Fatalf("zbarimg read\n%q\nwant\n%q", got, want)
			}
			if _, err := DecodeLabel(got); err != nil {
				t.Fatal(err)
			}
			if text, err := l.Terminal(); err != nil || !strings.Contains(text, "█") && !strings.Contains(text, "▀") {
				t.Fatalf("terminal rendering: %v %q", err, text)
			}
		})
	}
}

// FuzzDecodeLabel: the decoder never panics, and anything it accepts
// encodes back to the same text.
func FuzzDecodeLabel(f *testing.F) {
	f.Add(raw(body(1, 1, "SN-0001", "gw-100", elliptic.MarshalCompressed(elliptic.P256(), elliptic.P256().Params().Gx, elliptic.P256().Params().Gy))))
	f.Add(raw(body(1, 2, "SN-0002", "sensor.v2", fixedEd25519())))
	f.Add("OPD:")
	f.Fuzz(func(t *testing.T, payload string) {
		l, err := DecodeLabel(payload)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		again, err := l.Payload()
		if err != nil || again != payload {
			t.Fatalf("accepted %q, re-encodes to %q, %v", payload, again, err)
		}
	})
}
