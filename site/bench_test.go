package site

import (
	"fmt"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/otp"
)

// Go benchmarks of the pure check; 'outpost bench site' prints the same
// figures side by side (docs/BENCHMARKS.md).

func benchInputs(b *testing.B) ([]byte, []string, []string, time.Time) {
	sk := keys.Derive(katMaster(), ScopeKeySize, keys.PurposeScope, 2, "north")
	now := time.Unix(katUnix, 0)
	techs, codes := make([]string, 1024), make([]string, 1024)
	for i := range techs {
		techs[i] = fmt.Sprintf("tech-%06d", i)
		codes[i], _ = DefaultPolicy().OTP().Generate(TechnicianSeed(sk, techs[i]), 0, now)
	}
	return sk, techs, codes, now
}

func BenchmarkRawOTPVerify(b *testing.B) {
	sk, _, _, now := benchInputs(b)
	seed := TechnicianSeed(sk, "fixed")
	p := DefaultPolicy().OTP()
	code, _ := p.Generate(seed, 0, now)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Verify(seed, code, now, otp.Window{Back: 1, Forward: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTechnicianSeed(b *testing.B) {
	sk, techs, _, _ := benchInputs(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		TechnicianSeed(sk, techs[i%len(techs)])
		i++
	}
}

func BenchmarkCheckCode(b *testing.B) {
	sk, techs, codes, now := benchInputs(b)
	p := DefaultPolicy()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := CheckCode(sk, p, techs[i%len(techs)], codes[i%len(codes)], now); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
