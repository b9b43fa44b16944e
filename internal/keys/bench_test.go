package keys

import (
	"testing"
)

// Benchmarks recorded in docs/BENCHMARKS.md ("## Keys"):
//
//	go test -run '^$' -bench . -benchmem -count 5 ./internal/keys

// BenchmarkDerive is one HKDF-SHA256 derivation of a 20-byte token seed.
func BenchmarkDerive(b *testing.B) {
	m, _ := MasterFromBytes(testSecret())
	b.ReportAllocs()
	for b.Loop() {
		m.Derive(20, PurposeTokenSeed, 0, "realm", "alice", "tok-1")
	}
}

// BenchmarkDerive32 is one derivation of a 32-byte key (data or scope key).
func BenchmarkDerive32(b *testing.B) {
	m, _ := MasterFromBytes(testSecret())
	b.ReportAllocs()
	for b.Loop() {
		m.Derive(32, PurposeScope, 0, "site-7")
	}
}

// BenchmarkSigner derives the Ed25519 signing key of an epoch (HKDF plus
// Ed25519 key expansion), what the server does once at start-up per epoch.
func BenchmarkSigner(b *testing.B) {
	m, _ := MasterFromBytes(testSecret())
	b.ReportAllocs()
	for b.Loop() {
		m.Signer(0)
	}
}

// BenchmarkOpenDefaultKDF unseals a master key file at DefaultKDF: what
// every command that opens the data directory pays once.
func BenchmarkOpenDefaultKDF(b *testing.B) {
	data, err := Seal(vectorPass, DefaultKDF, Sealed{Purpose: "master-key"}, testSecret())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Open(vectorPass, data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenTestKDF is the same at the cost unit tests use, for scale.
func BenchmarkOpenTestKDF(b *testing.B) {
	data, err := Seal(vectorPass, testKDF, Sealed{Purpose: "master-key"}, testSecret())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Open(vectorPass, data); err != nil {
			b.Fatal(err)
		}
	}
}
