package cli

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/outpost-auth/outpost/internal/bench/offlinebench"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/spf13/cobra"
)

func (e *env) benchOfflineCmd() *cobra.Command {
	var kf kdfFlags
	var entries, rounds int
	var full, noMemory, asJSON bool
	var child string
	c := &cobra.Command{
		Use:   "offline",
		Short: "Measure bundle generation, offline verification and bundle size against raw argon2id",
		Long: `Measure, at the default argon2id profile (or --kdf-*), side by side in the same
run, in paired rounds whose medians are reported (shared machines are noisy):
  - generation: bundle entries per second with 1 and 2 workers next to raw
    argon2id on the same parameters (targets: overhead <= 5%, 2 workers >= 1.8x one);
  - the time to issue a 100-entry HOTP bundle (measured) and a 1-day 30 s TOTP
    bundle (extrapolated from the measured rate unless --full);
  - offline verification of a wrong code (the whole window) next to the same
    number of raw argon2id calls on the same workers, in latency and in peak
    memory of a fresh process each (target: within 1.2x);
  - bundle size in bytes per entry.
Takes about a minute at the default profile on 2 cores.`,
		Example: "  outpost bench offline\n  outpost bench offline --rounds 3 --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if child != "" {
				r, err := offlinebench.RunChild(c.Context(), child)
				if err != nil {
					return err
				}
				return e.printJSON(r)
			}
			kdf, err := kf.kdf()
			if err != nil {
				return err
			}
			if entries < 1 || entries > 10000 || rounds < 1 || rounds > 50 {
				return usageError{errors.New("--entries must be 1 to 10000 and --rounds 1 to 50")}
			}
			res, err := offlinebench.Run(c.Context(), offlinebench.Config{KDF: kdf, Entries: entries, Rounds: rounds, Full: full,
				Memory: !noMemory, ChildArgs: []string{"bench", "offline", "--child"}}, e.stderr)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(res)
			}
			e.printBenchOffline(res)
			return nil
		},
	}
	kf.register(c)
	c.Flags().IntVar(&entries, "entries", 4, "entries per worker in each generation round")
	c.Flags().IntVar(&rounds, "rounds", 6, "paired rounds; medians are reported")
	c.Flags().BoolVar(&full, "full", false, "measure the 1-day TOTP bundle instead of extrapolating (minutes)")
	c.Flags().BoolVar(&noMemory, "no-memory", false, "skip the peak-memory measurement (it re-runs this binary)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	// --child runs one peak-memory measurement: the benchmark re-runs this
	// command with it so that each peak is that of a fresh process.
	c.Flags().StringVar(&child, "child", "", "internal: a peak-memory measurement (JSON)")
	_ = c.Flags().MarkHidden("child")
	return c
}

func (e *env) printBenchOffline(r *offlinebench.Result) {
	w := e.stdout
	mark := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	fmt.Fprintf(w, "Offline bundles, %s, %d CPUs, medians of %d paired rounds, load average %s before, %s after\n\n", r.KDF, r.CPUs, r.Rounds, r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(w, "Generation (%d entries/worker/round)   bundle entries/s   raw argon2id/s   overhead: wall   CPU\n", r.GenEntries)
	for _, g := range r.Generation {
		fmt.Fprintf(w, "  %d worker(s)                         %10.2f       %10.2f         %6.1f%%   %5.1f%%\n", g.Workers, g.EntriesPerS, g.RawPerS, 100*g.Overhead, 100*g.CPUOverhead)
	}
	fmt.Fprintf(w, "  work beyond the KDF per entry         %s = %.3f%% of one evaluation (measured with an 8 KiB KDF; target <= 5%%)  %s\n",
		microseconds(r.BeyondKDF), 100*r.BeyondShare, mark(r.BeyondShare <= offlinebench.MaxBeyondShare))
	fmt.Fprintf(w, "  2 workers vs 1 (target >= 1.8x)       %9.2fx       %9.2fx          %s (raw argon2id is the ceiling)\n\n", r.Speedup, r.RawSpeedup, mark(r.Speedup >= offlinebench.MinSpeedup))
	how := "extrapolated from the 100-entry rate"
	if r.TOTPDayMeas {
		how = "measured"
	}
	fmt.Fprintf(w, "Issue a 100-entry HOTP bundle             %s (measured, all cores)\n", cost.Human(r.HOTP100))
	fmt.Fprintf(w, "Issue a 1-day 30 s TOTP bundle (2,880)    %s (%s)\n\n", cost.Human(r.TOTPDay), how)
	fmt.Fprintf(w, "Offline verify, wrong code (whole window)   KDF calls   latency    raw KDF    ratio (<= 1.2)   peak RSS    raw peak   ratio (<= 1.2)\n")
	for _, v := range r.Verify {
		fmt.Fprintf(w, "  %-40s %3d   %8s   %8s   %5.2f %-6s", v.Case, v.KDFCalls, cost.Human(v.Latency), cost.Human(v.Raw), v.Ratio, mark(v.Ratio <= offlinebench.MaxVerifyRatio))
		if v.PeakKiB > 0 {
			fmt.Fprintf(w, "   %6d MiB  %6d MiB   %5.2f %s", v.PeakKiB/1024, v.RawPeak/1024, v.PeakRatio, mark(v.PeakRatio <= offlinebench.MaxVerifyRatio))
		} else {
			fmt.Fprint(w, "   (not measured)")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nBundle size                               bytes      bytes/entry\n")
	for _, b := range r.BytesPerEntry {
		fmt.Fprintf(w, "  %-40s %8d   %8.1f\n", b.Bundle, b.Bytes, b.PerEntry)
	}
}

func microseconds(sec float64) string { return strconv.FormatFloat(sec*1e6, 'f', 1, 64) + " µs" }
