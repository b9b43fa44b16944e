package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/otp"
)

// RFC 4226 Appendix D: secret "12345678901234567890".
const rfcSecretB32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

func TestOTPCodeHOTPVectors(t *testing.T) {
	want := []string{"755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"}
	for counter, code := range want {
		uri := "otpauth://hotp/Outpost:alice?secret=" + rfcSecretB32 + "&issuer=Outpost&counter=" + strconv.Itoa(counter)
		r := mustRun(t, nil, "otp", "code", uri)
		if got := strings.TrimSpace(r.stdout); got != code {
			t.Errorf("counter %d: outpost otp code = %q, RFC 4226 says %s", counter, got, code)
		}
		if counter > 2 {
			break // the rest is the otp package's job; three prove the wiring
		}
	}
}

// uriCodes returns the codes of an otpauth URI at HOTP counters or TOTP
// steps, made by the otp package: the commands are under test here, not
// the codes (otp/interop_test.go checks those against pyotp and oathtool).
func uriCodes(t *testing.T, uri string, at ...uint64) []string {
	t.Helper()
	k, err := otp.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	codes := make([]string, len(at))
	for i, c := range at {
		if codes[i], err = k.CodeAt(k.Secret, c); err != nil {
			t.Fatal(err)
		}
	}
	return codes
}

// uriCodeNow returns the current code of a TOTP otpauth URI.
func uriCodeNow(t *testing.T, uri string) string {
	t.Helper()
	k, err := otp.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	return uriCodes(t, uri, k.Step(time.Now()))[0]
}

func TestOTPCodeTOTP(t *testing.T) {
	uri := "otpauth://totp/Outpost:alice?secret=" + rfcSecretB32 + "&issuer=Outpost&algorithm=SHA256&digits=8&period=30"
	k, err := otp.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	r := mustRun(t, nil, "otp", "code", uri, "--json")
	after := time.Now()
	var out struct {
		Code string `json:"code"`
		Step uint64 `json:"step"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("--json: %v\n%s", err, r)
	}
	cs := uriCodes(t, uri, k.Step(before), k.Step(after))
	c1, c2 := cs[0], cs[1]
	if (out.Code != c1 || out.Step != k.Step(before)) && (out.Code != c2 || out.Step != k.Step(after)) {
		t.Fatalf("otp code --json = %+v, want %s/%d or %s/%d", out, c1, k.Step(before), c2, k.Step(after))
	}
	if len(out.Code) != 8 {
		t.Fatalf("code %q has not 8 digits", out.Code)
	}

	// oathtool agrees (interop; skipped when it is missing outside CI).
	oathtool, err := exec.LookPath("oathtool")
	if err != nil {
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatal("oathtool is not installed and OUTPOST_REQUIRE_INTEROP=1")
		}
		t.Skip("oathtool is not installed (apt-get install oathtool); skipping interop check")
	}
	before = time.Now()
	o, err := exec.Command(oathtool, "--totp=SHA256", "--digits=8", "-b", rfcSecretB32).Output()
	if err != nil {
		t.Fatal(err)
	}
	r = mustRun(t, nil, "otp", "code", uri)
	if strings.TrimSpace(string(o)) != strings.TrimSpace(r.stdout) && k.Step(before) == k.Step(time.Now()) {
		t.Fatalf("oathtool says %s, outpost says %s", o, r.stdout)
	}
}

func TestOTPCodeBadURIs(t *testing.T) {
	for _, uri := range []string{
		"http://example.com",
		"otpauth://totp/alice",
		"otpauth://totp/alice?secret=not*base32",
		"otpauth://totp/alice?secret=" + rfcSecretB32 + "&digits=11",
		"otpauth://totp/alice?secret=" + rfcSecretB32 + "&period=0",
		"otpauth://totp/alice?secret=" + rfcSecretB32 + "&algorithm=MD5",
		"otpauth://totp/alice?secret=" + strings.Repeat("A", 5000),
	} {
		r := expectCode(t, cli.ExitUsage, nil, "otp", "code", uri)
		if !strings.Contains(r.stderr, "otpauth") && !strings.Contains(r.stderr, "otp:") {
			t.Errorf("%q: message does not say what is wrong:\n%s", uri, r)
		}
		if r.stdout != "" {
			t.Errorf("%q: printed %q", uri, r.stdout)
		}
	}
	expectCode(t, cli.ExitUsage, nil, "otp", "code")
}

func TestOTPQR(t *testing.T) {
	uri := "otpauth://totp/Outpost:alice?secret=" + rfcSecretB32 + "&issuer=Outpost"
	r := mustRun(t, nil, "otp", "qr", uri)
	if len(strings.Split(r.stdout, "\n")) < 10 {
		t.Fatalf("no QR code drawn:\n%s", r)
	}
	png := filepath.Join(t.TempDir(), "enrol.png")
	mustRun(t, nil, "otp", "qr", uri, "--png", png, "--size", "300")
	st, err := os.Stat(png)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("the PNG holds a secret but has mode %o", st.Mode().Perm())
	}
	for _, size := range []string{"0", "-5", "5000"} {
		expectCode(t, cli.ExitUsage, nil, "otp", "qr", uri, "--png", png+size, "--size", size)
		if _, err := os.Stat(png + size); err == nil {
			t.Errorf("--size %s wrote a file", size)
		}
	}
	expectCode(t, cli.ExitUsage, nil, "otp", "qr", "not a uri")

	pngData, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	o := proctest.Zbarimg(t, pngData)
	// The QR code carries the canonical form of the URI: same key, parameters spelled out.
	k, err := otp.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	if o != k.URI() {
		t.Fatalf("zbarimg read %q, want %q", o, k.URI())
	}
}
