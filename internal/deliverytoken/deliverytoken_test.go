package deliverytoken

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/base45"
)

var update = flag.Bool("update", false, "rewrite testdata (vectors and fuzz seeds)")

// Test clocks are in 2031, as in the other suites.
var (
	now     = time.Date(2031, 3, 4, 10, 0, 0, 0, time.UTC)
	due     = now.Add(24 * time.Hour)
	priv    = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	pub     = priv.Public().(ed25519.PublicKey)
	claims  = Claims{Realm: "acme", Delivery: "parcel-1", Version: 1, Device: "dev-7", NotAfter: due}
	other   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	alnumQR = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
)

func TestSignVerify(t *testing.T) {
	text, err := Sign(priv, claims)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text, Prefix) || len(text) > 160 {
		t.Fatalf("token %q (%d chars)", text, len(text))
	}
	for _, r := range text {
		if !strings.ContainsRune(alnumQR, r) {
			t.Fatalf("character %q is outside the QR alphanumeric set", r)
		}
	}
	c, err := Verify(pub, text, now)
	if err != nil {
		t.Fatal(err)
	}
	if c != claims {
		t.Fatalf("claims %+v, want %+v", c, claims)
	}
	if err := c.For("acme", "parcel-1", 1, "dev-7"); err != nil {
		t.Fatal(err)
	}
	// Sub-second expiry is truncated, never extended.
	c2 := claims
	c2.NotAfter = due.Add(900 * time.Millisecond)
	text2, _ := Sign(priv, c2)
	if got, _ := Verify(pub, text2, now); !got.NotAfter.Equal(due) {
		t.Fatalf("not_after %v", got.NotAfter)
	}
	// No device binding: good for any device of the realm.
	anyDev := claims
	anyDev.Device = ""
	text3, _ := Sign(priv, anyDev)
	c3, err := Verify(pub, text3, now)
	if err != nil || c3.For("acme", "parcel-1", 1, "dev-9") != nil {
		t.Fatalf("unbound token: %v %+v", err, c3)
	}
}

// TestAttacks: what an impostor at the door, or a courier replaying an
// old or foreign token, can present.
func TestAttacks(t *testing.T) {
	good, _ := Sign(priv, claims)
	forged, _ := Sign(other, claims)
	expired := claims
	expired.NotAfter = now
	expText, _ := Sign(priv, expired)
	goodBody, _ := base45.Decode(good[len(Prefix):])

	tests := []struct {
		name string
		text string
		at   time.Time
		want error
	}{
		{"signed by another key", forged, now, ErrSignature},
		{"expired at not_after", expText, now, ErrExpired},
		{"good token after its expiry", good, due, ErrExpired},
		{"prefix of another version", "ODT2:" + good[len(Prefix):], now, ErrMalformed},
		{"prefix lower case", "odt1:" + good[len(Prefix):], now, ErrMalformed},
		{"no prefix", good[len(Prefix):], now, ErrMalformed},
		{"a code, not a token", "582039170", now, ErrMalformed},
		{"empty", "", now, ErrMalformed},
		{"trailing newline", good + "\n", now, ErrMalformed},
		{"trailing space", good + " ", now, ErrMalformed},
		{"one char cut", good[:len(good)-1], now, ErrMalformed},
		{"one byte cut", Prefix + base45.Encode(goodBody[:len(goodBody)-1]), now, ErrSignature},
		{"oversized", Prefix + strings.Repeat("0", MaxTextLen), now, ErrMalformed},
		{"only the prefix", Prefix, now, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Verify(pub, tc.text, tc.at)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %+v, %v; want %v", c, err, tc.want)
			}
			if c != (Claims{}) {
				t.Fatal("claims returned with an error")
			}
		})
	}
	// Any single byte changed in the signed body: the signature fails.
	body, _ := base45.Decode(good[len(Prefix):])
	for i := range body {
		x := bytes.Clone(body)
		x[i] ^= 1
		if _, err := Verify(pub, Prefix+base45.Encode(x), now); !errors.Is(err, ErrSignature) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	// The prefix is signed: the same body under another prefix fails even
	// if a later version reused the layout.
	if _, err := Verify(pub, "ODT1:"+good[len(Prefix):], now); err != nil {
		t.Fatal(err)
	}
}

// TestFor: genuine tokens for another delivery, version (before a
// reassignment) or device are refused by For.
func TestFor(t *testing.T) {
	text, _ := Sign(priv, claims)
	c, _ := Verify(pub, text, now)
	tests := []struct {
		name                    string
		realm, delivery, device string
		version                 int
	}{
		{"another realm", "beta", "parcel-1", "dev-7", 1},
		{"another delivery", "acme", "parcel-2", "dev-7", 1},
		{"an old version after reassignment", "acme", "parcel-1", "dev-7", 2},
		{"another device", "acme", "parcel-1", "dev-8", 1},
	}
	for _, tc := range tests {
		if err := c.For(tc.realm, tc.delivery, tc.version, tc.device); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestSignRefuses(t *testing.T) {
	bad := map[string]func(*Claims){
		"no realm":         func(c *Claims) { c.Realm = "" },
		"no delivery":      func(c *Claims) { c.Delivery = "" },
		"long delivery":    func(c *Claims) { c.Delivery = strings.Repeat("d", 257) },
		"control in id":    func(c *Claims) { c.Device = "a\x00b" },
		"version 0":        func(c *Claims) { c.Version = 0 },
		"version too big":  func(c *Claims) { c.Version = 1 << 33 },
		"zero not_after":   func(c *Claims) { c.NotAfter = time.Time{} },
		"not_after > 2106": func(c *Claims) { c.NotAfter = time.Date(2107, 1, 1, 0, 0, 0, 0, time.UTC) },
	}
	for name, edit := range bad {
		c := claims
		edit(&c)
		if _, err := Sign(priv, c); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	if _, err := Sign(priv[:10], claims); err == nil {
		t.Error("short key accepted")
	}
	if _, err := Verify(pub[:10], "x", now); err == nil {
		t.Error("short public key accepted")
	}
}

// TestMaxLen: the largest claims fit MaxTextLen exactly.
func TestMaxLen(t *testing.T) {
	long := strings.Repeat("x", 256)
	text, err := Sign(priv, Claims{Realm: long, Delivery: long, Version: 1 << 31, Device: long, NotAfter: due})
	if err != nil {
		t.Fatal(err)
	}
	if len(text) != MaxTextLen {
		t.Fatalf("largest token %d chars, MaxTextLen %d", len(text), MaxTextLen)
	}
	if _, err := Verify(pub, text, now); err != nil {
		t.Fatal(err)
	}
}

// TestVectors: tokens checked into testdata keep verifying (a layout
// change would strand tokens already sent to recipients), and each fail_*
// fails with its error.
func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t)
	}
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) < 4 {
		t.Fatalf("only %d vectors (run with -update)", len(files))
	}
	want := map[string]error{"fail_forged": ErrSignature, "fail_expired": ErrExpired, "fail_version": ErrMalformed,
		"fail_trailing_byte": ErrSignature, "fail_garbage": ErrMalformed}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		c, err := Verify(pub, strings.TrimSuffix(string(b), "\n"), now)
		if strings.HasPrefix(name, "good") {
			if err != nil || c.Delivery != "parcel-1" {
				t.Errorf("%s: %+v %v", name, c, err)
			}
			continue
		}
		if w, ok := want[name]; !ok || !errors.Is(err, w) {
			t.Errorf("%s: %v, want %v", name, err, w)
		}
	}
}

func writeVectors(t *testing.T) {
	good, _ := Sign(priv, claims)
	forged, _ := Sign(other, claims)
	exp := claims
	exp.NotAfter = now.Add(-time.Second)
	expired, _ := Sign(priv, exp)
	body, _ := base45.Decode(good[len(Prefix):])
	vectors := map[string]string{
		"good":               good,
		"fail_forged":        forged,
		"fail_expired":       expired,
		"fail_version":       "ODT2:" + good[len(Prefix):],
		"fail_trailing_byte": Prefix + base45.Encode(append(bytes.Clone(body), 0)),
		"fail_garbage":       "ODT1:%%%%",
	}
	for name, v := range vectors {
		if err := os.WriteFile(filepath.Join("testdata", name+".txt"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\nstring(%q)\n", v)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzVerify: Verify never panics, fails only with its sentinels, and
// whatever it accepts re-signs to the same text (one encoding per token).
func FuzzVerify(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string) {
		c, err := Verify(pub, text, now)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) && !errors.Is(err, ErrExpired) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		again, err := Sign(priv, c)
		if err != nil || again != text {
			t.Fatalf("accepted %q, which re-signs to %q (%v)", text, again, err)
		}
	})
}
