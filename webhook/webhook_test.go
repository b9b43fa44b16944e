package webhook

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	secret = []byte("whsec-test-0123456789abcdef")
	at     = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	body   = []byte(`{"id":"ob-1","type":"created","delivery":"parcel-1"}`)
)

func TestSignVerify(t *testing.T) {
	h := Sign(secret, body, at)
	other := Sign([]byte("another secret"), body, at)
	for _, tc := range []struct {
		name   string
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"good", h, body, at, nil},
		{"good, clock a little ahead", h, body, at.Add(4 * time.Minute), nil},
		{"good, clock a little behind", h, body, at.Add(-4 * time.Minute), nil},
		{"good among rotated secrets", other + ",v1=" + strings.Split(h, "v1=")[1], body, at, nil},
		{"unknown keys skipped", h + ",v2=zz", body, at, nil},
		{"body changed", h, append([]byte{' '}, body...), at, ErrSignature},
		{"other secret", other, body, at, ErrSignature},
		{"replayed later", h, body, at.Add(6 * time.Minute), ErrTime},
		{"from the future", h, body, at.Add(-6 * time.Minute), ErrTime},
		{"time moved", strings.Replace(h, "t="+strconv.FormatInt(at.Unix(), 10), "t="+strconv.FormatInt(at.Unix()+1, 10), 1), body, at, ErrSignature},
		{"empty", "", body, at, ErrMalformed},
		{"no signature", "t=1", body, at, ErrMalformed},
		{"no time", "v1=" + strings.Repeat("00", 32), body, at, ErrMalformed},
		{"two times", h + ",t=1", body, at, ErrMalformed},
		{"short hex", "t=1,v1=abcd", body, at, ErrMalformed},
		{"negative time", "t=-1,v1=" + strings.Repeat("00", 32), body, at, ErrMalformed},
		{"no equals", "t=1,v1", body, at, ErrMalformed},
		{"too long", h + strings.Repeat(",x=y", 300), body, at, ErrMalformed},
		{"too many signatures", "t=1" + strings.Repeat(",v1="+strings.Repeat("00", 32), 9), body, at, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(secret, tc.header, tc.body, tc.now, DefaultTolerance)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if err != nil && bytes.Contains([]byte(err.Error()), secret) {
				t.Fatal("the error repeats the secret")
			}
		})
	}
}

// TestOpenSSLAgrees checks the signature against openssl's HMAC, the
// command docs/deliveries.md gives shippers.
func TestOpenSSLAgrees(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatal("openssl is not installed and OUTPOST_REQUIRE_INTEROP=1")
		}
		t.Skip("openssl is not installed")
	}
	h := Sign(secret, body, at)
	ts := strconv.FormatInt(at.Unix(), 10)
	cmd := exec.Command(bin, "dgst", "-sha256", "-hmac", string(secret), "-hex")
	cmd.Stdin = bytes.NewReader(append([]byte(ts+"."), body...))
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if got := f[len(f)-1]; "t="+ts+",v1="+got != h {
		t.Fatalf("openssl says %s, Sign says %s", got, h)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Sign(secret, body, at))
	f.Add("t=1,v1=zz")
	f.Add("t=1,,v1=")
	f.Fuzz(func(t *testing.T, header string) {
		ts, sigs, err := Parse(header)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error outside ErrMalformed: %v", err)
			}
			return
		}
		if ts < 0 || len(sigs) == 0 || len(sigs) > 8 || len(header) > MaxHeaderLen {
			t.Fatalf("accepted %q: %d %d", header, ts, len(sigs))
		}
		_ = Verify(secret, header, body, at, DefaultTolerance)
	})
}
