// Package cost is Outpost's one model of what an offline hash list costs its
// issuer and an attacker who copies it, and the floor below which the server
// refuses to issue one.
//
// An offline bundle holds one slow hash (argon2id) per code it may accept. A
// thief who copies it does not need the device: they try every code (and PIN)
// against an entry on their own hardware. So for one entry
//
//	attacker time = code space ÷ guesses per second,   code space = 10^(digits + PIN digits)
//	issuer time   = entries × one argon2id evaluation
//
// and their ratio, code space ÷ entries, is the real security margin
// ([Report.Margin]): it does not depend on hardware, because a faster GPU
// speeds up both sides alike. Call [Estimate] for the figures and
// [Report.Check] against a [Floor] ([DefaultFloor]) before issuing:
//
//	r := cost.Estimate(6, 4, 100, cost.Default)
//	if err := r.Check(cost.DefaultFloor, false); err != nil { … } // errors.Is(err, cost.ErrBelowFloor)
//
// # Reference rates
//
// Attacker rates come from the project's design brief (DESIGN.md, "The
// numbers that shape the hash-list mode"), which takes them from published
// hashcat benchmarks and scales argon2id by memory bandwidth:
//
//   - RTX 4090: ~1,700 argon2id guesses/s at m=64 MiB, t=3, p=1 — the
//     reference GPU of the floor: a consumer card anyone can buy or rent;
//   - H100 SXM: ~28,000 guesses/s at m=19 MiB, t=2, p=1 (an estimate) —
//     reported beside it as the fastest card we have a figure for.
//
// argon2id is memory-hard: a GPU's rate is bounded by memory traffic, which
// is proportional to memory × passes, so a rate measured at (m0, t0) is scaled
// to (m, t) by (m0·t0)/(m·t). The lanes parameter p does not change the total
// work, so it does not enter the model. The issuer's figure is the brief's
// measurement of golang.org/x/crypto/argon2 on this project's 2-core machines
// (~210 ms per core at 64 MiB, t=3), scaled the same way.
//
// These are estimates within a factor of a few, not guarantees: a pool of
// GPUs divides every attacker figure by its size. The floor is a floor.
package cost

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// KDF is an argon2id cost: passes, memory in KiB, and lanes.
type KDF struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// Default is the argon2id profile bundles use unless the issuer chooses
// another: RFC 9106's second recommended option, m=64 MiB, t=3, with one lane
// (generation runs one entry per core instead). It is the cheapest profile in
// DESIGN.md's table under which the usual PIN + OTP bundle — 6-digit codes
// and a 4-digit PIN — clears [DefaultFloor]: one RTX 4090 needs ~68 days per
// entry, where m=19 MiB, t=2 would give ~13 days. It costs the issuer ~210 ms
// per entry per core, so a 100-entry HOTP bundle takes ~11 s on two cores and a
// 1-day TOTP bundle at 30 s steps (2,880 entries) ~5 minutes.
var Default = KDF{Time: 3, MemoryKiB: 64 << 10, Threads: 1}

// Limits a KDF must respect: argon2id's own minimum (8 KiB per lane), and an
// upper bound so that a bundle can never make a field device spend more than
// 1 GiB of memory or 16 passes on one evaluation.
const (
	MaxMemoryKiB = 1 << 20
	MaxTime      = 16
	MaxThreads   = 16
)

// ErrInvalidKDF is returned by [KDF.Validate].
var ErrInvalidKDF = errors.New("cost: invalid argon2id parameters")

// IsZero reports whether k is the zero value (which callers read as [Default]).
func (k KDF) IsZero() bool { return k == KDF{} }

// OrDefault returns k, or [Default] when k is the zero value.
func (k KDF) OrDefault() KDF {
	if k.IsZero() {
		return Default
	}
	return k
}

// Validate checks that k is a usable argon2id cost within the limits above.
// It says nothing about strength: that is [Report.Check]'s job.
func (k KDF) Validate() error {
	switch {
	case k.Time < 1 || k.Time > MaxTime:
		return fmt.Errorf("%w: time %d (use 1 to %d)", ErrInvalidKDF, k.Time, MaxTime)
	case k.Threads < 1 || k.Threads > MaxThreads:
		return fmt.Errorf("%w: threads %d (use 1 to %d)", ErrInvalidKDF, k.Threads, MaxThreads)
	case k.MemoryKiB < 8*uint32(k.Threads) || k.MemoryKiB > MaxMemoryKiB:
		return fmt.Errorf("%w: memory %d KiB (use %d KiB to %d KiB)", ErrInvalidKDF, k.MemoryKiB, 8*uint32(k.Threads), MaxMemoryKiB)
	}
	return nil
}

// String renders k as "argon2id m=64MiB t=3 p=1".
func (k KDF) String() string {
	m := fmt.Sprintf("%dKiB", k.MemoryKiB)
	if k.MemoryKiB%1024 == 0 {
		m = fmt.Sprintf("%dMiB", k.MemoryKiB/1024)
	}
	return fmt.Sprintf("argon2id m=%s t=%d p=%d", m, k.Time, k.Threads)
}

// work is the memory traffic of one evaluation, in KiB × passes.
func (k KDF) work() float64 { return float64(k.MemoryKiB) * float64(k.Time) }

// GPU is a published attacker rate: guesses per second at one argon2id cost.
type GPU struct {
	Name   string  `json:"name"`
	Rate   float64 `json:"guesses_per_second_at_reference_kdf"`
	At     KDF     `json:"reference_kdf"`
	Source string  `json:"source"`
}

// RateFor scales g's rate to k by memory × passes.
func (g GPU) RateFor(k KDF) float64 { return g.Rate * g.At.work() / k.work() }

// The attacker rates of the model (see the package comment).
var (
	// RTX4090 is the reference GPU of the floor.
	RTX4090 = GPU{Name: "RTX 4090", Rate: 1700, At: KDF{Time: 3, MemoryKiB: 64 << 10, Threads: 1},
		Source: "DESIGN.md: hashcat argon2id benchmark, ~1.7k guesses/s at m=64MiB t=3 p=1"}
	// H100 is the fastest GPU the model has a figure for.
	H100 = GPU{Name: "H100 SXM (estimate)", Rate: 28000, At: KDF{Time: 2, MemoryKiB: 19 << 10, Threads: 1},
		Source: "DESIGN.md: estimated ~28k guesses/s at m=19MiB t=2 p=1, scaled by memory bandwidth"}
)

// Issuer cost reference: golang.org/x/crypto/argon2 on one core of the
// project's 2-core machine (DESIGN.md), scaled by memory × passes.
var issuerRef = struct {
	seconds float64
	at      KDF
}{0.210, Default}

// IssuerSeconds estimates one argon2id evaluation at k on one core.
func IssuerSeconds(k KDF) float64 { return issuerRef.seconds * k.work() / issuerRef.at.work() }

// Attack is one GPU's time to exhaust a bundle.
type Attack struct {
	GPU string `json:"gpu"`
	// Rate is guesses per second at the bundle's KDF.
	Rate float64 `json:"guesses_per_second"`
	// PerEntry is the time to try the whole code space against one entry:
	// a copied bundle yields its first code (and the release key, and the
	// PIN) after at most this long.
	PerEntry float64 `json:"per_entry_seconds"`
	// WholeList is the time to recover every entry. The PIN is the same in
	// every entry, so once the first entry falls the rest cost only
	// 10^digits guesses each.
	WholeList float64 `json:"whole_list_seconds"`
}

// Report is the cost of one bundle for its issuer and for an attacker.
type Report struct {
	Digits    int `json:"digits"`
	PINDigits int `json:"pin_digits"`
	// CodeSpace is 10^(Digits + PINDigits): guesses to exhaust one entry.
	CodeSpace float64 `json:"code_space"`
	Entries   int     `json:"entries"`
	KDF       KDF     `json:"kdf"`
	// IssuerCPU is the single-core CPU time to compute every entry, in seconds
	// (divide by the cores used for wall time).
	IssuerCPU float64 `json:"issuer_cpu_seconds"`
	// Reference is the reference GPU's attack; the floor is checked against it.
	Reference Attack `json:"reference"`
	// Fastest is the same attack on the fastest GPU the model knows.
	Fastest Attack `json:"fastest"`
	// Margin is CodeSpace ÷ Entries: how many times the issuer's whole
	// effort an attacker spends per entry.
	Margin float64 `json:"margin"`
}

// Estimate computes the report for a bundle of entries entries of
// digits-digit codes with a pinDigits-digit PIN (0 for none) mixed in, under
// kdf (the zero value means [Default]). It never fails: out-of-range inputs
// are clamped (at least 1 entry, no negative digits).
func Estimate(digits, pinDigits, entries int, kdf KDF) Report {
	kdf = kdf.OrDefault()
	if kdf.work() == 0 {
		kdf = Default
	}
	digits, pinDigits, entries = max(digits, 0), max(pinDigits, 0), max(entries, 1)
	r := Report{
		Digits: digits, PINDigits: pinDigits, Entries: entries, KDF: kdf,
		CodeSpace: math.Pow(10, float64(digits+pinDigits)),
		IssuerCPU: float64(entries) * IssuerSeconds(kdf),
	}
	r.Margin = r.CodeSpace / float64(entries)
	r.Reference = r.attack(RTX4090)
	r.Fastest = r.attack(H100)
	return r
}

func (r Report) attack(g GPU) Attack {
	rate := g.RateFor(r.KDF)
	a := Attack{GPU: g.Name, Rate: rate, PerEntry: r.CodeSpace / rate}
	a.WholeList = a.PerEntry + float64(r.Entries-1)*math.Pow(10, float64(r.Digits))/rate
	return a
}

// Floor is the least a bundle must cost an attacker.
type Floor struct {
	// PerEntry: the reference GPU must need at least this long to exhaust one entry.
	PerEntry time.Duration
	// MinMargin: code space ÷ entries must be at least this (0 disables the
	// check). Unlike PerEntry it holds however fast GPUs become, because the
	// issuer's hardware speeds up with the attacker's.
	MinMargin float64
}

// DefaultFloor: one reference GPU needs at least 30 days per entry, and a
// bundle holds at most one millionth of its code space (so 6-digit codes with
// a 4-digit PIN allow up to 10,000 entries, three and a half days of 30 s TOTP).
var DefaultFloor = Floor{PerEntry: 30 * 24 * time.Hour, MinMargin: 1e6}

// ErrBelowFloor is returned by [Report.Check] for a bundle too cheap to attack.
var ErrBelowFloor = errors.New("offline bundle is below the attack-cost floor")

// Meets reports whether r clears f.
func (r Report) Meets(f Floor) bool {
	return r.Reference.PerEntry >= f.PerEntry.Seconds() && r.Margin >= f.MinMargin
}

// Check returns nil when r clears f, or when override is set (an explicit,
// audited administrator decision: callers record it). Otherwise it returns an
// error wrapping [ErrBelowFloor] that names what would lift the bundle over
// the floor: a PIN or a longer one, longer codes, fewer entries, a costlier KDF.
func (r Report) Check(f Floor, override bool) error {
	if override || r.Meets(f) {
		return nil
	}
	var why []string
	if r.Reference.PerEntry < f.PerEntry.Seconds() {
		why = append(why, fmt.Sprintf("one %s exhausts an entry in %s (floor %s)", r.Reference.GPU, Human(r.Reference.PerEntry), Human(f.PerEntry.Seconds())))
	}
	if r.Margin < f.MinMargin {
		why = append(why, fmt.Sprintf("code space ÷ entries is %.0f with %d entries (floor %.0f)", r.Margin, r.Entries, f.MinMargin))
	}
	return fmt.Errorf("%w: %s; to lift it: %s", ErrBelowFloor, strings.Join(why, ", "), strings.Join(r.lifts(f), "; or "))
}

// lifts lists the smallest single changes that clear f.
func (r Report) lifts(f Floor) []string {
	var out []string
	for p := r.PINDigits + 1; p <= 12; p++ {
		if x := Estimate(r.Digits, p, r.Entries, r.KDF); x.Meets(f) {
			verb := "require a PIN of"
			if r.PINDigits > 0 {
				verb = "lengthen the PIN to"
			}
			out = append(out, fmt.Sprintf("%s %d digits (%s per entry)", verb, p, Human(x.Reference.PerEntry)))
			break
		}
	}
	for d := r.Digits + 1; d <= 10; d++ {
		if x := Estimate(d, r.PINDigits, r.Entries, r.KDF); x.Meets(f) {
			out = append(out, fmt.Sprintf("use %d-digit codes (%s per entry)", d, Human(x.Reference.PerEntry)))
			break
		}
	}
	perEntryOK := r.Reference.PerEntry >= f.PerEntry.Seconds()
	if r.Margin < f.MinMargin && perEntryOK {
		if n := int(r.CodeSpace / f.MinMargin); n >= 1 {
			out = append(out, fmt.Sprintf("issue at most %d entries (a shorter period or event window)", n))
		}
	}
	if !perEntryOK && r.Margin >= f.MinMargin {
		factor := f.PerEntry.Seconds() / r.Reference.PerEntry
		mem := math.Ceil(float64(r.KDF.MemoryKiB) * factor / 1024)
		if mem*1024 <= MaxMemoryKiB {
			k := r.KDF
			k.MemoryKiB = uint32(mem) * 1024
			out = append(out, fmt.Sprintf("a costlier KDF such as %s (~%s per entry to issue)", k, Human(IssuerSeconds(k))))
		}
	}
	out = append(out, "an explicit administrator override (audited)")
	return out
}

// Human renders a duration in seconds the way the reports print it:
// "36 s", "10 min", "17 h", "68 days", "3.2 years".
func Human(sec float64) string {
	switch {
	case math.IsInf(sec, 0) || math.IsNaN(sec):
		return "forever"
	case sec < 1:
		return fmt.Sprintf("%.0f ms", sec*1000)
	case sec < 120:
		return fmt.Sprintf("%.0f s", sec)
	case sec < 2*3600:
		return fmt.Sprintf("%.0f min", sec/60)
	case sec < 3*86400:
		return fmt.Sprintf("%.1f h", sec/3600)
	case sec < 2*365.25*86400:
		return fmt.Sprintf("%.0f days", sec/86400)
	case sec < 1e6*365.25*86400:
		return fmt.Sprintf("%.1f years", sec/(365.25*86400))
	}
	return fmt.Sprintf("%.2g years", sec/(365.25*86400))
}

// # Delivery codes
//
// A delivery code checked offline in hash mode (internal/codecheck) is one
// entry of one code: the device of the courier it is assigned to holds a
// salted argon2id hash of it, and the attacker is that courier, who copies
// the hash off their own phone and tries every code on a GPU. The check
// digit adds nothing, so the code space is 10^digits of the random part.
// A code is worth cracking only while its delivery is live (hours to days;
// at most 30), so the floor is a time on the reference GPU rather than a
// margin over the issuer's effort.

// DeliveryFloor is the least a delivery code checked by a slow hash must
// cost its dishonest courier: one reference GPU (RTX 4090) needs a week to
// try every code. It outlasts the usual life of a delivery (a manifest
// reaches the device a day or two before the door) several times over; a
// pool of n GPUs divides it by n, which is why the hash mode is the weakest
// of the three and the docs say so.
var DeliveryFloor = Floor{PerEntry: 7 * 24 * time.Hour}

// DeliveryCode is [Estimate] for one delivery code of digits random digits
// (check digit excluded) hashed under kdf: Reference.PerEntry is what the
// courier holding the device pays on the reference GPU to try all of them,
// Fastest.PerEntry the same on the fastest GPU the model knows, and
// IssuerCPU one evaluation on one core (what the server pays to make the
// hash and, roughly, a phone to check one entered code).
func DeliveryCode(digits int, kdf KDF) Report { return Estimate(digits, 0, 1, kdf) }

// CheckCode returns nil when r, a [DeliveryCode] report, clears f (only
// f.PerEntry applies), or an error wrapping [ErrBelowFloor] that states the
// figures and says what to do: longer codes or another mode.
func (r Report) CheckCode(f Floor) error {
	if r.Reference.PerEntry >= f.PerEntry.Seconds() {
		return nil
	}
	lift := ""
	for d := r.Digits + 1; d <= 16; d++ {
		if x := DeliveryCode(d, r.KDF); x.Reference.PerEntry >= f.PerEntry.Seconds() {
			lift = fmt.Sprintf(" (%d-digit codes: %s)", d, Human(x.Reference.PerEntry))
			break
		}
	}
	return fmt.Errorf("%w: one %s tries all 10^%d delivery codes under %s in %s (floor %s): use longer codes%s or the fingerprint/token mode",
		ErrBelowFloor, r.Reference.GPU, r.Digits, r.KDF, Human(r.Reference.PerEntry), Human(f.PerEntry.Seconds()), lift)
}
