package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/outpost-auth/outpost/internal/bench/deliverybench"
	"github.com/outpost-auth/outpost/internal/codecheck"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/spf13/cobra"
)

func (e *env) benchDeliveriesCmd() *cobra.Command {
	cfg := deliverybench.Defaults
	var pg string
	var asJSON bool
	c := &cobra.Command{
		Use:   "deliveries [--postgres DSN]",
		Short: "Courier deliveries: mode data beside raw argon2id, offline checks, token verifies, receipts ingested",
		Long: `Measure the courier's side of deliveries (docs/deliveries.md) on a fresh SQLite
store and, with --postgres (or $OUTPOST_BENCH_POSTGRES_DSN), on a scratch
schema of that PostgreSQL database:

issue: the mode data of --deliveries deliveries in hash and in fingerprint
mode (what create and reassign compute), on all cores, beside raw argon2id
at the same parameters on the same cores; and the time to build, record and
sign one device's route manifest of that many deliveries.
verify: the latency (p50 of --checks) of an offline check at the door per
mode, on a field store (attempt counted, log entry, receipt signed); token
verifies per second on one core.
ingest: --receipts receipts from --devices devices turned into "delivered"
through the server's sync over loopback HTTP, per second.

The default hash mode costs about 2 s of a core per delivery: 200 of them
take minutes; --deliveries 20 gives the rate sooner.`,
		Example: "  outpost bench deliveries --deliveries 20 --postgres 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if cfg.Deliveries < 1 || cfg.Deliveries > courierproto.MaxDeliveries || cfg.Checks < 1 || cfg.Devices < 1 ||
				cfg.Receipts < cfg.Devices || cfg.Receipts/cfg.Devices > courierproto.MaxReceipts {
				return usageError{fmt.Errorf("--deliveries 1 to %d, --checks and --devices at least 1, --receipts at least --devices and at most %d per device",
					courierproto.MaxDeliveries, courierproto.MaxReceipts)}
			}
			var all []deliverybench.Result
			for _, dsn := range benchDSNs(pg) {
				cfg.DSN = dsn
				r, err := deliverybench.Run(c.Context(), cfg, e.stderr)
				if err != nil {
					return err
				}
				if r.IngestError != "" {
					return fmt.Errorf("%s: ingest: %s", r.Engine, r.IngestError)
				}
				all = append(all, r)
				cfg.SkipIssue = true // the issue and verify figures do not depend on the engine
			}
			if asJSON {
				return e.printJSON(all)
			}
			r0 := all[0]
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(tw, "mode\tparameters\t%d deliveries\traw argon2id\tratio\toffline check p50\t\n", r0.Deliveries)
			fmt.Fprintf(tw, "hash\t%s\t%s\t%s\t%.2f\t%s\t\n", r0.HashParams, r0.HashIssue.Round(time.Millisecond), r0.HashRaw.Round(time.Millisecond),
				r0.HashIssue.Seconds()/r0.HashRaw.Seconds(), r0.VerifyHash.Round(time.Millisecond))
			fmt.Fprintf(tw, "fingerprint\t%s\t%s\t%s\t%.2f\t%s\t\n", r0.FingerprintParams, r0.FingerprintIssue.Round(time.Millisecond), r0.FingerprintRaw.Round(time.Millisecond),
				r0.FingerprintIssue.Seconds()/r0.FingerprintRaw.Seconds(), r0.VerifyFingerprint.Round(time.Millisecond))
			fmt.Fprintf(tw, "token\t-\t-\t-\t-\t%s\t\n", r0.VerifyToken.Round(time.Microsecond))
			fmt.Fprintf(tw, "\t\t\t\t\t\t\n")
			fmt.Fprintf(tw, "manifest of %d (build, record, sign)\t%s\t\t\t\t\t\n", r0.Deliveries, r0.ManifestBuild.Round(time.Millisecond))
			fmt.Fprintf(tw, "token verifies/s (one core)\t%.0f\t\t\t\t\t\n", r0.TokenRate)
			for _, r := range all {
				fmt.Fprintf(tw, "receipts/s through sync (%s, %d in %s)\t%.0f\t\t\t\t\t\n", r.Engine, r.Receipts, r.IngestWall.Round(time.Millisecond), r.IngestRate)
			}
			fmt.Fprintf(tw, "cores (GOMAXPROCS)\t%d\t\t\t\t\t\n", r0.GoMaxProcs)
			return tw.Flush()
		},
	}
	fl := c.Flags()
	fl.StringVar(&pg, "postgres", "", "also run on this PostgreSQL DSN (else $OUTPOST_BENCH_POSTGRES_DSN)")
	fl.IntVar(&cfg.Deliveries, "deliveries", cfg.Deliveries, "deliveries per mode for the issue figures and the manifest")
	fl.IntVar(&cfg.Checks, "checks", cfg.Checks, "offline checks per mode for the latency")
	fl.IntVar(&cfg.Receipts, "receipts", cfg.Receipts, "receipts ingested through sync")
	fl.IntVar(&cfg.Devices, "devices", cfg.Devices, "devices syncing receipts at once")
	hashT := fl.Uint32("hash-time", codecheck.DefaultHashParams.Time, "hash mode argon2id passes")
	hashM := fl.Uint32("hash-memory", codecheck.DefaultHashParams.MemoryKiB, "hash mode argon2id memory, KiB")
	c.PreRunE = func(*cobra.Command, []string) error {
		cfg.Hash = codecheck.Params{Time: *hashT, MemoryKiB: *hashM, Threads: 1}
		return cfg.Hash.KDF().Validate()
	}
	fl.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}
