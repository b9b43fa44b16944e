package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/outpost-auth/outpost/internal/bench/syncbench"
	"github.com/spf13/cobra"
)

func (e *env) benchSyncCmd() *cobra.Command {
	cfg := syncbench.Defaults
	var pg string
	var asJSON bool
	var cpuProfile string
	c := &cobra.Command{
		Use:   "sync [--postgres DSN]",
		Short: "Offline events ingested per second, and a full sync round of many devices",
		Long: `Measure sync on a fresh SQLite store and, with --postgres (or
$OUTPOST_BENCH_POSTGRES_DSN), on a scratch schema of that PostgreSQL database.

ingest: --ingest-events device log entries, in uploads of --batch entries
from --ingest-devices devices at once, through the server's sync path
(signature and chain checks, one transaction per upload auditing every
event, state applied); printed next to this machine's Ed25519 verification
rate on all cores in the same run, which bounds it (every entry's signature
is checked), and next to the rate with uploads of --events entries.

round: the wall time of one sync round of --devices devices with --events
new entries each over loopback HTTP (each device signs its upload, POSTs it,
checks the signed answer), --concurrency devices at a time.`,
		Example: "  outpost bench sync --postgres 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if cfg.Batch < 1 || cfg.Batch > 10000 || cfg.Events < 1 || cfg.Events > 10000 || cfg.Devices < 1 || cfg.IngestDevices < 1 ||
				cfg.Concurrency < 1 || cfg.IngestEvents < cfg.IngestDevices {
				return usageError{fmt.Errorf("--batch and --events are 1 to 10000; --devices, --ingest-devices, --concurrency at least 1")}
			}
			stop, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			defer stop()
			dsns := benchDSNs(pg)
			var all []syncbench.Result
			for _, dsn := range dsns {
				cfg.DSN = dsn
				r, err := syncbench.Run(c.Context(), cfg, e.stderr)
				if err != nil {
					return err
				}
				if r.Errors > 0 {
					return fmt.Errorf("%s: %d syncs failed; first: %s", r.Engine, r.Errors, r.FirstError)
				}
				all = append(all, r)
			}
			if asJSON {
				return e.printJSON(all)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "engine\tingest events/s\t(batch)\tvs Ed25519 verify/s\tevents/s at batch\t(batch)\tround devices×events\tround wall\tsync p50\tsync p99\t")
			for _, r := range all {
				fmt.Fprintf(tw, "%s\t%.0f\t%d\t%.0f%% of %.0f\t%.0f\t%d\t%d×%d\t%s\t%s\t%s\t\n", r.Engine, r.IngestRate, r.IngestBatch,
					100*r.IngestRate/r.Ed25519Rate, r.Ed25519Rate, r.SmallRate, r.SmallBatch, r.RoundDevices, r.RoundEvents,
					r.RoundWall.Round(time.Millisecond), r.RoundP50.Round(time.Microsecond), r.RoundP99.Round(time.Microsecond))
			}
			return tw.Flush()
		},
	}
	fl := c.Flags()
	fl.StringVar(&pg, "postgres", "", "also run on this PostgreSQL DSN (else $OUTPOST_BENCH_POSTGRES_DSN)")
	fl.IntVar(&cfg.IngestEvents, "ingest-events", cfg.IngestEvents, "log entries ingested for the rate")
	fl.IntVar(&cfg.Batch, "batch", cfg.Batch, "entries per upload for the rate (at most 10000)")
	fl.IntVar(&cfg.IngestDevices, "ingest-devices", cfg.IngestDevices, "devices uploading at once for the rate")
	fl.IntVar(&cfg.Devices, "devices", cfg.Devices, "devices in the full round")
	fl.IntVar(&cfg.Events, "events", cfg.Events, "new log entries per device in the full round")
	fl.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "devices syncing at once in the full round")
	fl.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	fl.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to FILE (go tool pprof)")
	return c
}
