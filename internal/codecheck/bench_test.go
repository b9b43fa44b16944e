package codecheck

import (
	"testing"

	"golang.org/x/crypto/argon2"
)

// The offline check's latency beside raw argon2id at the same parameters:
// the check adds only the binding encoding and one comparison. Run with
//
//	go test -run '^$' -bench . -benchtime 3x ./internal/codecheck
//
// (hash mode at its defaults costs seconds an operation). The figures are in
// docs/BENCHMARKS.md.

func benchRaw(b *testing.B, p Params) {
	salt := make([]byte, SaltSize)
	for b.Loop() {
		argon2.IDKey([]byte(code), salt, p.Time, p.MemoryKiB, p.Threads, SumSize)
	}
}

func BenchmarkArgon2idHashParams(b *testing.B) { benchRaw(b, DefaultHashParams) }

func BenchmarkHashMatch(b *testing.B) {
	h, err := NewHash(code, bind, DefaultHashParams)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if ok, err := h.Match(code, bind); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkArgon2idFingerprintParams(b *testing.B) { benchRaw(b, DefaultFingerprintParams) }

func BenchmarkFingerprintMatch(b *testing.B) {
	f, err := NewFingerprint(code, bind, DefaultFingerprintParams)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if ok, err := f.Match(code, bind); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	for b.Loop() {
		if _, err := Seal(testPub, bind, code); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	sealed, _ := Seal(testPub, bind, code)
	for b.Loop() {
		if _, err := Open(testPriv, bind, sealed); err != nil {
			b.Fatal(err)
		}
	}
}
