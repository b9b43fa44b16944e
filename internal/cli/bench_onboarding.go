package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/outpost-auth/outpost/internal/bench/onboardbench"
	"github.com/spf13/cobra"
)

func (e *env) benchOnboardingCmd() *cobra.Command {
	cfg := onboardbench.Defaults
	var pg string
	var asJSON bool
	c := &cobra.Command{
		Use:   "onboarding [--postgres DSN]",
		Short: "Device enrolments per second, and mutual-TLS handshakes beside server-only TLS",
		Long: `Measure device onboarding on a fresh SQLite store and, with --postgres (or
$OUTPOST_BENCH_POSTGRES_DSN), on a scratch schema of that PostgreSQL database.

enrolments: --enrolments first contacts through the onboarding service
(challenge stored, proof signed over the nonce and an exporter value, CSR
checked, nonce consumed, roster asked, certificate signed and stored with its
audit entry), --concurrency at a time.

handshakes: --handshakes new TLS 1.3 connections to the device listener over
loopback, each with one small request, with a device certificate (checked,
with the device's status read from the store, at every handshake) and without
one, alternating in blocks of 16 so that both see the same load: their ratio
is what mutual TLS (and its per-handshake status read) costs.`,
		Example: "  outpost bench onboarding --postgres 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if cfg.Enrolments < 1 || cfg.Concurrency < 1 || cfg.Handshakes < 1 {
				return usageError{fmt.Errorf("--enrolments, --concurrency and --handshakes are at least 1")}
			}
			var all []*onboardbench.Result
			for _, dsn := range benchDSNs(pg) {
				cfg.DSN = dsn
				r, err := onboardbench.Run(c.Context(), cfg, e.stderr)
				if err != nil {
					return err
				}
				if r.Errors > 0 {
					return fmt.Errorf("%s: %d operations failed; first: %s", r.Engine, r.Errors, r.FirstError)
				}
				all = append(all, r)
			}
			if asJSON {
				return e.printJSON(all)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "engine\tenrolments/s\t(n, wall)\tmutual TLS handshakes/s\tserver-only TLS handshakes/s\tmutual/server-only\t")
			for _, r := range all {
				fmt.Fprintf(tw, "%s\t%.0f\t%d, %s\t%.0f\t%.0f\t%.2f\t\n", r.Engine, r.EnrolRate, r.Enrolments, r.EnrolWall.Round(time.Millisecond),
					r.MutualRate, r.ServerOnlyRate, r.MutualOverOnly)
			}
			return tw.Flush()
		},
	}
	fl := c.Flags()
	fl.StringVar(&pg, "postgres", "", "also run on this PostgreSQL DSN (else $OUTPOST_BENCH_POSTGRES_DSN)")
	fl.IntVar(&cfg.Enrolments, "enrolments", cfg.Enrolments, "first contacts to time")
	fl.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "enrolments and handshakes at once")
	fl.IntVar(&cfg.Handshakes, "handshakes", cfg.Handshakes, "handshakes of each kind")
	fl.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}
