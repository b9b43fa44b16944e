package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/outpost-auth/outpost/internal/bench/onboardbench"
	"github.com/outpost-auth/outpost/internal/bench/vouchbench"
	"github.com/spf13/cobra"
)

// onboardingBench is one engine's row of 'outpost bench onboarding --json':
// enrolments and handshakes, and the vouch ingest through sync.
type onboardingBench struct {
	*onboardbench.Result
	VouchIngest []vouchbench.Row `json:"vouch_ingest"`
}

func (e *env) benchOnboardingCmd() *cobra.Command {
	cfg := onboardbench.Defaults
	vcfg := vouchbench.Defaults
	var pg string
	var asJSON bool
	c := &cobra.Command{
		Use:   "onboarding [--postgres DSN]",
		Short: "Device onboarding: vouch ingest through sync, enrolments per second, mutual-TLS handshakes",
		Long: `Measure each step of device onboarding on a fresh SQLite store and, with
--postgres (or $OUTPOST_BENCH_POSTGRES_DSN), on a scratch schema of that
PostgreSQL database.

vouch ingest: --vouches vouches in uploads of --batch entries from --devices
staff devices at once, through the server's sync path with the roster taking
each vouch (label decoded again, the serial's vouches read, stored, audited);
printed next to the same number of plain log entries through the same path,
which is the sync's own cost.

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
			if err := vcfg.Check(); err != nil {
				return usageError{err}
			}
			var all []onboardingBench
			for _, dsn := range benchDSNs(pg) {
				vcfg.DSN, cfg.DSN = dsn, dsn
				rows, err := vouchbench.Run(c.Context(), vcfg, e.stderr)
				if err != nil {
					return err
				}
				r, err := onboardbench.Run(c.Context(), cfg, e.stderr)
				if err != nil {
					return err
				}
				if r.Errors > 0 {
					return fmt.Errorf("%s: %d operations failed; first: %s", r.Engine, r.Errors, r.FirstError)
				}
				all = append(all, onboardingBench{Result: r, VouchIngest: rows})
			}
			if asJSON {
				return e.printJSON(all)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "engine\tsync workload\tentries\tbatch\tdevices\twall\tentries/s\t")
			for _, a := range all {
				for _, r := range a.VouchIngest {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%.0f\t\n", r.Engine, r.Workload, r.Entries, r.Batch, r.Devices, r.Wall.Round(time.Millisecond), r.Rate)
				}
			}
			fmt.Fprintln(tw)
			fmt.Fprintln(tw, "engine\tenrolments/s\t(n, wall)\tmutual TLS handshakes/s\tserver-only TLS handshakes/s\tmutual/server-only\t")
			for _, a := range all {
				r := a.Result
				fmt.Fprintf(tw, "%s\t%.0f\t%d, %s\t%.0f\t%.0f\t%.2f\t\n", r.Engine, r.EnrolRate, r.Enrolments, r.EnrolWall.Round(time.Millisecond),
					r.MutualRate, r.ServerOnlyRate, r.MutualOverOnly)
			}
			return tw.Flush()
		},
	}
	fl := c.Flags()
	fl.StringVar(&pg, "postgres", "", "also run on this PostgreSQL DSN (else $OUTPOST_BENCH_POSTGRES_DSN)")
	fl.IntVar(&vcfg.Vouches, "vouches", vcfg.Vouches, "vouches ingested through sync")
	fl.IntVar(&vcfg.Batch, "batch", vcfg.Batch, "entries per sync upload (at most 10000)")
	fl.IntVar(&vcfg.Devices, "devices", vcfg.Devices, "staff devices uploading at once")
	fl.IntVar(&cfg.Enrolments, "enrolments", cfg.Enrolments, "first contacts to time")
	fl.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "enrolments and handshakes at once")
	fl.IntVar(&cfg.Handshakes, "handshakes", cfg.Handshakes, "handshakes of each kind")
	fl.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}
