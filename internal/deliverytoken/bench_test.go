package deliverytoken

import "testing"

// Token verification is one Ed25519 verification and a Base45 decode: run
//
//	go test -run '^$' -bench . ./internal/deliverytoken
//
// for verifications per second (figures in docs/BENCHMARKS.md).

func BenchmarkVerify(b *testing.B) {
	text, err := Sign(priv, claims)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Verify(pub, text, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	for b.Loop() {
		if _, err := Sign(priv, claims); err != nil {
			b.Fatal(err)
		}
	}
}
