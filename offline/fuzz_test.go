package offline_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/offline"
)

// FuzzDecodeBundle feeds arbitrary bytes to Decode twice: as a bundle file,
// and — when they are JSON — as the body of a correctly signed bundle, so
// that the body checks behind the signature are fuzzed too. Nothing may
// panic, and whatever Decode accepts must satisfy the format's invariants.
//
// The seeds are one-entry bodies of a few hundred bytes, not bundle files:
// Go's minimizer runs the target O(n²) times for an n-byte input, and the
// 1.7 to 11 KB bundle files the fuzzer used to start from cost a worker
// its whole 60 s minimization budget for every new input (a handful of
// executions a minute were reported). A mutated file never passes the
// signature anyway; internal/artifact's FuzzVerify covers the envelope.
func FuzzDecodeBundle(f *testing.F) {
	for _, body := range fuzzBundleBodies(f) {
		f.Add(body)
	}
	s := testSigner(f)
	keys := trusted(f)
	want := offline.Expect{Device: "dev-1", Now: t0}
	f.Fuzz(func(t *testing.T, data []byte) {
		if b, err := offline.Decode(data, keys, want); err == nil {
			check(t, b)
		}
		if !json.Valid(data) {
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

// fuzzBundleBodies are FuzzDecodeBundle's seeds (TestGenerateFuzzSeeds
// writes them to its corpus): the bodies of one-entry HOTP and TOTP+PIN
// bundles, which Decode accepts once signed, and two that it refuses.
func fuzzBundleBodies(t testing.TB) map[string][]byte {
	t.Helper()
	hotp := hotpReq(0, 1)
	totp := totpReq("2468")
	totp.From, totp.Until = t0, t0.Add(30*time.Second)
	out := map[string][]byte{"empty_object": []byte("{}"), "not_json": []byte("this is not a bundle\n")}
	for name, req := range map[string]bundle.Request{"hotp_body": hotp, "totp_pin_body": totp} {
		req.NotBefore, req.NotAfter = tdFrom, tdUntil
		b, err := offline.Decode(issue(t, req), trusted(t), offline.Expect{Device: "dev-1", Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		body, err := json.Marshal(b.Body)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = body
	}
	return out
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
	// Exercise the entry path when the KDF is as cheap as the seeds' (about
	// 0.1 ms; at 256 KiB and two passes it is 0.6 ms, more than the rest of
	// the input, and the minimizer runs it thousands of times).
	if b.KDF.MemoryKiB <= 64 && b.KDF.Time == 1 {
		code := "0000000000"[:b.Params.Digits]
		b.OpenEntry(b.First, code, "")
		for _, n := range b.SecretNames() {
			b.OpenSecret(make([]byte, 32), n)
		}
	}
}
