package otp_test

// Interop with real clients: oathtool (OATH Toolkit) and Debian's pyotp.
// Codes Outpost generates must equal theirs, codes they generate must verify
// with Outpost, and otpauth URIs must cross in both directions.
//
// The tools are Debian packages (apt-get install oathtool python3-pyotp);
// pyotp is imported by /usr/bin/python3, not by a pyenv python3 on PATH.
// When one is missing these tests skip, unless OUTPOST_REQUIRE_INTEROP=1
// (set by CI), when they fail.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/otp"
)

const systemPython = "/usr/bin/python3"

// interopSecrets are the RFC 6238 seed lengths plus lengths whose base32
// form ends in a partial group (no padding in otpauth URIs).
var interopSecrets = map[string][]byte{
	"20B": []byte("12345678901234567890"),
	"32B": []byte("12345678901234567890123456789012"),
	"64B": []byte("1234567890123456789012345678901234567890123456789012345678901234"),
	"16B": {0x00, 0xff, 0x10, 0x80, 0x7f, 0x01, 0xfe, 0x55, 0xaa, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05},
	"26B": []byte("an odd-length secret: 26 b"),
}

// interopTimes include the RFC 6238 times and the present.
var interopTimes = []int64{59, 1111111109, 1234567890, 2000000000, 20000000000, time.Now().Unix()}

func needTool(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s is not usable (%v): install it with apt-get install oathtool python3-pyotp zbar-tools", what, err)
	if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
		t.Fatal(msg + " (OUTPOST_REQUIRE_INTEROP=1)")
	}
	t.Skip(msg + "; set OUTPOST_REQUIRE_INTEROP=1 to make this a failure")
}

func needOathtool(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("oathtool")
	needTool(t, "oathtool", err)
}

var pyotpCheck = sync.OnceValue(func() error {
	out, err := exec.Command(systemPython, "-c", "import pyotp").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -c 'import pyotp': %v: %s", systemPython, err, bytes.TrimSpace(out))
	}
	return nil
})

func needPyotp(t *testing.T) {
	t.Helper()
	needTool(t, "pyotp (Debian python3-pyotp for "+systemPython+")", pyotpCheck())
}

// oathtool runs oathtool with the base32 secret on stdin (never on the
// command line, where other users could read it) and returns its output
// words and exit code. With a code, oathtool validates it instead of
// generating.
func oathtool(t *testing.T, secret []byte, code string, args ...string) ([]string, int) {
	t.Helper()
	args = append(append([]string{"-b"}, args...), "-")
	if code != "" {
		args = append(args, code)
	}
	cmd := exec.Command("oathtool", args...)
	cmd.Stdin = strings.NewReader(otp.EncodeSecret(secret) + "\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return strings.Fields(stdout.String()), ee.ExitCode()
	case err != nil:
		t.Fatalf("oathtool %v: %v", args, err)
	}
	return strings.Fields(stdout.String()), 0
}

func oathAlg(a otp.Algorithm) string { return strings.ToLower(a.String()) }

// TestInteropOathtoolTOTP: for every algorithm and digit count oathtool
// supports (6-8), the codes of five consecutive steps are Outpost's, and
// each verifies with Outpost at its own time; with periods 30 and 60 and a
// non-zero T0.
func TestInteropOathtoolTOTP(t *testing.T) {
	needOathtool(t)
	configs := []struct {
		period uint64
		t0     int64
	}{{30, 0}, {60, 0}, {30, 1_000_000_000}}
	for _, alg := range []otp.Algorithm{otp.SHA1, otp.SHA256, otp.SHA512} {
		for digits := 6; digits <= 8; digits++ {
			for _, cfg := range configs {
				for name, secret := range interopSecrets {
					now := interopTimes[(digits+len(name))%len(interopTimes)]
					if now < cfg.t0 {
						now += cfg.t0
					}
					t.Run(fmt.Sprintf("%v/%dd/%ds/T0=%d/%s/t=%d", alg, digits, cfg.period, cfg.t0, name, now), func(t *testing.T) {
						p := otp.Params{Type: otp.TypeTOTP, Algorithm: alg, Digits: digits, Period: cfg.period, T0: cfg.t0}
						codes, rc := oathtool(t, secret, "", "--totp="+oathAlg(alg), "-d", strconv.Itoa(digits),
							"-s", fmt.Sprintf("%ds", cfg.period), "-S", fmt.Sprintf("@%d", cfg.t0),
							"--now", fmt.Sprintf("@%d", now), "-w", "4")
						if rc != 0 || len(codes) != 5 {
							t.Fatalf("oathtool exit %d, output %q", rc, codes)
						}
						step := p.Step(time.Unix(now, 0))
						for i, theirs := range codes {
							s := step + uint64(i)
							ours, err := p.CodeAt(secret, s)
							if err != nil || ours != theirs {
								t.Errorf("step %d: Outpost %q (%v), oathtool %q", s, ours, err, theirs)
							}
							at := otp.StepTime(s, cfg.period, cfg.t0).Add(time.Duration(cfg.period) * time.Second / 2)
							if got, err := p.Verify(secret, theirs, at, otp.Window{Back: 1, Forward: 1}); err != nil || got != s {
								t.Errorf("oathtool's code of step %d: Verify = %d, %v", s, got, err)
							}
						}
					})
				}
			}
		}
	}
}

// TestInteropOathtoolValidates: oathtool accepts Outpost's codes (its own
// validation mode, window ±1) and rejects a code from outside the window.
func TestInteropOathtoolValidates(t *testing.T) {
	needOathtool(t)
	secret := interopSecrets["32B"]
	now := time.Now().Unix()
	for _, alg := range []otp.Algorithm{otp.SHA1, otp.SHA256, otp.SHA512} {
		for digits := 6; digits <= 8; digits++ {
			p := otp.Params{Type: otp.TypeTOTP, Algorithm: alg, Digits: digits, Period: 30}
			step := p.Step(time.Unix(now, 0))
			args := []string{"--totp=" + oathAlg(alg), "-d", strconv.Itoa(digits), "--now", fmt.Sprintf("@%d", now), "-w", "1"}
			for _, s := range []uint64{step - 1, step, step + 1} {
				code, _ := p.CodeAt(secret, s)
				if _, rc := oathtool(t, secret, code, args...); rc != 0 {
					t.Errorf("%v/%d digits: oathtool rejects Outpost's code of step %+d (exit %d)", alg, digits, int64(s)-int64(step), rc)
				}
			}
			far, err := p.CodeAt(secret, step+5)
			if err != nil {
				t.Fatal(err) // an empty code would be rejected for its form, proving nothing
			}
			if _, rc := oathtool(t, secret, far, args...); rc == 0 {
				t.Errorf("%v/%d digits: oathtool accepts the code of step +5 with window 1", alg, digits)
			}
		}
	}
	// HOTP: oathtool finds Outpost's code at the same counter; it prints the
	// offset from -c.
	hp := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	code, _ := hp.CodeAt(secret, 1007)
	out, rc := oathtool(t, secret, code, "--hotp", "-c", "1000", "-w", "10")
	if rc != 0 || len(out) != 1 || out[0] != "7" {
		t.Errorf("oathtool validating Outpost's HOTP code of counter 1007: exit %d, output %q", rc, out)
	}
}

// TestInteropOathtoolHOTP: oathtool's HOTP (SHA1 only) at 6-8 digits.
func TestInteropOathtoolHOTP(t *testing.T) {
	needOathtool(t)
	for digits := 6; digits <= 8; digits++ {
		for name, secret := range interopSecrets {
			start := uint64(digits * 1000)
			codes, rc := oathtool(t, secret, "", "--hotp", "-d", strconv.Itoa(digits), "-c", strconv.FormatUint(start, 10), "-w", "9")
			if rc != 0 || len(codes) != 10 {
				t.Fatalf("%d digits %s: oathtool exit %d, output %q", digits, name, rc, codes)
			}
			p := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: digits}
			for i, theirs := range codes {
				c := start + uint64(i)
				if ours, _ := p.CodeAt(secret, c); ours != theirs {
					t.Errorf("%d digits %s counter %d: Outpost %s, oathtool %s", digits, name, c, ours, theirs)
				}
				if got, err := p.VerifyCounter(secret, theirs, start, 9); err != nil || got != c {
					t.Errorf("%d digits %s: oathtool's code of counter %d: VerifyCounter = %d, %v", digits, name, c, got, err)
				}
			}
		}
	}
}

// pyotpScript reads JSON requests on stdin and answers each with pyotp:
// codes at times and counters, verification of Outpost's codes, the code of
// a parsed URI, and provisioning URIs. TZ=UTC keeps pyotp's local-time
// arithmetic honest.
const pyotpScript = `
import hashlib, json, sys, pyotp
D = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
out = []
for r in json.load(sys.stdin):
    k = r["kind"]
    if k == "totp":
        o = pyotp.TOTP(r["secret"], digits=r["digits"], digest=D[r["alg"]], interval=r["period"])
        out.append({"code": o.at(r["time"]), "verifies": o.verify(r["ours"], for_time=r["time"])})
    elif k == "hotp":
        o = pyotp.HOTP(r["secret"], digits=r["digits"], digest=D[r["alg"]])
        out.append({"code": o.at(r["counter"]), "verifies": o.verify(r["ours"], r["counter"])})
    elif k == "parse":
        o = pyotp.parse_uri(r["uri"])
        if isinstance(o, pyotp.TOTP):
            code = o.at(r["time"])
        else:
            code = o.at(0)
        out.append({"code": code, "issuer": o.issuer, "name": o.name, "digits": o.digits})
    elif k == "provision":
        if r["type"] == "totp":
            o = pyotp.TOTP(r["secret"], digits=r["digits"], digest=D[r["alg"]], interval=r["period"])
            out.append({"uri": o.provisioning_uri(name=r["name"], issuer_name=r.get("issuer"))})
        else:
            o = pyotp.HOTP(r["secret"], digits=r["digits"], digest=D[r["alg"]])
            out.append({"uri": o.provisioning_uri(name=r["name"], initial_count=r["counter"], issuer_name=r.get("issuer"))})
json.dump(out, sys.stdout)
`

type pyReq struct {
	Kind    string `json:"kind"`
	Secret  string `json:"secret,omitempty"`
	Digits  int    `json:"digits,omitempty"`
	Alg     string `json:"alg,omitempty"`
	Period  uint64 `json:"period,omitempty"`
	Time    int64  `json:"time"`
	Counter uint64 `json:"counter"`
	Ours    string `json:"ours,omitempty"`
	URI     string `json:"uri,omitempty"`
	Type    string `json:"type,omitempty"`
	Name    string `json:"name,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
}

type pyResp struct {
	Code     string `json:"code"`
	Verifies bool   `json:"verifies"`
	Issuer   string `json:"issuer"`
	Name     string `json:"name"`
	Digits   int    `json:"digits"`
	URI      string `json:"uri"`
}

// pyotp runs every request in one python process.
func pyotp(t *testing.T, reqs []pyReq) []pyResp {
	t.Helper()
	in, err := json.Marshal(reqs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(systemPython, "-c", pyotpScript)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pyotp: %v\n%s", err, stderr.String())
	}
	var out []pyResp
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || len(out) != len(reqs) {
		t.Fatalf("pyotp answered %d of %d requests: %v\n%s", len(out), len(reqs), err, stdout.String())
	}
	return out
}

// TestInteropPyotpCodes: pyotp supports every algorithm and 6-10 digits, so
// the whole matrix is checked both ways in one process.
func TestInteropPyotpCodes(t *testing.T) {
	needPyotp(t)
	type check struct {
		desc string
		p    otp.Params
		sec  []byte
		at   uint64 // step or counter
		when time.Time
	}
	var reqs []pyReq
	var checks []check
	for _, alg := range []otp.Algorithm{otp.SHA1, otp.SHA256, otp.SHA512} {
		for digits := otp.MinDigits; digits <= otp.MaxDigits; digits++ {
			for name, secret := range interopSecrets {
				for i, period := range []uint64{30, 60, 17} {
					now := time.Unix(interopTimes[(digits+i+len(name))%len(interopTimes)], 0)
					p := otp.Params{Type: otp.TypeTOTP, Algorithm: alg, Digits: digits, Period: period}
					ours, err := p.Generate(secret, 0, now)
					if err != nil {
						t.Fatal(err)
					}
					reqs = append(reqs, pyReq{Kind: "totp", Secret: otp.EncodeSecret(secret), Digits: digits, Alg: alg.String(),
						Period: period, Time: now.Unix(), Ours: ours})
					checks = append(checks, check{fmt.Sprintf("TOTP %v/%d/%ds/%s/t=%d", alg, digits, period, name, now.Unix()), p, secret, p.Step(now), now})
				}
				hp := otp.Params{Type: otp.TypeHOTP, Algorithm: alg, Digits: digits}
				for _, c := range []uint64{0, 9, 1 << 33} {
					ours, _ := hp.CodeAt(secret, c)
					reqs = append(reqs, pyReq{Kind: "hotp", Secret: otp.EncodeSecret(secret), Digits: digits, Alg: alg.String(), Counter: c, Ours: ours})
					checks = append(checks, check{fmt.Sprintf("HOTP %v/%d/%s/c=%d", alg, digits, name, c), hp, secret, c, time.Time{}})
				}
			}
		}
	}
	res := pyotp(t, reqs)
	for i, c := range checks {
		ours, _ := c.p.CodeAt(c.sec, c.at)
		if res[i].Code != ours {
			t.Errorf("%s: Outpost %s, pyotp %s", c.desc, ours, res[i].Code)
		}
		if !res[i].Verifies {
			t.Errorf("%s: pyotp rejects Outpost's code", c.desc)
		}
		// pyotp's code verifies with Outpost and identifies the same step/counter.
		var got uint64
		var err error
		if c.p.Type == otp.TypeTOTP {
			got, err = c.p.Verify(c.sec, res[i].Code, c.when, otp.Window{Back: 1, Forward: 1})
		} else {
			got, err = c.p.VerifyCounter(c.sec, res[i].Code, c.at, 5)
		}
		if err != nil || got != c.at {
			t.Errorf("%s: pyotp's code: Outpost verify = %d, %v; want %d", c.desc, got, err, c.at)
		}
	}
	t.Logf("%d codes compared with pyotp", len(checks))
}

// TestInteropPyotpURIs: pyotp parses Outpost's URIs and computes the same
// code; Outpost parses pyotp's provisioning URIs into the same token.
func TestInteropPyotpURIs(t *testing.T) {
	needPyotp(t)
	now := time.Now()
	keys := []*otp.Key{
		{Params: otp.DefaultTOTP, Secret: interopSecrets["20B"], Issuer: "Outpost", Account: "alice@example.com"},
		{Params: otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA256, Digits: 8, Period: 60}, Secret: interopSecrets["32B"], Issuer: "ACME Co", Account: "john doe"},
		{Params: otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA512, Digits: 7, Period: 30}, Secret: interopSecrets["64B"], Issuer: "Bäckerei Müller", Account: "jürgen:admin"},
		{Params: otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}, Secret: interopSecrets["26B"], Account: "no-issuer"},
		{Params: otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}, Secret: interopSecrets["16B"], Issuer: "Outpost", Account: "dev-7", Counter: 42},
		{Params: otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA256, Digits: 8}, Secret: interopSecrets["20B"], Issuer: "Outpost", Account: "dev 8", Counter: 0},
	}
	var reqs []pyReq
	for _, k := range keys {
		if err := k.Validate(); err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, pyReq{Kind: "parse", URI: k.URI(), Time: now.Unix()})
		r := pyReq{Kind: "provision", Type: k.Type.String(), Secret: otp.EncodeSecret(k.Secret), Digits: k.Digits,
			Alg: k.Algorithm.String(), Period: k.Period, Counter: k.Counter, Name: k.Account, Issuer: k.Issuer}
		reqs = append(reqs, r)
	}
	res := pyotp(t, reqs)
	for i, k := range keys {
		parsed, prov := res[2*i], res[2*i+1]
		want, _ := k.Generate(k.Secret, k.Counter, now)
		if parsed.Code != want {
			t.Errorf("pyotp.parse_uri(%s).at(now) = %s, Outpost %s", k.URI(), parsed.Code, want)
		}
		if parsed.Digits != k.Digits || parsed.Name != k.Account || (k.Issuer != "" && parsed.Issuer != k.Issuer) {
			t.Errorf("pyotp read %s as issuer %q name %q digits %d", k.URI(), parsed.Issuer, parsed.Name, parsed.Digits)
		}
		got, err := otp.ParseURI(prov.URI)
		if err != nil {
			t.Errorf("Outpost cannot parse pyotp's %s: %v", prov.URI, err)
			continue
		}
		if !keyEqual(got, k) {
			t.Errorf("pyotp's %s parsed as\n%+v\nwant %+v", prov.URI, got, k)
		}
	}
}
