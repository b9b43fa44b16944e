package otp

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"hash"
	"testing"
)

// refTruncated is RFC 4226's dynamic truncation over crypto/hmac: the
// reference the allocation-free mac must agree with.
func refTruncated(alg Algorithm, key []byte, counter uint64) uint32 {
	h := map[Algorithm]func() hash.Hash{SHA1: sha1.New, SHA256: sha256.New, SHA512: sha512.New}[alg]
	m := hmac.New(h, key)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], counter)
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	return binary.BigEndian.Uint32(sum[off:]) & 0x7fffffff
}

// TestMACMatchesCryptoHMAC covers every key length around each block size:
// empty, short, exactly one block, and longer keys, which HMAC hashes first.
func TestMACMatchesCryptoHMAC(t *testing.T) {
	key := make([]byte, 300)
	for i := range key {
		key[i] = byte(i*7 + 3)
	}
	for _, alg := range []Algorithm{SHA1, SHA256, SHA512} {
		for n := 0; n <= len(key); n++ {
			var m mac
			m.init(alg, key[:n])
			for _, ctr := range []uint64{0, 1, 1 << 32, ^uint64(0)} {
				if got, want := m.truncated(ctr), refTruncated(alg, key[:n], ctr); got != want {
					t.Fatalf("%v key of %d bytes, counter %d: %08x, crypto/hmac says %08x", alg, n, ctr, got, want)
				}
			}
			m.wipe()
			if m.in != [len(m.in)]byte{} || m.out != [len(m.out)]byte{} {
				t.Fatalf("wipe left key material")
			}
		}
	}
}

func TestModDigitsMatchesDivision(t *testing.T) {
	for d := MinDigits; d <= MaxDigits; d++ {
		p := uint64(1)
		for range d {
			p *= 10
		}
		for _, v := range []uint32{0, 1, 999999, 1000000, 123456789, 0x7fffffff} {
			if got, want := uint64(modDigits(v, d)), uint64(v)%p; got != want {
				t.Errorf("modDigits(%d, %d) = %d, want %d", v, d, got, want)
			}
		}
	}
}

// TestVerifyAllocatesNothing guards the benchmark's headline: a ±1 verify
// (match or not) makes no heap allocation.
func TestVerifyAllocatesNothing(t *testing.T) {
	secret := []byte("12345678901234567890")
	p := DefaultTOTP
	now := StepTime(1000, 30, 0)
	code, err := p.CodeAt(secret, 999)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{code, "000000"} {
		n := testing.AllocsPerRun(100, func() {
			_, _ = p.Verify(secret, c, now, Window{Back: 1, Forward: 1})
		})
		if n != 0 {
			t.Errorf("Verify allocates %v times per call, want 0", n)
		}
	}
	n := testing.AllocsPerRun(100, func() { _, _ = p.Generate(secret, 0, now) })
	if n > 1 {
		t.Errorf("Generate allocates %v times per call, want at most 1 (the string)", n)
	}
}
