package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/outpost-auth/outpost/internal/bench/notifybench"
	"github.com/spf13/cobra"
)

func (e *env) benchNotifyCmd() *cobra.Command {
	var cfg notifybench.Config
	var asJSON bool
	c := &cobra.Command{
		Use:   "notify --smtp ADDR [--messages N]",
		Short: "Code mails per second to a real SMTP server: the notifier alone and through the outbox",
		Long: `Send --messages code mails to the SMTP server at --smtp: first with the SMTP
notifier alone (--concurrency sessions at once), then end to end through the
outbox: that many deliveries are created (each writing its message in the same
transaction), then --workers outbox workers claim, send, mark sent and move
each delivery to notified, on SQLite (or --database postgres://…, a scratch
schema). Use an SMTP server that drops what it gets, e.g.
  python3 -m aiosmtpd -n -l 127.0.0.1:2525 -c aiosmtpd.handlers.Sink`,
		Example: "  outpost bench notify --smtp 127.0.0.1:2525 --messages 500",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if cfg.SMTPAddr == "" || cfg.Messages < 1 || cfg.Messages > 100000 || cfg.Concurrency < 1 || cfg.Concurrency > 256 || cfg.Workers < 1 || cfg.Workers > 64 {
				return usageError{fmt.Errorf("--smtp is required; --messages 1..100000, --concurrency 1..256, --workers 1..64")}
			}
			rep, err := notifybench.Run(c.Context(), cfg, e.stderr)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(rep)
			}
			fmt.Fprintf(e.stdout, "Notifier throughput to %s, GOMAXPROCS=%d, store %s\n\n", cfg.SMTPAddr, rep.GOMAXPROCS, rep.Engine)
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "path\tmessages\tparallel\tmessages/s\tp50 ms\tp99 ms\t")
			for _, r := range rep.Rows {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t\n", r.Name, r.Messages, r.Parallel, r.PerSec,
					float64(r.P50.Microseconds())/1000, float64(r.P99.Microseconds())/1000)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&cfg.SMTPAddr, "smtp", "", "SMTP server host:port (required)")
	c.Flags().IntVar(&cfg.Messages, "messages", 200, "mails per measurement")
	c.Flags().IntVar(&cfg.Concurrency, "concurrency", 4, "SMTP sessions at once for the notifier alone")
	c.Flags().IntVar(&cfg.Workers, "workers", 2, "outbox workers sharing the outbox")
	c.Flags().StringVar(&cfg.DSN, "database", "", "store for the outbox row: postgres://… (default SQLite in a temporary directory)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}
