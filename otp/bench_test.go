package otp_test

// Benchmarks of Outpost's OTP engine side by side with github.com/pquerna/otp
// (a benchmark-only dependency), in the same run. Each pair does the same job
// with each library's idiomatic inputs: Outpost takes the secret as bytes,
// pquerna as the base32 string an otpauth URI carries (decoding it is part of
// its API's cost). Record results in docs/BENCHMARKS.md (## OTP engine):
//
//	go test -run XXX -bench . -benchmem -count 5 ./otp/

import (
	"testing"
	"time"

	"github.com/outpost-auth/outpost/otp"
	pqotp "github.com/pquerna/otp"
	pqhotp "github.com/pquerna/otp/hotp"
	pqtotp "github.com/pquerna/otp/totp"
)

var (
	benchSecret    = []byte("12345678901234567890")
	benchSecretB32 = otp.EncodeSecret(benchSecret)
	benchTime      = time.Unix(1111111109, 0)
	benchParams    = otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	pqTOTPOpts     = pqtotp.ValidateOpts{Period: 30, Skew: 1, Digits: pqotp.DigitsSix, Algorithm: pqotp.AlgorithmSHA1}
	benchSink      string
	benchStep      uint64
	benchOK        bool
)

func BenchmarkHOTPGenerate(b *testing.B) {
	b.Run("impl=outpost", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			s, err := otp.HOTP(otp.SHA1, benchSecret, uint64(i), 6)
			if err != nil {
				b.Fatal(err)
			}
			benchSink = s
		}
	})
	b.Run("impl=pquerna", func(b *testing.B) {
		b.ReportAllocs()
		opts := pqhotp.ValidateOpts{Digits: pqotp.DigitsSix, Algorithm: pqotp.AlgorithmSHA1}
		for i := 0; b.Loop(); i++ {
			s, err := pqhotp.GenerateCodeCustom(benchSecretB32, uint64(i), opts)
			if err != nil {
				b.Fatal(err)
			}
			benchSink = s
		}
	})
}

func BenchmarkTOTPGenerate(b *testing.B) {
	b.Run("impl=outpost", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s, err := benchParams.Generate(benchSecret, 0, benchTime)
			if err != nil {
				b.Fatal(err)
			}
			benchSink = s
		}
	})
	b.Run("impl=pquerna", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s, err := pqtotp.GenerateCodeCustom(benchSecretB32, benchTime, pqTOTPOpts)
			if err != nil {
				b.Fatal(err)
			}
			benchSink = s
		}
	})
}

// BenchmarkTOTPVerify checks a code with a window of one step either side.
// "match" is the code of the previous step: the last candidate pquerna tries
// (it stops at the first match; Outpost always computes all three).
// "nomatch" is a wrong code, the common case for an attacker's guesses.
func BenchmarkTOTPVerify(b *testing.B) {
	prev, err := benchParams.Generate(benchSecret, 0, benchTime.Add(-30*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	wrong := "000000"
	if ok, _ := pqtotp.ValidateCustom(wrong, benchSecretB32, benchTime, pqTOTPOpts); ok {
		b.Fatal("the wrong code happens to be valid: pick another")
	}
	w := otp.Window{Back: 1, Forward: 1}
	for _, c := range []struct{ name, code string }{{"match", prev}, {"nomatch", wrong}} {
		b.Run("case="+c.name+"/impl=outpost", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				step, err := benchParams.Verify(benchSecret, c.code, benchTime, w)
				if (err == nil) != (c.name == "match") {
					b.Fatal(err)
				}
				benchStep = step
			}
		})
		b.Run("case="+c.name+"/impl=pquerna", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ok, err := pqtotp.ValidateCustom(c.code, benchSecretB32, benchTime, pqTOTPOpts)
				if err != nil || ok != (c.name == "match") {
					b.Fatal(ok, err)
				}
				benchOK = ok
			}
		})
	}
	// pquerna's one-call form: the current time, SHA1, 6 digits, skew 1.
	b.Run("case=nomatch/impl=pquerna-Validate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			benchOK = pqtotp.Validate(wrong, benchSecretB32)
		}
	})
}

// BenchmarkTOTPVerifyAlgorithms is Outpost alone: the cost of a ±1 verify per
// hash, with the RFC 6238 seed lengths and 8 digits.
func BenchmarkTOTPVerifyAlgorithms(b *testing.B) {
	seeds := map[otp.Algorithm][]byte{
		otp.SHA1:   []byte("12345678901234567890"),
		otp.SHA256: []byte("12345678901234567890123456789012"),
		otp.SHA512: []byte("1234567890123456789012345678901234567890123456789012345678901234"),
	}
	for _, alg := range []otp.Algorithm{otp.SHA1, otp.SHA256, otp.SHA512} {
		b.Run("alg="+alg.String(), func(b *testing.B) {
			p := otp.Params{Type: otp.TypeTOTP, Algorithm: alg, Digits: 8, Period: 30}
			b.ReportAllocs()
			for b.Loop() {
				benchStep, _ = p.Verify(seeds[alg], "00000000", benchTime, otp.Window{Back: 1, Forward: 1})
			}
		})
	}
}

// BenchmarkTOTPVerifyPaired times both libraries in alternating blocks of 64
// verifications inside one loop, so that both see the same load on a shared
// machine, and reports each one's ns per verification and pquerna's time
// divided by Outpost's ("speedup"; above 1 means Outpost is faster). Its
// ns/op is the sum of both plus timer overhead: read the custom metrics.
func BenchmarkTOTPVerifyPaired(b *testing.B) {
	prev, _ := benchParams.Generate(benchSecret, 0, benchTime.Add(-30*time.Second))
	w := otp.Window{Back: 1, Forward: 1}
	for _, c := range []struct{ name, code string }{{"match", prev}, {"nomatch", "000000"}} {
		b.Run("case="+c.name, func(b *testing.B) {
			const block = 64
			var tOut, tPq time.Duration
			outpost := func() {
				start := time.Now()
				for range block {
					benchStep, _ = benchParams.Verify(benchSecret, c.code, benchTime, w)
				}
				tOut += time.Since(start)
			}
			pquerna := func() {
				start := time.Now()
				for range block {
					benchOK, _ = pqtotp.ValidateCustom(c.code, benchSecretB32, benchTime, pqTOTPOpts)
				}
				tPq += time.Since(start)
			}
			n := 0
			for ; b.Loop(); n++ {
				if n%2 == 0 { // alternate the order too
					outpost()
					pquerna()
				} else {
					pquerna()
					outpost()
				}
			}
			calls := float64(n * block)
			b.ReportMetric(float64(tOut.Nanoseconds())/calls, "outpost-ns/verify")
			b.ReportMetric(float64(tPq.Nanoseconds())/calls, "pquerna-ns/verify")
			b.ReportMetric(float64(tPq)/float64(tOut), "speedup")
		})
	}
}

// BenchmarkTOTPVerifyRightWrong alternates blocks of 64 verifications of a
// right code (the previous step's) and of a wrong one inside one loop, so
// that both see the same load, and reports the wrong code's time divided by
// the right one's: Verify computes and compares every candidate of the
// window whatever the code, so the ratio should be 1 within noise.
func BenchmarkTOTPVerifyRightWrong(b *testing.B) {
	right, err := benchParams.Generate(benchSecret, 0, benchTime.Add(-30*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	w := otp.Window{Back: 1, Forward: 1}
	const block = 64
	var tRight, tWrong time.Duration
	run := func(code string, total *time.Duration) {
		start := time.Now()
		for range block {
			benchStep, _ = benchParams.Verify(benchSecret, code, benchTime, w)
		}
		*total += time.Since(start)
	}
	n := 0
	for ; b.Loop(); n++ {
		if n%2 == 0 { // alternate the order too
			run(right, &tRight)
			run("000000", &tWrong)
		} else {
			run("000000", &tWrong)
			run(right, &tRight)
		}
	}
	calls := float64(n * block)
	b.ReportMetric(float64(tRight.Nanoseconds())/calls, "right-ns/verify")
	b.ReportMetric(float64(tWrong.Nanoseconds())/calls, "wrong-ns/verify")
	b.ReportMetric(float64(tWrong)/float64(tRight), "wrong/right")
}
