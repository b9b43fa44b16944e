package cli

import (
	"fmt"
	"os"
	"runtime/pprof"
	"text/tabwriter"
	"time"

	"github.com/outpost-auth/outpost/internal/bench/onlinebench"
	"github.com/spf13/cobra"
)

func (e *env) benchOnlineCmd() *cobra.Command {
	var cfg onlinebench.Config
	var pg string
	var asJSON bool
	var cpuProfile string
	c := &cobra.Command{
		Use:   "online [--postgres DSN]",
		Short: "Online verifications per second over loopback HTTP, next to a no-op handler",
		Long: `Start a server on 127.0.0.1 with a fresh store, enrol --users users with HOTP
tokens, and drive POST /v1/verify with --concurrency clients for --duration,
every request a new valid code whose acceptance is committed before the
answer. First, in the same run, the same clients drive the no-op baseline:
the same requests to /v1/verify with a code that is not digits, which the
server authenticates, decodes and refuses (400) before any store work.
Prints requests/s, p50 and p99 latency and verify's share of the no-op
rate, for SQLite and, with --postgres (or $OUTPOST_BENCH_POSTGRES_DSN), for
PostgreSQL. Use an empty database or schema: the benchmark bootstraps it.`,
		Example: "  outpost bench online --duration 10s --postgres 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable&search_path=bench'",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dsns := benchDSNs(pg)
			stop, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			defer stop()
			var all []onlinebench.Result
			for _, dsn := range dsns {
				cfg.DSN = dsn
				rs, err := onlinebench.Run(c.Context(), cfg, e.stderr)
				if err != nil {
					return err
				}
				all = append(all, rs...)
			}
			if asJSON {
				return e.printJSON(all)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "engine\thandler\trequests\terrors\treq/s\tp50\tp99\tvs no-op\t")
			var noop float64
			for _, r := range all {
				if r.Handler == "noop" {
					noop = r.Rate
				}
				ratio := "-"
				if r.Handler != "noop" && noop > 0 {
					ratio = fmt.Sprintf("%.0f%%", 100*r.Rate/noop)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t\n", r.Engine, r.Handler, r.Requests, r.Errors, r.Rate,
					r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), ratio)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&pg, "postgres", "", "also run on this PostgreSQL DSN (else $OUTPOST_BENCH_POSTGRES_DSN)")
	c.Flags().IntVar(&cfg.Users, "users", 2000, "distinct users")
	c.Flags().IntVar(&cfg.Concurrency, "concurrency", 32, "concurrent clients")
	c.Flags().DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to drive each handler")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	c.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to FILE (go tool pprof)")
	return c
}

// benchDSNs lists the stores a benchmark runs on: a fresh SQLite file ("")
// always, and PostgreSQL when --postgres or $OUTPOST_BENCH_POSTGRES_DSN names one.
func benchDSNs(pg string) []string {
	if pg == "" {
		pg = os.Getenv("OUTPOST_BENCH_POSTGRES_DSN")
	}
	if pg == "" {
		return []string{""}
	}
	return []string{"", pg}
}

// startCPUProfile writes a CPU profile to path until stop is called; an
// empty path profiles nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
