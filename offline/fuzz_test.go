package offline_test

import (
	"encoding/json"
	"testing"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/offline"
)

// FuzzDecodeBundle feeds arbitrary bytes to Decode twice: as a bundle file,
// and — when they are JSON — as the body of a correctly signed bundle, so
// that the body checks behind the signature are fuzzed too. Nothing may
// panic, and whatever Decode accepts must satisfy the format's invariants.
func FuzzDecodeBundle(f *testing.F) {
	for _, name := range []string{"good_hotp.bundle", "good_totp_pin.bundle", "fail_truncated.bundle", "fail_counter_overflow.bundle"} {
		if data, err := readFile("testdata/" + name); err == nil {
			f.Add(data)
		}
	}
	s := testSigner(f)
	keys := trusted(f)
	want := offline.Expect{Device: "dev-1", Now: t0}
	f.Fuzz(func(t *testing.T, data []byte) {
		if b, err := offline.Decode(data, keys, want); err == nil {
			check(t, b)
		}
		if len(data) > 1<<20 || !json.Valid(data) {
			return
		}
		art, err := artifact.Sign(s, artifact.Header{Type: offline.BundleType, Version: offline.BundleVersion, Subject: "dev-1",
			NotBefore: tdFrom, NotAfter: tdUntil}, json.RawMessage(data))
		if err != nil {
			return
		}
		if b, err := offline.Decode(art, keys, want); err == nil {
			check(t, b)
		}
	})
}

func check(t *testing.T, b *offline.Bundle) {
	t.Helper()
	if b.Count() < 1 || b.Count() > offline.MaxEntries || b.Last() < b.First || b.Last() > offline.MaxCounter {
		t.Fatalf("accepted a bundle with %d entries from %d", b.Count(), b.First)
	}
	if err := b.Params.Validate(); err != nil {
		t.Fatalf("accepted invalid params: %v", err)
	}
	if err := b.KDF.Validate(); err != nil {
		t.Fatalf("accepted invalid KDF: %v", err)
	}
	// Exercise the entry path when the KDF is cheap enough for a fuzzer.
	if b.KDF.MemoryKiB <= 256 && b.KDF.Time <= 2 {
		code := "0000000000"[:b.Params.Digits]
		b.OpenEntry(b.First, code, "")
		for _, n := range b.SecretNames() {
			b.OpenSecret(make([]byte, 32), n)
		}
	}
}
