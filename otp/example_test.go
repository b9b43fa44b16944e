package otp_test

import (
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/otp"
)

// The common case: check a TOTP code in a window around now, and accept
// each step once.
func Example() {
	secret := []byte("12345678901234567890") // RFC 6238's test secret; a real one is 20 random bytes
	p := otp.DefaultTOTP                     // SHA1, 6 digits, 30 s: what every authenticator app reads
	now := time.Date(2031, 5, 1, 12, 0, 10, 0, time.UTC)

	code, _ := p.Generate(secret, 0, now) // what the user's app shows
	// The code arrives 25 s later, in the next step: the window takes it.
	step, err := p.Verify(secret, code, now.Add(25*time.Second), otp.Window{Back: 1, Forward: 1})
	fmt.Println(code, step, err)

	// Record the step; the same code again matches a step below NextCounter: a replay.
	again, _ := p.Verify(secret, code, now.Add(40*time.Second), otp.Window{Back: 1, Forward: 1})
	fmt.Println("replay:", again < otp.NextCounter(true, step))
	// Output:
	// 497491 64513440 <nil>
	// replay: true
}

// An HOTP token: verify from the next expected counter with a look-ahead,
// then record the counter that matched.
func ExampleParams_VerifyCounter() {
	secret := []byte("12345678901234567890") // RFC 4226 Appendix D
	p := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}

	// Counter 0 was used; the user pressed the button twice since.
	counter, err := p.VerifyCounter(secret, "359152", otp.NextCounter(true, 0), 10)
	fmt.Println(counter, err)
	// Output: 2 <nil>
}

// Read the otpauth:// URI an authenticator app's QR code holds.
func ExampleParseURI() {
	k, err := otp.ParseURI("otpauth://totp/Outpost:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Outpost")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(k.Issuer, k.Account, k.Type, k.Digits, k.Period)
	// Output: Outpost alice totp 6 30
}
