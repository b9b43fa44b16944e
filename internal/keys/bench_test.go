package keys

import (
	"crypto/hkdf"
	"crypto/sha256"
	"testing"

	"golang.org/x/crypto/argon2"
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

// BenchmarkBaselineHKDF is crypto/hkdf alone on a same-length info string:
// Derive's ratio to it is the cost of building the length-prefixed info.
func BenchmarkBaselineHKDF(b *testing.B) {
	secret := testSecret()
	info := string(make([]byte, 10+2+10+4+2+5+2+5+2+5))
	salt := []byte("outpost-hkdf-salt-v1")
	b.ReportAllocs()
	for b.Loop() {
		hkdf.Key(sha256.New, secret, salt, info, 20)
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

// BenchmarkBaselineArgon2id is argon2id alone at DefaultKDF: Open's ratio to
// it is the cost of parsing, checking and AES-GCM (expected: ~1.0).
func BenchmarkBaselineArgon2id(b *testing.B) {
	salt := make([]byte, 16)
	b.ReportAllocs()
	for b.Loop() {
		argon2.IDKey(vectorPass, salt, DefaultKDF.Time, DefaultKDF.MemoryKiB, DefaultKDF.Threads, 32)
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
