package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/outpost-auth/outpost/internal/bench/sitebench"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/spf13/cobra"
)

func (e *env) benchSiteCmd() *cobra.Command {
	var cfg sitebench.Config
	var asJSON bool
	c := &cobra.Command{
		Use:   "site [--duration 3s]",
		Short: "Site verifications per second per core next to the raw OTP engine, and package sizes",
		Long: `Measure, on one goroutine (one core), for --duration each and in the same run:
the raw OTP engine (otp.Params.Verify with a fixed seed, window ±1), seed
derivation alone, and the site's pure check (site.CheckCode: HKDF-SHA256 of
the technician's seed from the scope key, then TOTP within the window) for a
different technician each time; then the full site Verify (SQLite
transaction with fsync, replay and lockout state, signed log entry). Ratios
are against the raw engine. Then derive the seeds of scopes of --technicians
sizes, provision a package for each (argon2id at the default cost), install it
in a scratch site and check the last technician's code: the package size does
not depend on the number of technicians, only on the revocation list (last
row, --revoked technicians). The target for derive + verify is 200,000/s/core.`,
		Example: "  outpost bench site --duration 5s",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if cfg.Duration <= 0 || cfg.Duration > time.Hour || cfg.Revoked < 0 || cfg.Revoked > 50000 || len(cfg.Technicians) == 0 {
				return usageError{fmt.Errorf("--duration must be in (0, 1h], --revoked in 0..50000, and --technicians not empty")}
			}
			for _, n := range cfg.Technicians {
				if n < 1 || n > 100_000_000 {
					return usageError{fmt.Errorf("--technicians values must be 1 to 100,000,000")}
				}
			}
			cfg.KDF = keys.DefaultKDF
			rep, err := sitebench.Run(c.Context(), cfg, e.stderr)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(rep)
			}
			return e.printBenchSite(rep)
		},
	}
	c.Flags().DurationVar(&cfg.Duration, "duration", 3*time.Second, "how long to run each throughput measurement")
	c.Flags().IntSliceVar(&cfg.Technicians, "technicians", []int{10, 1_000_000}, "scope sizes whose package size to report")
	c.Flags().IntVar(&cfg.Revoked, "revoked", 1000, "revoked technicians in the last package-size row")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}

func (e *env) printBenchSite(rep sitebench.Report) error {
	fmt.Fprintf(e.stdout, "Site verification, one goroutine (per core), GOMAXPROCS=%d, %d digits, window ±%d\n\n", rep.GOMAXPROCS, rep.Digits, rep.Window)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tops/s/core\tns/op\tvs raw otp\t")
	for _, r := range rep.Rows {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.2f\t\n", r.Name, r.PerSec, r.NsPerOp, r.VsRaw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Rows {
		if r.Name == "derive + verify (site.CheckCode)" {
			verdict := "met"
			if r.PerSec < sitebench.Target {
				verdict = "NOT met"
			}
			fmt.Fprintf(e.stdout, "target >= %d derive + verify per second per core: %s (%.0f)\n", sitebench.Target, verdict, r.PerSec)
		}
	}
	fmt.Fprintln(e.stdout)
	tw = tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "technicians\trevoked\tall seeds derived in\tpackage bytes\tlast technician accepted at the site\t")
	for _, s := range rep.Sizes {
		d := time.Duration(s.DeriveSeconds * float64(time.Second)).Round(time.Microsecond)
		fmt.Fprintf(tw, "%d\t%d\t%v\t%d\t%v\t\n", s.Technicians, s.Revoked, d, s.Bytes, s.Checked)
	}
	return tw.Flush()
}
