package cli

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/spf13/cobra"
)

func (e *env) offlineCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "offline",
		Short: "Plan offline bundles: what a copied hash list costs an attacker",
	}
	c.AddCommand(e.offlineCostCmd())
	return c
}

// kdfFlags are the argon2id flags shared by 'offline cost' and 'bench offline'.
type kdfFlags struct {
	memory  string
	time    uint32
	threads uint8
}

func (k *kdfFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&k.memory, "kdf-memory", "64MiB", "argon2id memory (e.g. 64MiB, 19MiB, 65536KiB, 1GiB)")
	c.Flags().Uint32Var(&k.time, "kdf-time", cost.Default.Time, "argon2id passes")
	c.Flags().Uint8Var(&k.threads, "kdf-threads", cost.Default.Threads, "argon2id lanes")
}

func (k kdfFlags) kdf() (cost.KDF, error) {
	m, err := parseMemoryKiB(k.memory)
	if err != nil {
		return cost.KDF{}, usageError{fmt.Errorf("--kdf-memory: %w", err)}
	}
	kdf := cost.KDF{Time: k.time, MemoryKiB: m, Threads: k.threads}
	if err := kdf.Validate(); err != nil {
		return kdf, usageError{err}
	}
	return kdf, nil
}

// parseMemoryKiB reads "64MiB", "19 MiB", "65536KiB", "1GiB" or a bare number of KiB.
func parseMemoryKiB(s string) (uint32, error) {
	t := strings.TrimSpace(s)
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"GiB", 1 << 20}, {"MiB", 1 << 10}, {"KiB", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(t, 10, 32)
	if err != nil || n == 0 || n*mult > math.MaxUint32 {
		return 0, fmt.Errorf("%q is not a memory size (use e.g. 64MiB or 65536KiB)", s)
	}
	return uint32(n * mult), nil
}

func (e *env) offlineCostCmd() *cobra.Command {
	var digits, pinDigits, entries int
	var period time.Duration
	var span time.Duration
	var kf kdfFlags
	var floorDays, minMargin float64
	var check, asJSON bool
	c := &cobra.Command{
		Use:   "cost --digits 6 [--pin-digits 4] --entries N",
		Short: "Print what a bundle costs its issuer and an attacker who copies it",
		Long: `Estimate, for a bundle of --entries entries (or --duration of TOTP steps of
--period), the code space, the issuer's CPU time, and how long one reference
GPU (RTX 4090) and the fastest known one (H100, estimated) need to exhaust
one entry and the whole list, at the given argon2id cost; and whether it
clears the floor the server enforces (default: 30 days per entry on the
reference GPU, code space at least a million times the entries). With
--check the exit code is 3 when the bundle is below the floor.
The rates and where they come from: docs/offline.md.`,
		Example: "  outpost offline cost --digits 6 --pin-digits 4 --duration 24h\n  outpost offline cost --digits 8 --entries 100 --kdf-memory 19MiB --kdf-time 2 --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			kdf, err := kf.kdf()
			if err != nil {
				return err
			}
			if digits < 6 || digits > 10 || pinDigits < 0 || pinDigits > 16 {
				return usageError{errors.New("--digits must be 6 to 10 and --pin-digits 0 to 16")}
			}
			switch {
			case span > 0 && entries > 0:
				return usageError{errors.New("give --entries or --duration, not both")}
			case span > 0:
				if period < time.Second {
					return usageError{errors.New("--period must be at least 1s")}
				}
				entries = int(math.Ceil(float64(span) / float64(period)))
			}
			if entries < 1 || entries > 1<<24 {
				return usageError{errors.New("--entries (or --duration) must give 1 to 16,777,216 entries")}
			}
			floor := cost.Floor{PerEntry: time.Duration(floorDays * 24 * float64(time.Hour)), MinMargin: minMargin}
			r := cost.Estimate(digits, pinDigits, entries, kdf)
			verdict := r.Check(floor, false)
			if asJSON {
				out := map[string]any{"report": r, "floor": map[string]any{"per_entry_seconds": floor.PerEntry.Seconds(), "min_margin": floor.MinMargin},
					"meets_floor": verdict == nil}
				if verdict != nil {
					out["below_floor"] = verdict.Error()
				}
				if err := e.printJSON(out); err != nil {
					return err
				}
			} else {
				e.printCost(r, floor, verdict)
			}
			if check && verdict != nil {
				return withCode(ExitRefused, verdict)
			}
			return nil
		},
	}
	c.Flags().IntVar(&digits, "digits", 6, "code digits (6-10)")
	c.Flags().IntVar(&pinDigits, "pin-digits", 0, "PIN digits mixed into every entry (0 = no PIN)")
	c.Flags().IntVar(&entries, "entries", 0, "entries in the bundle (HOTP counters or TOTP steps)")
	c.Flags().DurationVar(&span, "duration", 0, "instead of --entries: a TOTP period of this length")
	c.Flags().DurationVar(&period, "period", 30*time.Second, "TOTP step, with --duration")
	kf.register(c)
	c.Flags().Float64Var(&floorDays, "floor-days", cost.DefaultFloor.PerEntry.Hours()/24, "floor: reference-GPU days per entry")
	c.Flags().Float64Var(&minMargin, "min-margin", cost.DefaultFloor.MinMargin, "floor: least code space ÷ entries (0 = no limit)")
	c.Flags().BoolVar(&check, "check", false, "exit 3 when the bundle is below the floor")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}

func (e *env) printCost(r cost.Report, f cost.Floor, verdict error) {
	w := e.stdout
	pin := "no PIN"
	if r.PINDigits > 0 {
		pin = fmt.Sprintf("%d-digit PIN", r.PINDigits)
	}
	fmt.Fprintf(w, "Offline bundle: %d entries of %d-digit codes, %s, %s\n", r.Entries, r.Digits, pin, r.KDF)
	fmt.Fprintf(w, "  code space          10^%d = %s guesses per entry\n", r.Digits+r.PINDigits, thousands(r.CodeSpace))
	fmt.Fprintf(w, "  margin              %s (code space ÷ entries: the attacker's work per entry in units of the issuer's whole bundle)\n", thousands(r.Margin))
	fmt.Fprintf(w, "  issuer CPU          %s on one core (%s per entry)\n", cost.Human(r.IssuerCPU), cost.Human(cost.IssuerSeconds(r.KDF)))
	for _, a := range []struct {
		label string
		a     cost.Attack
	}{{"reference GPU", r.Reference}, {"fastest GPU", r.Fastest}} {
		fmt.Fprintf(w, "  %-19s %s, %s guesses/s: one entry in %s, whole list in %s\n", a.label, a.a.GPU, thousands(a.a.Rate), cost.Human(a.a.PerEntry), cost.Human(a.a.WholeList))
	}
	fmt.Fprintf(w, "  floor               %s per entry on the reference GPU, margin %s: ", cost.Human(f.PerEntry.Seconds()), thousands(f.MinMargin))
	if verdict == nil {
		fmt.Fprintln(w, "OK")
		return
	}
	fmt.Fprintf(w, "BELOW\n  %v\n", verdict)
}

// thousands prints a number with thousands separators, or in e-notation when huge.
func thousands(x float64) string {
	if x >= 1e15 {
		return strconv.FormatFloat(x, 'e', 2, 64)
	}
	if x < 100 {
		return strconv.FormatFloat(x, 'f', -1, 64)[:min(len(strconv.FormatFloat(x, 'f', -1, 64)), 6)]
	}
	s := strconv.FormatFloat(math.Round(x), 'f', 0, 64)
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	return b.String()
}
