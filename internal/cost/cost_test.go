package cost

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol*want }

// TestDesignTable checks the model against the figures of DESIGN.md's table
// ("one GPU exhausting ONE entry").
func TestDesignTable(t *testing.T) {
	m19 := KDF{Time: 2, MemoryKiB: 19 << 10, Threads: 1}
	tests := []struct {
		name   string
		digits int
		kdf    KDF
		fast   bool // H100 instead of the reference
		want   float64
		human  string
	}{
		{"4090 64MiB 6 digits ~10 min", 6, Default, false, 1e6 / 1700, "10 min"},
		{"4090 64MiB 8 digits ~17 h", 8, Default, false, 1e8 / 1700, "16.3 h"},
		{"H100 19MiB 6 digits ~36 s", 6, m19, true, 1e6 / 28000, "36 s"},
		{"H100 19MiB 8 digits ~1 h", 8, m19, true, 1e8 / 28000, "60 min"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Estimate(tc.digits, 0, 1, tc.kdf)
			a := r.Reference
			if tc.fast {
				a = r.Fastest
			}
			if !near(a.PerEntry, tc.want, 1e-9) {
				t.Fatalf("per entry %v s, want %v s", a.PerEntry, tc.want)
			}
			if h := Human(a.PerEntry); h != tc.human {
				t.Fatalf("Human = %q, want %q", h, tc.human)
			}
		})
	}
}

func TestEstimate(t *testing.T) {
	r := Estimate(6, 4, 2880, KDF{})
	if r.KDF != Default {
		t.Fatalf("zero KDF should mean Default, got %v", r.KDF)
	}
	if r.CodeSpace != 1e10 || r.Entries != 2880 || !near(r.Margin, 1e10/2880, 1e-12) {
		t.Fatalf("code space %v entries %d margin %v", r.CodeSpace, r.Entries, r.Margin)
	}
	if days := r.Reference.PerEntry / 86400; days < 67 || days > 69 {
		t.Fatalf("6+4 digits at the default profile: %v days per entry, want ~68", days)
	}
	// Whole list: first entry at full cost, the rest at 10^6 each once the PIN is known.
	want := 1e10/1700 + 2879*1e6/1700
	if !near(r.Reference.WholeList, want, 1e-9) {
		t.Fatalf("whole list %v, want %v", r.Reference.WholeList, want)
	}
	if !near(r.IssuerCPU, 2880*0.210, 1e-9) {
		t.Fatalf("issuer CPU %v s, want %v", r.IssuerCPU, 2880*0.210)
	}
	// The H100 is faster than the reference at the same KDF.
	if r.Fastest.Rate <= r.Reference.Rate {
		t.Fatalf("H100 rate %v should exceed the 4090's %v", r.Fastest.Rate, r.Reference.Rate)
	}
	// Scaling: doubling memory halves the rate.
	r2 := Estimate(6, 4, 2880, KDF{Time: 3, MemoryKiB: 128 << 10, Threads: 1})
	if !near(r2.Reference.Rate, r.Reference.Rate/2, 1e-12) {
		t.Fatalf("rate at 128 MiB %v, want half of %v", r2.Reference.Rate, r.Reference.Rate)
	}
	// Clamping.
	if z := Estimate(-1, -1, 0, KDF{}); z.Entries != 1 || z.Digits != 0 || z.CodeSpace != 1 {
		t.Fatalf("clamping failed: %+v", z)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		digits   int
		pin      int
		entries  int
		kdf      KDF
		override bool
		ok       bool
		lifts    []string // substrings the error must contain
	}{
		{"6+4 PIN 1 day TOTP passes", 6, 4, 2880, Default, false, true, nil},
		{"6+4 PIN 100 HOTP passes", 6, 4, 100, Default, false, true, nil},
		{"6 digits no PIN fails", 6, 0, 100, Default, false, false,
			[]string{"require a PIN of 4 digits", "use 10-digit codes", "override"}},
		{"6 digits overridden", 6, 0, 100, Default, true, true, nil},
		{"8 digits no PIN fails, PIN of 2 digits lifts", 8, 0, 100, Default, false, false,
			[]string{"require a PIN of 2 digits", "use 10-digit codes"}},
		{"6+4 PIN one week fails the margin", 6, 4, 20160, Default, false, false,
			[]string{"at most 10000 entries", "lengthen the PIN to 5 digits"}},
		{"8+2 PIN at 19MiB fails per entry, costlier KDF lifts", 8, 2, 100, KDF{Time: 2, MemoryKiB: 19 << 10, Threads: 1}, false, false,
			[]string{"a costlier KDF such as argon2id m=", "lengthen the PIN to 3 digits"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Estimate(tc.digits, tc.pin, tc.entries, tc.kdf).Check(DefaultFloor, tc.override)
			if tc.ok {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrBelowFloor) {
				t.Fatalf("got %v, want ErrBelowFloor", err)
			}
			for _, s := range tc.lifts {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	// A custom floor.
	if err := Estimate(6, 0, 1, Default).Check(Floor{PerEntry: 5 * time.Minute}, false); err != nil {
		t.Fatalf("10 min per entry should clear a 5 min floor: %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		kdf KDF
		ok  bool
	}{
		{Default, true},
		{KDF{Time: 1, MemoryKiB: 8, Threads: 1}, true},
		{KDF{Time: 0, MemoryKiB: 64, Threads: 1}, false},
		{KDF{Time: 17, MemoryKiB: 64, Threads: 1}, false},
		{KDF{Time: 1, MemoryKiB: 7, Threads: 1}, false},
		{KDF{Time: 1, MemoryKiB: 16, Threads: 4}, false},
		{KDF{Time: 1, MemoryKiB: MaxMemoryKiB + 1, Threads: 1}, false},
		{KDF{Time: 1, MemoryKiB: 64, Threads: 0}, false},
		{KDF{Time: 1, MemoryKiB: 1024, Threads: 17}, false},
	}
	for _, tc := range tests {
		err := tc.kdf.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: Validate = %v, want ok=%v", tc.kdf, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidKDF) {
			t.Errorf("%+v: error %v does not wrap ErrInvalidKDF", tc.kdf, err)
		}
	}
}

func TestHuman(t *testing.T) {
	for sec, want := range map[float64]string{0.05: "50 ms", 36: "36 s", 600: "10 min", 7200: "2.0 h",
		68 * 86400: "68 days", 3 * 365.25 * 86400: "3.0 years", math.Inf(1): "forever"} {
		if got := Human(sec); got != want {
			t.Errorf("Human(%v) = %q, want %q", sec, got, want)
		}
	}
}

// TestDeliveryCode: the delivery floor against the figures the hash mode's
// doc comment (internal/codecheck) states.
func TestDeliveryCode(t *testing.T) {
	m256t8 := KDF{Time: 8, MemoryKiB: 256 << 10, Threads: 1}
	tests := []struct {
		name   string
		digits int
		kdf    KDF
		ok     bool
		human  string // reference GPU, all codes
	}{
		{"8 digits at the bundle default falls in hours", 8, Default, false, "16.3 h"},
		{"8 digits at m=256MiB t=8 clears a week", 8, m256t8, true, "7 days"},
		{"6 digits at m=256MiB t=8 falls in hours", 6, m256t8, false, "105 min"},
		{"10 digits at the bundle default clears", 10, Default, true, "68 days"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := DeliveryCode(tc.digits, tc.kdf)
			if r.CodeSpace != math.Pow(10, float64(tc.digits)) || r.Entries != 1 {
				t.Fatalf("code space %v entries %d", r.CodeSpace, r.Entries)
			}
			if h := Human(r.Reference.PerEntry); h != tc.human {
				t.Fatalf("reference %s, want %s", h, tc.human)
			}
			err := r.CheckCode(DeliveryFloor)
			if tc.ok != (err == nil) {
				t.Fatalf("CheckCode = %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrBelowFloor) || !strings.Contains(err.Error(), "use longer codes") ||
					!strings.Contains(err.Error(), "fingerprint/token mode") {
					t.Fatalf("error %q does not say what to do", err)
				}
			}
		})
	}
	// The lift it names clears the floor.
	err := DeliveryCode(8, Default).CheckCode(DeliveryFloor)
	if !strings.Contains(err.Error(), "10-digit codes: 68 days") {
		t.Fatalf("lift not named: %v", err)
	}
}
