package otp_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/otp"
)

var seed20 = []byte("12345678901234567890")

func mustCode(t *testing.T, p otp.Params, secret []byte, step uint64) string {
	t.Helper()
	c, err := p.CodeAt(secret, step)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerifyWindow(t *testing.T) {
	p := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	const cur = 1000
	// A time in the middle of step 1000.
	now := otp.StepTime(cur, 30, 0).Add(17 * time.Second)
	tests := []struct {
		name    string
		codeAt  uint64
		w       otp.Window
		want    uint64
		wantErr error
	}{
		{"current step, no window", cur, otp.Window{}, cur, nil},
		{"previous step, no window", cur - 1, otp.Window{}, 0, otp.ErrNoMatch},
		{"previous step, back 1", cur - 1, otp.Window{Back: 1}, cur - 1, nil},
		{"back edge, back 2", cur - 2, otp.Window{Back: 2}, cur - 2, nil},
		{"past back edge", cur - 3, otp.Window{Back: 2, Forward: 2}, 0, otp.ErrNoMatch},
		{"next step, back only", cur + 1, otp.Window{Back: 1}, 0, otp.ErrNoMatch},
		{"next step, forward 1", cur + 1, otp.Window{Forward: 1}, cur + 1, nil},
		{"forward edge", cur + 3, otp.Window{Back: 1, Forward: 3}, cur + 3, nil},
		{"past forward edge", cur + 4, otp.Window{Back: 1, Forward: 3}, 0, otp.ErrNoMatch},
		{"negative window is zero", cur - 1, otp.Window{Back: -5, Forward: -5}, 0, otp.ErrNoMatch},
		{"negative window, current", cur, otp.Window{Back: -5, Forward: -5}, cur, nil},
		{"largest window, back edge", cur - 499, otp.Window{Back: 499, Forward: otp.MaxWindow - 500}, cur - 499, nil},
		{"largest window, forward edge", cur + 500, otp.Window{Back: 499, Forward: otp.MaxWindow - 500}, cur + 500, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Verify(seed20, mustCode(t, p, seed20, tt.codeAt), now, tt.w)
			if !errors.Is(err, tt.wantErr) || (err == nil && got != tt.want) {
				t.Fatalf("Verify = %d, %v; want %d, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// Every second of a step gives that step, and the step edges are exact.
func TestVerifyStepEdges(t *testing.T) {
	for _, period := range []uint64{1, 30, 60, 90, 86400} {
		p := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA256, Digits: 8, Period: period}
		start := otp.StepTime(77, period, 0)
		code := mustCode(t, p, seed20, 77)
		for _, at := range []time.Time{start, start.Add(time.Duration(period)*time.Second - time.Nanosecond)} {
			if got, err := p.Verify(seed20, code, at, otp.Window{}); err != nil || got != 77 {
				t.Errorf("period %d at %v: %d, %v; want step 77", period, at, got, err)
			}
		}
		if _, err := p.Verify(seed20, code, start.Add(time.Duration(period)*time.Second), otp.Window{}); !errors.Is(err, otp.ErrNoMatch) {
			t.Errorf("period %d: code of step 77 accepted at the start of step 78 with no window", period)
		}
		if _, err := p.Verify(seed20, code, start.Add(-time.Second), otp.Window{}); !errors.Is(err, otp.ErrNoMatch) {
			t.Errorf("period %d: code of step 77 accepted in step 76 with no window", period)
		}
	}
}

func TestVerifyPeriodAndT0(t *testing.T) {
	tests := []struct {
		name   string
		period uint64
		t0     int64
		unix   int64
		step   uint64
	}{
		{"period 60", 60, 0, 1111111109, 1111111109 / 60},
		{"period 1", 1, 0, 1234567890, 1234567890},
		{"period one day", 86400, 0, 1700000000, 1700000000 / 86400},
		{"T0 non-zero", 30, 1_000_000_000, 1_000_000_095, 3},
		{"T0 negative", 30, -60, 0, 2},
		{"at T0", 30, 1_000_000_000, 1_000_000_000, 0},
		{"before T0 is step 0", 30, 1_000_000_000, 999_999_000, 0},
		{"before the Unix epoch", 30, 0, -100, 0},
		{"year 2603", 30, 0, 20000000000, 20000000000 / 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: tt.period, T0: tt.t0}
			now := time.Unix(tt.unix, 0)
			if got := p.Step(now); got != tt.step {
				t.Fatalf("Step = %d, want %d", got, tt.step)
			}
			code, err := p.Generate(seed20, 0, now)
			if err != nil || code != mustCode(t, p, seed20, tt.step) {
				t.Fatalf("Generate = %q, %v; want the code of step %d", code, err, tt.step)
			}
			got, err := p.Verify(seed20, code, now, otp.Window{Back: 1, Forward: 1})
			if err != nil || got != tt.step {
				t.Fatalf("Verify = %d, %v; want %d", got, err, tt.step)
			}
			if tt.unix >= tt.t0 {
				if st := otp.StepTime(tt.step, tt.period, tt.t0); st.After(now) || now.Sub(st) >= time.Duration(tt.period)*time.Second {
					t.Errorf("StepTime(%d) = %v does not start the step holding %v", tt.step, st, now)
				}
			}
		})
	}
}

// The same secret and time give different codes under different T0 and
// periods: the parameters are part of the token.
func TestVerifyRejectsOtherParams(t *testing.T) {
	now := time.Unix(1700000000, 0)
	base := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	code, err := base.Generate(seed20, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	others := []otp.Params{
		{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 60},
		{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30, T0: 3600},
		{Type: otp.TypeTOTP, Algorithm: otp.SHA256, Digits: 6, Period: 30},
	}
	for _, p := range others {
		if _, err := p.Verify(seed20, code, now, otp.Window{}); !errors.Is(err, otp.ErrNoMatch) {
			t.Errorf("%+v accepted a code of %+v: %v", p, base, err)
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	totp := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	hotp := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"Verify on HOTP params", func() error { _, err := hotp.Verify(seed20, "123456", now, otp.Window{}); return err }, otp.ErrInvalidParams},
		{"Verify with period 0", func() error {
			p := totp
			p.Period = 0
			_, err := p.Verify(seed20, "123456", now, otp.Window{})
			return err
		}, otp.ErrInvalidParams},
		{"window too wide", func() error {
			_, err := totp.Verify(seed20, "123456", now, otp.Window{Back: otp.MaxWindow})
			return err
		}, otp.ErrInvalidParams},
		{"window over MaxWindow in total", func() error {
			_, err := totp.Verify(seed20, "123456", now, otp.Window{Back: otp.MaxWindow / 2, Forward: otp.MaxWindow / 2})
			return err
		}, otp.ErrInvalidParams},
		{"huge window", func() error {
			_, err := totp.Verify(seed20, "123456", now, otp.Window{Back: math.MaxInt, Forward: math.MaxInt})
			return err
		}, otp.ErrInvalidParams},
		{"malformed code", func() error { _, err := totp.Verify(seed20, "12345", now, otp.Window{}); return err }, otp.ErrMalformedCode},
		{"look-ahead too wide", func() error { _, err := hotp.VerifyCounter(seed20, "123456", 0, otp.MaxWindow); return err }, otp.ErrInvalidParams},
		{"counter exhausted", func() error { _, err := hotp.VerifyCounter(seed20, "123456", math.MaxUint64, 1); return err }, otp.ErrInvalidParams},
		{"range reversed", func() error { _, err := hotp.VerifyRange(seed20, "123456", 5, 4); return err }, otp.ErrInvalidParams},
		{"range too wide", func() error { _, err := hotp.VerifyRange(seed20, "123456", 0, otp.MaxWindow); return err }, otp.ErrInvalidParams},
		{"unknown algorithm", func() error {
			_, err := otp.Params{Type: otp.TypeHOTP, Algorithm: 9, Digits: 6}.VerifyCounter(seed20, "123456", 0, 0)
			return err
		}, otp.ErrUnknownAlgorithm},
		{"Generate with period 0", func() error {
			_, err := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6}.Generate(seed20, 0, now)
			return err
		}, otp.ErrInvalidParams},
		{"CodeAt with 11 digits", func() error {
			_, err := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 11}.CodeAt(seed20, 0)
			return err
		}, otp.ErrInvalidParams},
		{"HOTP with 5 digits", func() error { _, err := otp.HOTP(otp.SHA1, seed20, 0, 5); return err }, otp.ErrInvalidParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want an error wrapping %v", err, tt.want)
			}
			if strings.Contains(err.Error(), "123456") {
				t.Errorf("error %q repeats the code", err)
			}
		})
	}
}

// Verifying at the far end of time neither overflows nor panics.
func TestVerifyExtremeSteps(t *testing.T) {
	p := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 1, T0: math.MinInt64}
	now := time.Unix(math.MaxInt64/2, 0) // time.Unix's seconds beyond ~2^62 are not representable
	step := p.Step(now)
	code := mustCode(t, p, seed20, step)
	if got, err := p.Verify(seed20, code, now, otp.Window{Back: 2, Forward: 2}); err != nil || got != step {
		t.Fatalf("Verify near the top of the step range = %d, %v; want %d", got, err, step)
	}
	hotp := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	top := mustCode(t, hotp, seed20, math.MaxUint64)
	if got, err := hotp.VerifyCounter(seed20, top, math.MaxUint64-3, 3); err != nil || got != math.MaxUint64 {
		t.Fatalf("VerifyCounter at the last counter = %d, %v", got, err)
	}
}

func TestVerifyCounterLookAhead(t *testing.T) {
	p := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA512, Digits: 7}
	tests := []struct {
		name      string
		codeAt    uint64
		next      uint64
		lookahead int
		want      uint64
		wantErr   error
	}{
		{"expected counter", 5, 5, 0, 5, nil},
		{"one ahead, no look-ahead", 6, 5, 0, 0, otp.ErrNoMatch},
		{"one ahead", 6, 5, 1, 6, nil},
		{"look-ahead edge", 15, 5, 10, 15, nil},
		{"past look-ahead", 16, 5, 10, 0, otp.ErrNoMatch},
		{"behind the counter (replay)", 4, 5, 10, 0, otp.ErrNoMatch},
		{"negative look-ahead is zero", 5, 5, -3, 5, nil},
		{"largest look-ahead", 5 + otp.MaxWindow - 1, 5, otp.MaxWindow - 1, 5 + otp.MaxWindow - 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.VerifyCounter(seed20, mustCode(t, p, seed20, tt.codeAt), tt.next, tt.lookahead)
			if !errors.Is(err, tt.wantErr) || (err == nil && got != tt.want) {
				t.Fatalf("VerifyCounter = %d, %v; want %d, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// findCollision returns the first two counters with the same code that are
// less than maxGap apart, i < j.
func findCollision(t *testing.T, p otp.Params, secret []byte, maxGap uint64) (i, j uint64, code string) {
	t.Helper()
	last := map[string]uint64{}
	for c := range uint64(100_000) {
		code := mustCode(t, p, secret, c)
		if prev, ok := last[code]; ok && c-prev < maxGap {
			return prev, c, code
		}
		last[code] = c
	}
	t.Fatal("no collision in 100,000 counters")
	return
}

// When two candidates share a code, the constant-time selection returns the
// lowest, whatever the order of the window.
func TestVerifyLowestMatchWins(t *testing.T) {
	p := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	// In a 6-digit code space, about one counter in a thousand repeats a code
	// of the thousand before it; the secret is fixed, so this is deterministic.
	i, j, code := findCollision(t, p, seed20, otp.MaxWindow-10)
	t.Logf("counters %d and %d share a code", i, j)
	for _, r := range [][2]uint64{{i, j}, {i - 3, j + 3}, {j + 10 - (otp.MaxWindow - 1), j + 10}} {
		lo, hi := r[0], r[1]
		got, err := p.VerifyRange(seed20, code, lo, hi)
		if err != nil || got != i {
			t.Errorf("VerifyRange(%d, %d) = %d, %v; want the lower counter %d", lo, hi, got, err, i)
		}
	}
	// Once the caller moves past i, the same code is found at j.
	if got, err := p.VerifyCounter(seed20, code, i+1, int(j-i)); err != nil || got != j {
		t.Errorf("VerifyCounter after %d = %d, %v; want %d", i, got, err, j)
	}
	// TOTP: the same selection over steps.
	tp := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	now := otp.StepTime(j, 30, 0)
	if got, err := tp.Verify(seed20, code, now, otp.Window{Back: int(j - i)}); err != nil || got != i {
		t.Errorf("Verify = %d, %v; want the lower step %d", got, err, i)
	}
}

func TestCheckCode(t *testing.T) {
	tests := []struct {
		name   string
		code   string
		digits int
		ok     bool
	}{
		{"six digits", "012345", 6, true},
		{"ten digits", "0123456789", 10, true},
		{"all zeros", "00000000", 8, true},
		{"empty", "", 6, false},
		{"too short", "12345", 6, false},
		{"too long", "1234567", 6, false},
		{"letter", "12a456", 6, false},
		{"space inside", "123 456", 6, false},
		{"leading space", " 123456", 6, false},
		{"trailing newline", "123456\n", 6, false},
		{"sign", "+12345", 6, false},
		{"negative", "-12345", 6, false},
		{"NUL byte", "12345\x00", 6, false},
		{"full-width digits", "１２３４５６", 6, false},
		{"Arabic-Indic digits, 6 bytes", "٠١٢", 6, false},
		{"Devanagari digits", "१२३४५६", 6, false},
		{"superscript digits", "¹²³", 6, false},
		{"invalid UTF-8", "12\xff456", 6, false},
		{"very long", strings.Repeat("1", 1<<20), 6, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := otp.CheckCode(tt.code, tt.digits)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckCode = %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, otp.ErrMalformedCode) {
					t.Errorf("error %v does not wrap ErrMalformedCode", err)
				}
				if len(tt.code) >= 3 && strings.Contains(err.Error(), tt.code) {
					t.Errorf("error %q repeats the code", err)
				}
				// Verify rejects the same codes before any HMAC work.
				p := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: tt.digits}
				if _, err := p.VerifyCounter(seed20, tt.code, 0, 10); !errors.Is(err, otp.ErrMalformedCode) {
					t.Errorf("VerifyCounter = %v, want ErrMalformedCode", err)
				}
			}
		})
	}
}

func TestCheckCodeMessages(t *testing.T) {
	if err := otp.CheckCode("12345", 6); err == nil || !strings.Contains(err.Error(), "5 digits, want 6") {
		t.Errorf("short code: %v", err)
	}
	if err := otp.CheckCode("１２３４５６", 6); err == nil || !strings.Contains(err.Error(), "only the digits 0-9") {
		t.Errorf("full-width code: %v", err)
	}
}

func TestParamsValidate(t *testing.T) {
	ok := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	tests := []struct {
		name   string
		modify func(*otp.Params)
		want   error // nil: valid
		msg    string
	}{
		{"default TOTP", func(*otp.Params) {}, nil, ""},
		{"SHA256, 8 digits, 60 s", func(p *otp.Params) { p.Algorithm, p.Digits, p.Period = otp.SHA256, 8, 60 }, nil, ""},
		{"SHA512, 10 digits, 1 s", func(p *otp.Params) { p.Algorithm, p.Digits, p.Period = otp.SHA512, 10, 1 }, nil, ""},
		{"max period", func(p *otp.Params) { p.Period = otp.MaxPeriod }, nil, ""},
		{"T0 any value", func(p *otp.Params) { p.T0 = -12345 }, nil, ""},
		{"HOTP ignores period", func(p *otp.Params) { p.Type, p.Period = otp.TypeHOTP, 0 }, nil, ""},
		{"zero type", func(p *otp.Params) { p.Type = 0 }, otp.ErrInvalidParams, "type"},
		{"type 3", func(p *otp.Params) { p.Type = 3 }, otp.ErrInvalidParams, "type"},
		{"zero algorithm", func(p *otp.Params) { p.Algorithm = 0 }, otp.ErrUnknownAlgorithm, "use SHA1, SHA256 or SHA512"},
		{"algorithm 4", func(p *otp.Params) { p.Algorithm = 4 }, otp.ErrUnknownAlgorithm, "use SHA1, SHA256 or SHA512"},
		{"5 digits", func(p *otp.Params) { p.Digits = 5 }, otp.ErrInvalidParams, "use 6 to 10"},
		{"11 digits", func(p *otp.Params) { p.Digits = 11 }, otp.ErrInvalidParams, "use 6 to 10"},
		{"negative digits", func(p *otp.Params) { p.Digits = -6 }, otp.ErrInvalidParams, "use 6 to 10"},
		{"period 0", func(p *otp.Params) { p.Period = 0 }, otp.ErrInvalidParams, "period 0 s"},
		{"period over a day", func(p *otp.Params) { p.Period = otp.MaxPeriod + 1 }, otp.ErrInvalidParams, "use 1 to 86400"},
		{"huge period", func(p *otp.Params) { p.Period = math.MaxUint64 }, otp.ErrInvalidParams, "period"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.modify(&p)
			err := p.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", p, err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Validate(%+v) = %v; want %v mentioning %q", p, err, tt.want, tt.msg)
			}
		})
	}
}

func TestNamesRoundTrip(t *testing.T) {
	for _, a := range []otp.Algorithm{otp.SHA1, otp.SHA256, otp.SHA512} {
		for _, s := range []string{a.String(), strings.ToLower(a.String())} {
			if got, err := otp.ParseAlgorithm(s); err != nil || got != a {
				t.Errorf("ParseAlgorithm(%q) = %v, %v", s, got, err)
			}
		}
	}
	for _, s := range []string{"", "SHA-1", "MD5", "sha384", "SHA1 "} {
		if _, err := otp.ParseAlgorithm(s); !errors.Is(err, otp.ErrUnknownAlgorithm) {
			t.Errorf("ParseAlgorithm(%q) = %v", s, err)
		}
	}
	for _, ty := range []otp.Type{otp.TypeHOTP, otp.TypeTOTP} {
		if got, err := otp.ParseType(strings.ToUpper(ty.String())); err != nil || got != ty {
			t.Errorf("ParseType(%v) = %v, %v", ty, got, err)
		}
	}
	if _, err := otp.ParseType("motp"); !errors.Is(err, otp.ErrUnknownType) {
		t.Errorf("ParseType(motp) = %v", err)
	}
	if s := otp.Algorithm(7).String(); s != "Algorithm(7)" {
		t.Errorf("unknown algorithm prints as %q", s)
	}
	if s := otp.Type(7).String(); s != "Type(7)" {
		t.Errorf("unknown type prints as %q", s)
	}
}

func TestWindowRange(t *testing.T) {
	tests := []struct {
		w        otp.Window
		step     uint64
		lo, hi   uint64
		describe string
	}{
		{otp.Window{Back: 1, Forward: 1}, 100, 99, 101, "either side"},
		{otp.Window{Back: 2, Forward: 0}, 1, 0, 1, "clamped at step 0"},
		{otp.Window{Back: -3, Forward: -1}, 7, 7, 7, "negative counts as 0"},
		{otp.Window{Forward: 4}, 10, 10, 14, "an HOTP look-ahead after the next counter"},
		{otp.Window{Back: 1, Forward: 5}, math.MaxUint64 - 2, math.MaxUint64 - 3, math.MaxUint64, "clamped at the top"},
	}
	for _, tc := range tests {
		if lo, hi := tc.w.Range(tc.step); lo != tc.lo || hi != tc.hi {
			t.Errorf("%s: Range(%d) = %d..%d, want %d..%d", tc.describe, tc.step, lo, hi, tc.lo, tc.hi)
		}
	}
}

func TestNextCounter(t *testing.T) {
	tests := []struct {
		used bool
		last uint64
		want uint64
	}{
		{false, 0, 0},
		{false, 41, 0}, // an unused token's stored value means nothing
		{true, 0, 1},
		{true, 41, 42},
	}
	for _, tc := range tests {
		if got := otp.NextCounter(tc.used, tc.last); got != tc.want {
			t.Errorf("otp.NextCounter(%v, %d) = %d, want %d", tc.used, tc.last, got, tc.want)
		}
	}
}
