package cli

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"text/tabwriter"
	"time"

	"github.com/outpost-auth/outpost/internal/bench/onlinebench"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/spf13/cobra"
)

func (e *env) benchOnlineCmd() *cobra.Command {
	var cfg onlinebench.Config
	var pg string
	var asJSON bool
	var cpuProfile string
	var childEntries int
	c := &cobra.Command{
		Use:   "online [--postgres DSN]",
		Short: "Online verifications per second over loopback HTTP, beside a no-op handler and a plain verifier",
		Long: `Start a server on 127.0.0.1 with a fresh store, enrol --users users with HOTP
tokens, and at each client count of --concurrency (default 1,16,128) drive,
for --duration each and in this order:

  noop    the same requests to POST /v1/verify with a code that is not
          digits, which the server authenticates, decodes and refuses (400)
          before any store work (the run fails if the audit log grows);
  plain   a plain verifier written in the benchmark, on its own listener:
          bearer key, pquerna/otp's HOTP check in the look-ahead window and
          ONE conditional UPDATE of a table of its own in the same database
          (same driver, WAL + synchronous=FULL on SQLite); no audit, no
          lockout, no per-user serialisation (internal/bench/onlinebench);
  verify  POST /v1/verify with each user's next valid code, accepted and
          audited durably before the answer.

Every request of plain and verify is a new valid code. For each run it
prints requests, errors, requests/s, p50 and p99 latency, bytes written per
request (B/req: SQLite, this process's write_bytes from /proc/self/io, the
load generator writing nothing; PostgreSQL, the server's WAL bytes from
pg_current_wal_lsn, other databases' writes included; "-" where not
readable) and the ratios at the same client count: vs no-op (rate over the
baseline's), vs plain (verify's rate over plain's) and B vs plain (verify's
bytes per request over plain's). --json prints every field.

It runs on SQLite and, with --postgres (or $OUTPOST_BENCH_POSTGRES_DSN), on
PostgreSQL, each in a fresh file or scratch schema. --users must be at least
the highest client count: each client owns its own users.

With --during-bundle it then drives verify again, at the highest client
count, while a bundle of --bundle-entries (default a 1-day 30 s TOTP bundle,
2,880 entries, at the default argon2id profile) computes: on every core (the
server before the bundle pool), through a pool of --bundle-workers (outpost
serve's), and in a separate process at niceness 10 (as a bundle worker
process would run), the last two at --bundle-share of each worker's time.
Each such run follows a run of verify alone, and its rate is printed over
that one's (target >= 0.9): verify's rate drifts from run to run by more
than a fraction of a core of bundle work moves it.`,
		Example: "  outpost bench online --duration 8s --users 4000 --concurrency 1,16,128 --postgres 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if childEntries > 0 {
				return e.benchBundleChild(c.Context(), childEntries, cfg.BundleShare)
			}
			if err := cfg.Check(); err != nil {
				return usageError{err}
			}
			if err := workpool.CheckShare(cfg.BundleShare); err != nil { // 0 is Config's unset, not a flag's value
				return usageError{fmt.Errorf("--bundle-share: %w", err)}
			}
			if cfg.DuringBundle {
				cfg.ChildArgs = func(entries int, share float64) []string {
					return []string{"bench", "online", "--bundle-share", fmt.Sprint(share), "--bundle-child-entries", fmt.Sprint(entries)}
				}
			}
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
			fmt.Fprintln(tw, "engine\tclients\thandler\trequests\terrors\treq/s\tp50\tp99\tB/req\tvs no-op\tvs plain\tB vs plain\t")
			for _, r := range all {
				handler := r.Handler
				if r.Beside != "" && r.BundleShare > 0 && r.BundleShare < 1 {
					handler += fmt.Sprintf(" + bundle (%s, share %g)", r.Beside, r.BundleShare)
				} else if r.Beside != "" {
					handler += " + bundle (" + r.Beside + ")"
				}
				bytes := "-"
				if r.BytesPerRequest != nil {
					bytes = fmt.Sprintf("%.0f", *r.BytesPerRequest)
				}
				vsNoop := ratio(r.VsNoop, "%.0f%%", 100)
				if r.Beside != "" {
					vsNoop = fmt.Sprintf("%.2fx alone (%.0f/s just before), load %s", r.VsAlone, r.AloneRate, r.Load)
					if r.BundleEntries > 0 {
						vsNoop = fmt.Sprintf("%.2fx alone (%.0f/s just before), %d entries, load %s", r.VsAlone, r.AloneRate, r.BundleEntries, r.Load)
					}
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Engine, r.Clients, handler, r.Requests, r.Errors, r.Rate,
					r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), bytes, vsNoop, ratio(r.VsPlain, "%.2fx", 1), ratio(r.BytesVsPlain, "%.2fx", 1))
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&pg, "postgres", "", "also run on this PostgreSQL DSN (else $OUTPOST_BENCH_POSTGRES_DSN)")
	c.Flags().IntVar(&cfg.Users, "users", 2000, "distinct users")
	c.Flags().IntSliceVar(&cfg.Concurrency, "concurrency", onlinebench.DefaultConcurrency, "concurrent clients: a count or a comma-separated list, each handler runs at each")
	c.Flags().DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to drive each handler")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	c.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to FILE (go tool pprof)")
	c.Flags().BoolVar(&cfg.DuringBundle, "during-bundle", false, "also drive verify beside bundle work: all cores, the bundle pool, a separate niced process")
	c.Flags().IntVar(&cfg.BundleEntries, "bundle-entries", onlinebench.DayEntries, "entries of the bundle computed beside verify (--during-bundle)")
	c.Flags().IntVar(&cfg.BundleWorkers, "bundle-workers", workpool.DefaultWorkers(), "workers of the bundle pool (--during-bundle; as outpost serve --bundle-workers)")
	c.Flags().Float64Var(&cfg.BundleShare, "bundle-share", 1, "fraction of each bundle worker's time it computes, of the pool and the separate process (--during-bundle; as outpost serve --bundle-share)")
	// --bundle-child-entries runs the separate bundle process: the
	// benchmark re-runs this command with it.
	c.Flags().IntVar(&childEntries, "bundle-child-entries", 0, "internal: compute a bundle of N entries at niceness 10")
	_ = c.Flags().MarkHidden("bundle-child-entries")
	return c
}

// ratio formats v times scale with format, or "-" for 0 (not measured).
func ratio(v float64, format string, scale float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v*scale)
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

// benchBundleChild is the separate bundle process of --during-bundle: it
// lowers its priority (workpool.Nice; at normal priority if refused) and
// computes a bundle on every core, each at share of its time, until done
// or killed.
func (e *env) benchBundleChild(ctx context.Context, entries int, share float64) error {
	if _, err := workpool.Nice(onlinebench.BundleWorkNice); err != nil {
		fmt.Fprintf(e.stderr, "bundle process at normal priority: %v\n", err)
	}
	p := workpool.New(workpool.Config{Workers: runtime.NumCPU(), Share: share})
	defer p.Close()
	return onlinebench.BundleWork(ctx, entries, p.Workers(), p, nil)
}
