package enrol_test

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/outpost-auth/outpost/internal/enrol"
)

// FuzzParseCSR fuzzes the CSR decoder: no input panics, every refusal
// wraps ErrCSR, and an accepted request has a verifying signature and asks
// for no extension.
func FuzzParseCSR(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := enrol.ParseCSR(der)
		if err != nil {
			if !errors.Is(err, enrol.ErrCSR) {
				t.Fatalf("refusal %v does not wrap ErrCSR", err)
			}
			return
		}
		if c.Req.CheckSignature() != nil || len(c.Req.Extensions) != 0 || !bytes.Equal(c.SPKI, c.Req.RawSubjectPublicKeyInfo) {
			t.Fatalf("accepted %x", der)
		}
	})
}

// FuzzDecodeESTBody fuzzes the EST body decoder the same way.
func FuzzDecodeESTBody(f *testing.F) {
	f.Add([]byte("MIIB\n"))
	f.Add([]byte("not base64 !"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := enrol.DecodeESTBody(body); err != nil && !errors.Is(err, enrol.ErrCSR) {
			t.Fatalf("refusal %v does not wrap ErrCSR", err)
		}
	})
}

// FuzzParseCertsOnly fuzzes the PKCS#7 certs-only decoder (the device
// side of EST): no input panics, every refusal wraps ErrPKCS7.
func FuzzParseCertsOnly(f *testing.F) {
	f.Add(enrol.CertsOnly(nil))
	f.Add([]byte{0x30, 0x03, 0x06, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		if _, err := enrol.ParseCertsOnly(der); err != nil && !errors.Is(err, enrol.ErrPKCS7) {
			t.Fatalf("refusal %v does not wrap ErrPKCS7", err)
		}
	})
}

// TestFuzzSeedsParse: a good CSR passes both decoders (the checked-in
// seeds in testdata/fuzz hold one, and one with SANs, CA:true and a
// challengePassword each).
func TestFuzzSeedsParse(t *testing.T) {
	f := newFixture(t)
	d := f.vouched(t, "SN-SEED")
	der := csrFor(t, d.key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "SN-SEED"}})
	if _, err := enrol.ParseCSR(der); err != nil {
		t.Fatal(err)
	}
	if _, err := enrol.DecodeESTBody([]byte(base64.StdEncoding.EncodeToString(der))); err != nil {
		t.Fatal(err)
	}
}
