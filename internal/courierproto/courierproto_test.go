package courierproto

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/keys"
)

var t0 = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

func signer(t testing.TB, seed string) *keys.Signer {
	t.Helper()
	m, err := keys.MasterFromBytes([]byte((seed + "................................")[:32]))
	if err != nil {
		t.Fatal(err)
	}
	return m.Signer(0)
}

// proof builds a proof: a receipt signed by the device, countersigned by the server.
func proof(t testing.TB, server, device *keys.Signer, mod func(*Receipt, *Countersign)) []byte {
	t.Helper()
	r := Receipt{Realm: "acme", Delivery: "p1", Version: 2, Device: "van-1", Mode: ModeHash, Time: t0, Location: "48.85,2.35",
		Manifest: 3, LogSeq: 9, LogHash: bytes.Repeat([]byte{1}, 32)}
	c := Countersign{Realm: "acme", Delivery: "p1", Version: 2, Device: "van-1", DeviceKey: device.Public, Manifest: 3, DeliveredAt: t0.Add(time.Hour)}
	if mod != nil {
		mod(&r, &c)
	}
	rec, err := artifact.Sign(device, artifact.Header{Type: ReceiptType, Version: ReceiptVersion, Subject: r.Device, Serial: r.LogSeq,
		NotBefore: t0, NotAfter: t0.Add(CountersignValidity)}, r)
	if err != nil {
		t.Fatal(err)
	}
	if c.ReceiptHash == nil {
		c.ReceiptHash = ReceiptHash(rec)
	}
	cs, err := artifact.Sign(server, artifact.Header{Type: CountersignType, Version: CountersignVersion, Subject: c.Delivery, Serial: 3,
		NotBefore: t0, NotAfter: t0.Add(CountersignValidity)}, c)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(Proof{Receipt: rec, Countersign: cs})
	return out
}

// TestVerifyProof: a proof holds with the server's key alone; each way of
// making one up fails.
func TestVerifyProof(t *testing.T) {
	server, device, other := signer(t, "server"), signer(t, "device"), signer(t, "other")
	good := proof(t, server, device, nil)
	r, c, err := VerifyProof(good, server.Public)
	if err != nil || r.Delivery != "p1" || !bytes.Equal(c.DeviceKey, device.Public) {
		t.Fatalf("good proof: %+v %+v %v", r, c, err)
	}
	// A receipt of one proof with the countersignature of another.
	var a, b Proof
	_ = json.Unmarshal(good, &a)
	_ = json.Unmarshal(proof(t, server, device, func(r *Receipt, _ *Countersign) { r.Location = "0,0" }), &b)
	swapped, _ := json.Marshal(Proof{Receipt: b.Receipt, Countersign: a.Countersign})
	for name, tc := range map[string]struct {
		data []byte
		key  ed25519.PublicKey
		want error
	}{
		"other server key":  {good, other.Public, artifact.ErrUnknownKey},
		"swapped receipt":   {swapped, server.Public, ErrProofMismatch},
		"receipt by other":  {proof(t, server, other, func(_ *Receipt, c *Countersign) { c.DeviceKey = device.Public }), server.Public, artifact.ErrUnknownKey},
		"other delivery":    {proof(t, server, device, func(_ *Receipt, c *Countersign) { c.Delivery = "p2" }), server.Public, ErrProofMismatch},
		"other version":     {proof(t, server, device, func(_ *Receipt, c *Countersign) { c.Version = 1 }), server.Public, ErrProofMismatch},
		"garbage":           {[]byte(`{"receipt":"AA=="}`), server.Public, ErrMalformed},
		"trailing data":     {append(append([]byte{}, good...), '{'), server.Public, ErrMalformed},
		"countersign wrong": {proof(t, server, device, func(_ *Receipt, c *Countersign) { c.ReceiptHash = make([]byte, 32) }), server.Public, ErrProofMismatch},
	} {
		if _, _, err := VerifyProof(tc.data, tc.key); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	m := Manifest{Realm: "acme", Device: "van-1", IssuedAt: t0, MaxAge: 3600, Deliveries: []ManifestDelivery{
		{ID: "p1", Version: 1, NotAfter: t0, Mode: ModeHash, Check: json.RawMessage(`{}`), Attempts: 5}}}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Manifest){
		"twice":         func(m *Manifest) { m.Deliveries = append(m.Deliveries, m.Deliveries[0]) },
		"token + data":  func(m *Manifest) { m.Deliveries[0].Mode = ModeToken },
		"no attempts":   func(m *Manifest) { m.Deliveries[0].Attempts = 0 },
		"mode":          func(m *Manifest) { m.Deliveries[0].Mode = "pin" },
		"max age":       func(m *Manifest) { m.MaxAge = 0 },
		"device":        func(m *Manifest) { m.Device = "" },
		"too many keys": func(m *Manifest) { m.Keys.Seal = make([]byte, MaxKeySize+1) },
	} {
		c := m
		c.Deliveries = append([]ManifestDelivery(nil), m.Deliveries...)
		mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, loc := range []string{"91,0", "0,181", "NaN,0", "1;2", "x"} {
		if _, _, err := ParseLocation(loc); err == nil {
			t.Errorf("location %q accepted", loc)
		}
	}
}

// FuzzDecodeManifest, FuzzDecodeReceipt and FuzzVerifyProof: the decoders
// never panic and never accept what their Validate refuses.
func FuzzDecodeManifest(f *testing.F) {
	f.Add([]byte(`{"realm":"acme","device":"van-1","issued_at":"2031-01-01T00:00:00Z","max_age":60,"keys":{},"deliveries":[{"id":"p1","version":1,"not_after":"2031-01-02T00:00:00Z","mode":"token","attempts":5}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err == nil {
			if err := m.Validate(); err != nil {
				t.Fatalf("decoded but invalid: %v", err)
			}
		}
	})
}

func FuzzDecodeReceipt(f *testing.F) {
	f.Add([]byte(`{"realm":"acme","delivery":"p1","version":1,"device":"van-1","mode":"hash","time":"2031-01-01T00:00:00Z","manifest":1,"log_seq":3,"log_hash":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeReceipt(data)
		if err == nil {
			if err := r.Validate(); err != nil {
				t.Fatalf("decoded but invalid: %v", err)
			}
		}
	})
}

func FuzzVerifyProof(f *testing.F) {
	server, device := signer(f, "server"), signer(f, "device")
	f.Add(proof(f, server, device, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, c, err := VerifyProof(data, server.Public); err == nil && !bytes.Equal(c.DeviceKey, device.Public) {
			t.Fatal("a proof with another device key verified")
		}
	})
}
