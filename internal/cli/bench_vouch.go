package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/outpost-auth/outpost/internal/bench/vouchbench"
	"github.com/spf13/cobra"
)

func (e *env) benchVouchCmd() *cobra.Command {
	cfg := vouchbench.Defaults
	var pg string
	var asJSON bool
	c := &cobra.Command{
		Use:   "vouch [--postgres DSN]",
		Short: "Vouches ingested per second through sync into the roster",
		Long: `Measure vouch ingest on a fresh SQLite store and, with --postgres (or
$OUTPOST_BENCH_POSTGRES_DSN), on a scratch schema of that PostgreSQL database:
--vouches vouches in uploads of --batch entries from --devices staff devices
at once, through the server's sync path with the roster taking each vouch
(label decoded again, the serial's vouches read, stored, audited); printed
next to the same number of plain log entries through the same path, which is
the sync's own cost.`,
		Example: "  outpost bench vouch --vouches 4000 --batch 100",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := cfg.Check(); err != nil {
				return usageError{err}
			}
			var all []vouchbench.Row
			for _, dsn := range benchDSNs(pg) {
				cfg.DSN = dsn
				rows, err := vouchbench.Run(c.Context(), cfg, e.stderr)
				if err != nil {
					return err
				}
				all = append(all, rows...)
			}
			if asJSON {
				return e.printJSON(all)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "engine\tworkload\tentries\tbatch\tdevices\twall\tentries/s\t")
			for _, r := range all {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%.0f\t\n", r.Engine, r.Workload, r.Entries, r.Batch, r.Devices, r.Wall.Round(time.Millisecond), r.Rate)
			}
			return tw.Flush()
		},
	}
	fl := c.Flags()
	fl.StringVar(&pg, "postgres", "", "also run on this PostgreSQL DSN (else $OUTPOST_BENCH_POSTGRES_DSN)")
	fl.IntVar(&cfg.Vouches, "vouches", cfg.Vouches, "vouches ingested")
	fl.IntVar(&cfg.Batch, "batch", cfg.Batch, "entries per upload (at most 10000)")
	fl.IntVar(&cfg.Devices, "devices", cfg.Devices, "staff devices uploading at once")
	fl.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}
