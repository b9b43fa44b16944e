package otp_test

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/otp"
)

// readTable returns the whitespace-separated fields of every line of a
// testdata file, skipping blank lines and # comments.
func readTable(t *testing.T, name string) [][]string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rows = append(rows, strings.Fields(line))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

type hotpVector struct {
	counter   uint64
	truncated uint32
	code      string
}

func loadRFC4226(t *testing.T) (secret []byte, vs []hotpVector) {
	t.Helper()
	for _, r := range readTable(t, "testdata/rfc4226_appendix_d.txt") {
		if r[0] == "secret" {
			secret = []byte(r[1])
			continue
		}
		if len(r) != 5 {
			t.Fatalf("rfc4226 row %v: want 5 fields", r)
		}
		c, err1 := strconv.ParseUint(r[0], 10, 64)
		hex, err2 := strconv.ParseUint(r[2], 16, 32)
		dec, err3 := strconv.ParseUint(r[3], 10, 32)
		if err1 != nil || err2 != nil || err3 != nil || hex != dec {
			t.Fatalf("rfc4226 row %v is malformed", r)
		}
		vs = append(vs, hotpVector{counter: c, truncated: uint32(dec), code: r[4]})
	}
	if secret == nil || len(vs) != 10 {
		t.Fatalf("rfc4226 table: secret %q, %d rows; want a secret and counters 0-9", secret, len(vs))
	}
	return secret, vs
}

type totpVector struct {
	unix int64
	utc  time.Time
	step uint64
	code string
	alg  otp.Algorithm
}

func loadRFC6238(t *testing.T) (seeds map[otp.Algorithm][]byte, vs []totpVector) {
	t.Helper()
	seeds = map[otp.Algorithm][]byte{}
	for _, r := range readTable(t, "testdata/rfc6238_appendix_b.txt") {
		if r[0] == "seed" {
			alg, err := otp.ParseAlgorithm(r[1])
			if err != nil {
				t.Fatal(err)
			}
			seeds[alg] = []byte(r[2])
			continue
		}
		if len(r) != 5 {
			t.Fatalf("rfc6238 row %v: want 5 fields", r)
		}
		unix, err1 := strconv.ParseInt(r[0], 10, 64)
		utc, err2 := time.Parse(time.RFC3339, r[1])
		step, err3 := strconv.ParseUint(r[2], 16, 64)
		alg, err4 := otp.ParseAlgorithm(r[4])
		if err := firstErr(err1, err2, err3, err4); err != nil {
			t.Fatalf("rfc6238 row %v: %v", r, err)
		}
		vs = append(vs, totpVector{unix: unix, utc: utc, step: step, code: r[3], alg: alg})
	}
	if len(seeds[otp.SHA1]) != 20 || len(seeds[otp.SHA256]) != 32 || len(seeds[otp.SHA512]) != 64 || len(vs) != 18 {
		t.Fatalf("rfc6238 table: seeds of %d/%d/%d bytes and %d rows; want 20/32/64 and 18",
			len(seeds[otp.SHA1]), len(seeds[otp.SHA256]), len(seeds[otp.SHA512]), len(vs))
	}
	return seeds, vs
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func TestRFC4226AppendixD(t *testing.T) {
	secret, vs := loadRFC4226(t)
	p := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	for _, v := range vs {
		t.Run(fmt.Sprint(v.counter), func(t *testing.T) {
			got, err := otp.HOTP(otp.SHA1, secret, v.counter, 6)
			if err != nil || got != v.code {
				t.Fatalf("HOTP(counter %d) = %q, %v; want %s", v.counter, got, err, v.code)
			}
			if got, _ := p.Generate(secret, v.counter, time.Time{}); got != v.code {
				t.Errorf("Generate = %s, want %s", got, v.code)
			}
			if got, _ := p.CodeAt(secret, v.counter); got != v.code {
				t.Errorf("CodeAt = %s, want %s", got, v.code)
			}
			// The truncated value with more digits is the same number, left-padded.
			for d := 7; d <= 10; d++ {
				want := fmt.Sprintf("%0*d", d, uint64(v.truncated)%pow10(d))
				if got, _ := otp.HOTP(otp.SHA1, secret, v.counter, d); got != want {
					t.Errorf("%d digits: got %s, want %s", d, got, want)
				}
			}
			// Verifying from counter 0 with enough look-ahead finds exactly this counter.
			ctr, err := p.VerifyCounter(secret, v.code, 0, 9)
			if err != nil || ctr != v.counter {
				t.Errorf("VerifyCounter(0, 9) = %d, %v; want %d", ctr, err, v.counter)
			}
		})
	}
}

func pow10(d int) uint64 {
	n := uint64(1)
	for range d {
		n *= 10
	}
	return n
}

func TestRFC6238AppendixB(t *testing.T) {
	seeds, vs := loadRFC6238(t)
	for _, v := range vs {
		t.Run(fmt.Sprintf("%d/%v", v.unix, v.alg), func(t *testing.T) {
			now := time.Unix(v.unix, 0)
			if !now.Equal(v.utc) {
				t.Fatalf("table: %d is not %v", v.unix, v.utc)
			}
			p := otp.Params{Type: otp.TypeTOTP, Algorithm: v.alg, Digits: 8, Period: 30}
			if got := p.Step(now); got != v.step {
				t.Errorf("Step = %X, want %X", got, v.step)
			}
			if got := otp.TOTPStep(v.utc, 30, 0); got != v.step {
				t.Errorf("TOTPStep = %X, want %X", got, v.step)
			}
			if st := otp.StepTime(v.step, 30, 0); st.After(now) || now.Sub(st) >= 30*time.Second {
				t.Errorf("StepTime(%X) = %v, not the start of the step holding %v", v.step, st, now)
			}
			got, err := p.Generate(seeds[v.alg], 0, now)
			if err != nil || got != v.code {
				t.Fatalf("Generate = %q, %v; want %s", got, err, v.code)
			}
			step, err := p.Verify(seeds[v.alg], v.code, now, otp.Window{})
			if err != nil || step != v.step {
				t.Errorf("Verify = %X, %v; want %X", step, err, v.step)
			}
		})
	}
}
