package codecheck

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/deliverycode"
)

// cheap parameters keep tests fast; they are under every floor, so the
// tests make hashes with NewHashFloor and a zero floor.
var cheap = Params{Time: 1, MemoryKiB: 64, Threads: 1}

var (
	bind = Binding{Realm: "acme", Delivery: "parcel-1", Version: 1, Device: "dev-7"}
	code = "582039170" // 8 digits + Damm check digit
)

func init() {
	if c, err := deliverycode.Parse(code); err != nil || c != code {
		panic("test code is not canonical")
	}
}

// otherCode is a well-formed code that is not code.
const otherCode = "123456786"

func others() map[string]Binding {
	realm, del, ver, dev := bind, bind, bind, bind
	realm.Realm = "other"
	del.Delivery = "parcel-2"
	ver.Version = 2
	dev.Device = "dev-8"
	return map[string]Binding{"another realm": realm, "another delivery": del, "another version": ver, "another device": dev}
}

func TestHash(t *testing.T) {
	h, err := NewHashFloor(code, bind, cheap, cost.Floor{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.Match(code, bind); !ok || err != nil {
		t.Fatalf("own code: %v %v", ok, err)
	}
	if ok, err := h.Match(otherCode, bind); ok || err != nil {
		t.Fatalf("wrong code: %v %v", ok, err)
	}
	for name, b := range others() {
		if ok, err := h.Match(code, b); ok || err != nil {
			t.Fatalf("%s: the hash matched (%v %v)", name, ok, err)
		}
	}
	// A fresh salt per hash: two hashes of one code differ.
	h2, _ := NewHashFloor(code, bind, cheap, cost.Floor{})
	if bytes.Equal(h.Salt, h2.Salt) || bytes.Equal(h.Sum, h2.Sum) {
		t.Fatal("salt reused")
	}
}

// TestHashTampered: the attacker edits the hash data the device holds.
func TestHashTampered(t *testing.T) {
	h, _ := NewHashFloor(code, bind, cheap, cost.Floor{})
	edits := map[string]func(*Hash){
		"flipped sum":   func(h *Hash) { h.Sum[0] ^= 1 },
		"flipped salt":  func(h *Hash) { h.Salt[0] ^= 1 },
		"more passes":   func(h *Hash) { h.Params.Time++ },
		"other memory":  func(h *Hash) { h.Params.MemoryKiB = 128 },
		"other lanes":   func(h *Hash) { h.Params.Threads = 2; h.Params.MemoryKiB = 64 },
		"another's sum": func(h *Hash) { o, _ := NewHashFloor(otherCode, bind, cheap, cost.Floor{}); h.Sum = o.Sum },
		"sum of the other": func(h *Hash) {
			o, _ := NewHashFloor(code, others()["another device"], cheap, cost.Floor{})
			h.Sum = o.Sum
		},
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			x := Hash{Params: h.Params, Salt: bytes.Clone(h.Salt), Sum: bytes.Clone(h.Sum)}
			edit(&x)
			if ok, err := x.Match(code, bind); ok || err != nil {
				t.Fatalf("tampered hash: %v %v", ok, err)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	h, _ := NewHashFloor(code, bind, cheap, cost.Floor{})
	f, _ := NewFingerprint(code, bind, cheap)
	hashes := map[string]Hash{
		"zero":          {},
		"short salt":    {Params: cheap, Salt: h.Salt[:8], Sum: h.Sum},
		"long sum":      {Params: cheap, Salt: h.Salt, Sum: append(bytes.Clone(h.Sum), 0)},
		"huge memory":   {Params: Params{Time: 1, MemoryKiB: 4 << 20, Threads: 1}, Salt: h.Salt, Sum: h.Sum},
		"huge time":     {Params: Params{Time: 1000, MemoryKiB: 64, Threads: 1}, Salt: h.Salt, Sum: h.Sum},
		"zero lanes":    {Params: Params{Time: 1, MemoryKiB: 64, Threads: 0}, Salt: h.Salt, Sum: h.Sum},
		"toy memory":    {Params: Params{Time: 1, MemoryKiB: 4, Threads: 1}, Salt: h.Salt, Sum: h.Sum},
		"missing sum":   {Params: cheap, Salt: h.Salt},
		"missing salt":  {Params: cheap, Sum: h.Sum},
		"too many lane": {Params: Params{Time: 1, MemoryKiB: 1024, Threads: 17}, Salt: h.Salt, Sum: h.Sum},
	}
	for name, x := range hashes {
		if ok, err := x.Match(code, bind); ok || !errors.Is(err, ErrMalformed) {
			t.Errorf("hash %s: %v %v, want ErrMalformed", name, ok, err)
		}
	}
	fps := map[string]Fingerprint{
		"zero":        {},
		"short salt":  {Params: cheap, Salt: f.Salt[:15], Bits: 10, Value: f.Value},
		"value wide":  {Params: cheap, Salt: f.Salt, Bits: 10, Value: 1 << 10},
		"3 bits":      {Params: cheap, Salt: f.Salt, Bits: 3},
		"32 bits":     {Params: cheap, Salt: f.Salt, Bits: 32},
		"huge memory": {Params: Params{Time: 1, MemoryKiB: 4 << 20, Threads: 1}, Salt: f.Salt, Bits: 10},
	}
	for name, x := range fps {
		if ok, err := x.Match(code, bind); ok || !errors.Is(err, ErrMalformed) {
			t.Errorf("fingerprint %s: %v %v, want ErrMalformed", name, ok, err)
		}
	}
}

func TestBadInputs(t *testing.T) {
	h, _ := NewHashFloor(code, bind, cheap, cost.Floor{})
	codes := map[string]string{
		"typo":          "582039177",
		"grouped":       "5820 3917 0",
		"not digits":    "58203917x",
		"empty":         "",
		"too short":     "1234",
		"far too long":  strings.Repeat("0", 100),
		"one too long":  "000000000000000000",
		"with a hyphen": "5820-39170",
	}
	for name, c := range codes {
		if _, err := NewHashFloor(c, bind, cheap, cost.Floor{}); err == nil {
			t.Errorf("NewHash %s: accepted", name)
		}
		if _, err := NewFingerprint(c, bind, cheap); err == nil {
			t.Errorf("NewFingerprint %s: accepted", name)
		}
		if ok, err := h.Match(c, bind); ok || err == nil {
			t.Errorf("Match %s: %v %v", name, ok, err)
		}
		if _, err := Seal(testPub, bind, c); err == nil {
			t.Errorf("Seal %s: accepted", name)
		}
	}
	bindings := map[string]Binding{
		"zero":          {},
		"no realm":      {Delivery: "d", Version: 1, Device: "x"},
		"no device":     {Realm: "r", Delivery: "d", Version: 1},
		"version 0":     {Realm: "r", Delivery: "d", Version: 0, Device: "x"},
		"negative":      {Realm: "r", Delivery: "d", Version: -1, Device: "x"},
		"control char":  {Realm: "r", Delivery: "d\n", Version: 1, Device: "x"},
		"long delivery": {Realm: "r", Delivery: strings.Repeat("d", 257), Version: 1, Device: "x"},
		"huge version":  {Realm: "r", Delivery: "d", Version: 1 << 40, Device: "x"},
		"invalid utf-8": {Realm: "r", Delivery: "d", Version: 1, Device: "\xff"},
	}
	for name, b := range bindings {
		if _, err := NewHashFloor(code, b, cheap, cost.Floor{}); err == nil {
			t.Errorf("NewHash %s: accepted", name)
		}
		if _, err := Seal(testPub, b, code); err == nil {
			t.Errorf("Seal %s: accepted", name)
		}
		if _, err := Open(testPriv, b, make([]byte, MinSealedSize)); err == nil {
			t.Errorf("Open %s: accepted", name)
		}
	}
}

// TestFloor: NewHash refuses parameters under cost.DeliveryFloor, with an
// error that says what to do, and DefaultHashParams clears it for the
// default code length (the check runs before any hashing, so this is fast).
func TestFloor(t *testing.T) {
	for _, p := range []Params{cheap, DefaultFingerprintParams, {Time: 3, MemoryKiB: 256 << 10, Threads: 1}} {
		_, err := NewHash(code, bind, p)
		if !errors.Is(err, ErrBelowFloor) || !errors.Is(err, cost.ErrBelowFloor) {
			t.Fatalf("%v: %v, want ErrBelowFloor", p, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "use longer codes") || !strings.Contains(msg, "fingerprint/token mode") {
			t.Fatalf("error does not say what to do: %s", msg)
		}
		if strings.Contains(err.Error(), code) {
			t.Fatal("the error repeats the code")
		}
	}
	r := cost.DeliveryCode(deliverycode.DefaultDigits, DefaultHashParams.KDF())
	if err := r.CheckCode(cost.DeliveryFloor); err != nil {
		t.Fatalf("DefaultHashParams under the floor: %v", err)
	}
	// The doc comment's figures.
	if got := cost.Human(r.Reference.PerEntry); got != "7 days" {
		t.Fatalf("RTX 4090 figure %s, doc says ~7.3 days", got)
	}
	if days := r.Fastest.PerEntry / 86400; days < 2.1 || days > 2.3 {
		t.Fatalf("H100 figure %.2f days, doc says ~2.2", days)
	}
	if s := r.IssuerCPU; s < 2.1 || s > 2.3 {
		t.Fatalf("issuer %.2f s, doc says ~2.2 s", s)
	}
	if d := cost.DeliveryCode(9, DefaultHashParams.KDF()).Reference.PerEntry / 86400; d < 72 || d > 74 {
		t.Fatalf("9 digits: %.1f days, doc says ~73", d)
	}
}

// TestFingerprintOdds: the odds the docs state, measured. Over 3000 wrong
// codes at 10 bits, about 3 pass (p = 2^-10); all own codes pass.
func TestFingerprintOdds(t *testing.T) {
	f, err := NewFingerprint(code, bind, cheap)
	if err != nil {
		t.Fatal(err)
	}
	if f.Bits != DefaultBits || f.Value>>DefaultBits != 0 {
		t.Fatalf("bits %d value %d", f.Bits, f.Value)
	}
	if ok, err := f.Match(code, bind); !ok || err != nil {
		t.Fatalf("own code: %v %v", ok, err)
	}
	n := 3000
	if testing.Short() {
		n = 500
	}
	passed := 0
	for i := 0; i < n; i++ {
		c, _ := deliverycode.New(8)
		if c == code {
			continue
		}
		if ok, _ := f.Match(c, bind); ok {
			passed++
		}
	}
	// Expected n/1024 ≈ 2.9; P(X > 15) is negligible.
	if passed > 15 {
		t.Fatalf("%d of %d wrong codes passed a 10-bit fingerprint", passed, n)
	}
	// Copied to another binding the fingerprint is a fresh 10-bit draw:
	// check it is computed over the binding (not always equal).
	differ := 0
	for i := 0; i < 8; i++ {
		g, _ := NewFingerprint(code, bind, cheap)
		for _, b := range others() {
			if v := g.of(code, b); v != g.Value {
				differ++
			}
		}
	}
	if differ < 24 {
		t.Fatalf("fingerprints for other bindings agree with the original too often (%d of 32 differ)", differ)
	}
	// Tampered value: the own code no longer passes.
	x := f
	x.Value ^= 1
	if ok, _ := x.Match(code, bind); ok {
		t.Fatal("tampered fingerprint still matches")
	}
}

var testPriv, testPub = func() ([]byte, []byte) {
	priv, pub, err := SealKeyPair(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		panic(err)
	}
	return priv, pub
}()

func TestSeal(t *testing.T) {
	sealed, err := Seal(testPub, bind, code)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != encSize+len(code)+tagSize || len(sealed) < MinSealedSize || len(sealed) > MaxSealedSize {
		t.Fatalf("sealed %d bytes", len(sealed))
	}
	if bytes.Contains(sealed, []byte(code)) {
		t.Fatal("code in the clear")
	}
	got, err := Open(testPriv, bind, sealed)
	if err != nil || got != code {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// Fresh encapsulation each time.
	again, _ := Seal(testPub, bind, code)
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals are equal")
	}
	// A sealed code for another binding does not open here (the attacker
	// replays a code sealed for another delivery, version or device).
	for name, b := range others() {
		s, _ := Seal(testPub, b, code)
		if _, err := Open(testPriv, bind, s); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
		if _, err := Open(testPriv, b, sealed); !errors.Is(err, ErrMalformed) {
			t.Errorf("opened as %s: %v", name, err)
		}
	}
	// Another server key.
	priv2, pub2, _ := SealKeyPair(bytes.Repeat([]byte{8}, 32))
	if _, err := Open(priv2, bind, sealed); !errors.Is(err, ErrMalformed) {
		t.Fatalf("other key: %v", err)
	}
	if bytes.Equal(pub2, testPub) {
		t.Fatal("two seeds, one key")
	}
	// Tampering anywhere.
	for i := range sealed {
		x := bytes.Clone(sealed)
		x[i] ^= 0x80
		if _, err := Open(testPriv, bind, x); !errors.Is(err, ErrMalformed) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	// Garbage and sizes.
	for name, x := range map[string][]byte{
		"nil": nil, "short": sealed[:MinSealedSize-1], "long": make([]byte, MaxSealedSize+1),
		"zeros": make([]byte, len(sealed)), "truncated": sealed[:len(sealed)-1], "extended": append(bytes.Clone(sealed), 0),
	} {
		if _, err := Open(testPriv, bind, x); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Keys.
	if _, err := Seal(testPub[:31], bind, code); err == nil {
		t.Fatal("short public key accepted")
	}
	if _, err := Open(testPriv[:31], bind, sealed); err == nil {
		t.Fatal("short private key accepted")
	}
	if _, _, err := SealKeyPair(make([]byte, 31)); err == nil {
		t.Fatal("short seed accepted")
	}
}

// TestSealVector: a sealed code checked into testdata keeps opening, so a
// change of suite or info encoding (which would strand codes sealed by
// devices in the field) fails here.
func TestSealVector(t *testing.T) {
	sealed := readHex(t, "testdata/good_sealed.hex")
	got, err := Open(testPriv, bind, sealed)
	if err != nil || got != code {
		t.Fatalf("Open = %q, %v", got, err)
	}
}
