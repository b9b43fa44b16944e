package site

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/sitewire"
	"github.com/outpost-auth/outpost/otp"
)

// Known answers for master = 00 01 .. 1f, scope "north", epoch 2, technician
// "tech-042", computed by testdata/derive_kat.py (an independent HKDF in
// Python's standard library) and the code by oathtool.
const (
	katScopeKey = "20030934e6357a24e57c9fbe591ca6f9350e54ca6b3dd74a0f2993351aaa8c0b"
	katSeed     = "55f1585030665593caba2668dec83b42ef18926b"
	katUnix     = 1773144000 // 2026-03-10T12:00:00Z
	katCode     = "488444"
)

func katMaster() []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestDerivationKnownAnswer(t *testing.T) {
	sk := keys.Derive(katMaster(), ScopeKeySize, keys.PurposeScope, 2, "north")
	if hex.EncodeToString(sk) != katScopeKey {
		t.Fatalf("scope key %x", sk)
	}
	seed := TechnicianSeed(sk, "tech-042")
	if hex.EncodeToString(seed) != katSeed {
		t.Fatalf("seed %x", seed)
	}
	now := time.Unix(katUnix, 0)
	step, err := CheckCode(sk, DefaultPolicy(), "tech-042", katCode, now)
	if err != nil || step != katUnix/30 {
		t.Fatalf("CheckCode = %d, %v", step, err)
	}

	// The same numbers from the independent implementation, when Python is there.
	out, err := exec.Command("/usr/bin/python3", "testdata/derive_kat.py").Output()
	if err != nil {
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatalf("/usr/bin/python3: %v", err)
		}
		t.Skipf("/usr/bin/python3 is not available (%v)", err)
	}
	if got := strings.Fields(string(out)); len(got) != 2 || got[0] != katScopeKey || got[1] != katSeed {
		t.Fatalf("python says %q", out)
	}
	if path, err := exec.LookPath("oathtool"); err == nil {
		out, err := exec.Command(path, "--totp", "-N", "@1773144000", katSeed).Output()
		if err != nil || strings.TrimSpace(string(out)) != katCode {
			t.Fatalf("oathtool says %q, %v", out, err)
		}
	}
}

func TestDerivationSeparatesTechniciansAndPurposes(t *testing.T) {
	sk := keys.Derive(katMaster(), ScopeKeySize, keys.PurposeScope, 2, "north")
	seen := map[string]string{}
	for _, tech := range []string{"tech-042", "Tech-042", "tech-0420", "tech-04", "a", "b"} {
		s := string(TechnicianSeed(sk, tech))
		if prev, ok := seen[s]; ok {
			t.Fatalf("%q and %q share a seed", tech, prev)
		}
		seen[s] = tech
	}
	// A technician seed is never another kind of key under the same secret.
	if bytes.Equal(TechnicianSeed(sk, "north"), keys.Derive(sk, SeedSize, keys.PurposeScope, 0, "north")) {
		t.Fatal("purposes collide")
	}
}

func TestCheckCodeErrors(t *testing.T) {
	sk := keys.Derive(katMaster(), ScopeKeySize, keys.PurposeScope, 2, "north")
	now := time.Unix(katUnix, 0)
	p := DefaultPolicy()
	for _, tc := range []struct {
		tech, code string
		want       error
	}{
		{"tech-042", "48844", otp.ErrMalformedCode},
		{"tech-042", "4884444", otp.ErrMalformedCode},
		{"tech-042", "48844x", otp.ErrMalformedCode},
		{"tech-042", "488445", otp.ErrNoMatch},
		{"tech-043", katCode, otp.ErrNoMatch},
		{"", katCode, ErrBadID},
	} {
		if _, err := CheckCode(sk, p, tc.tech, tc.code, now); !errors.Is(err, tc.want) {
			t.Errorf("CheckCode(%q, %q) = %v, want %v", tc.tech, tc.code, err, tc.want)
		}
	}
	// Window 1: the neighbouring steps match, two steps away does not.
	for d, ok := range map[time.Duration]bool{-30 * time.Second: true, 30 * time.Second: true, 60 * time.Second: false, -61 * time.Second: false} {
		_, err := CheckCode(sk, p, "tech-042", katCode, now.Add(d))
		if (err == nil) != ok {
			t.Errorf("offset %v: %v", d, err)
		}
	}
}

func TestPolicyRulesAndWireForm(t *testing.T) {
	p := DefaultPolicy()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := MarshalPolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"digits":6,"period_s":30,"window":1,"overlap_s":604800,"clock_tolerance_s":300,"lockout_failures":5,"delay_s":2,"lockout_s":900,"site_failures_per_hour":20}` {
		t.Fatalf("wire form %s", b)
	}
	if back, err := UnmarshalPolicy(b); err != nil || back != p {
		t.Fatalf("round trip %+v, %v", back, err)
	}
	for name, raw := range map[string]string{
		"unknown field":  `{"digits":6,"period_s":30,"window":1,"overlap_s":0,"clock_tolerance_s":0,"lockout_failures":5,"delay_s":2,"lockout_s":900,"site_failures_per_hour":20,"x":1}`,
		"4 digits":       `{"digits":4,"period_s":30,"window":1,"overlap_s":0,"clock_tolerance_s":0,"lockout_failures":5,"delay_s":2,"lockout_s":900,"site_failures_per_hour":20}`,
		"negative":       `{"digits":6,"period_s":-30,"window":1,"overlap_s":0,"clock_tolerance_s":0,"lockout_failures":5,"delay_s":2,"lockout_s":900,"site_failures_per_hour":20}`,
		"huge":           `{"digits":6,"period_s":30,"window":1,"overlap_s":9223372036,"clock_tolerance_s":0,"lockout_failures":5,"delay_s":2,"lockout_s":900,"site_failures_per_hour":20}`,
		"no budget":      `{"digits":6,"period_s":30,"window":1,"overlap_s":0,"clock_tolerance_s":0,"lockout_failures":5,"delay_s":2,"lockout_s":900,"site_failures_per_hour":0}`,
		"trailing":       `{"digits":6,"period_s":30,"window":1,"overlap_s":0,"clock_tolerance_s":0,"lockout_failures":5,"delay_s":2,"lockout_s":900,"site_failures_per_hour":20} {}`,
		"delay > lock":   `{"digits":6,"period_s":30,"window":1,"overlap_s":0,"clock_tolerance_s":0,"lockout_failures":5,"delay_s":901,"lockout_s":900,"site_failures_per_hour":20}`,
		"window too big": `{"digits":6,"period_s":30,"window":11,"overlap_s":0,"clock_tolerance_s":0,"lockout_failures":5,"delay_s":2,"lockout_s":900,"site_failures_per_hour":20}`,
	} {
		if _, err := UnmarshalPolicy([]byte(raw)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	// The signed form's duration bound (internal/sitewire) stays above
	// every duration a valid policy may hold.
	for _, d := range []time.Duration{10 * time.Minute, MaxOverlap, MaxClockTolerance, MaxLockout} {
		if int64(d/time.Second) > sitewire.MaxSeconds {
			t.Errorf("a valid policy may hold %v, beyond sitewire.MaxSeconds", d)
		}
	}

	last := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for f, want := range map[int]time.Duration{0: -1, 1: 2 * time.Second, 2: 4 * time.Second, 4: 16 * time.Second, 5: 15 * time.Minute, 9: 15 * time.Minute} {
		got := p.RetryAt(f, last)
		if want < 0 {
			if !got.IsZero() {
				t.Errorf("RetryAt(0) = %v", got)
			}
			continue
		}
		if got.Sub(last) != want {
			t.Errorf("RetryAt(%d) = +%v, want +%v", f, got.Sub(last), want)
		}
	}
	// Doubling never passes the lockout.
	q := p
	q.LockoutFailures, q.Delay = 100, 10*time.Minute
	if d := q.RetryAt(50, last).Sub(last); d != q.Lockout {
		t.Errorf("capped delay %v", d)
	}
}
