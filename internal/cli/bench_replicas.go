package cli

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/outpost-auth/outpost/internal/bench/replicabench"
	"github.com/spf13/cobra"
)

func (e *env) benchReplicasCmd() *cobra.Command {
	var cfg replicabench.Config
	var asJSON bool
	c := &cobra.Command{
		Use:   "replicas --postgres DSN [--replicas 1,2,3]",
		Short: "Online verifications per second with 1, 2 and 3 outpost serve replicas on one PostgreSQL, once-only checked",
		Long: `Make a scratch schema in the PostgreSQL database --postgres names (dropped at the
end), enrol --users users with HOTP tokens, then for each count in --replicas:
start that many 'outpost serve' processes of this binary on 127.0.0.1 (plain
HTTP, access log of errors only, one master key, the same schema), drive
POST /v1/verify round-robin across them with --concurrency clients for
--duration (every request a new valid code; the same clients for every
count), and stop them with SIGTERM.

Per count it prints verify/s, p50 and p99, errors, the rate over one
replica's, the CPU seconds per 1,000 verifies of the replicas, of the local
PostgreSQL server's processes and of this load generator, and per verify
PostgreSQL's transactions committed and rolled back in the database
(pg_stat_database: every client's, read statements included; a rollback is
mostly a replica's batch of acceptances retried after another replica took
the audit sequence number) and the server's WAL flushes and bytes
(pg_stat_wal: below 1 flush per verify when commits are grouped).

After each run it checks the once-only guarantee: a fresh code of each of
--race-users users sent to every replica at once must be accepted by exactly
one, and replayed to every replica by none; in the database no counter of a
token may be accepted twice in the audit log, each token's last used
counter must be the highest accepted, and the audit chain must verify. A
violation is printed and the command exits 1.`,
		Example: "  outpost bench replicas --postgres 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable' --replicas 1,2,3 --duration 10s",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if cfg.DSN == "" {
				cfg.DSN = os.Getenv("OUTPOST_BENCH_POSTGRES_DSN")
			}
			if cfg.DSN == "" {
				return usageError{errors.New("give --postgres postgres://... (or $OUTPOST_BENCH_POSTGRES_DSN): replicas share one PostgreSQL database")}
			}
			rs, err := replicabench.Run(c.Context(), cfg, e.stderr)
			switch {
			case errors.Is(err, replicabench.ErrConfig):
				return usageError{err}
			case len(rs) == 0:
				return err
			}
			if asJSON {
				if perr := e.printJSON(rs); perr != nil {
					return perr
				}
			} else if perr := printReplicas(e, rs); perr != nil {
				return perr
			}
			return err
		},
	}
	fl := c.Flags()
	fl.StringVar(&cfg.DSN, "postgres", "", "PostgreSQL DSN the replicas share (else $OUTPOST_BENCH_POSTGRES_DSN); a scratch schema is used")
	fl.IntSliceVar(&cfg.Replicas, "replicas", []int{1, 2, 3}, "replica counts to measure, in order")
	fl.IntVar(&cfg.Users, "users", 2000, "distinct users")
	fl.IntVar(&cfg.Concurrency, "concurrency", 32, "concurrent clients in total, the same for every replica count")
	fl.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to drive each replica count")
	fl.IntVar(&cfg.RaceUsers, "race-users", replicabench.DefaultRaceUsers, "users whose fresh code is sent to every replica at once after each run")
	fl.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}

// printReplicas prints the results' table and the problems the once-only
// check found.
func printReplicas(e *env, rs []replicabench.Result) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "replicas\tclients\trequests\terrors\tverify/s\tp50\tp99\tvs 1\tCPU s/1k: replicas\tpostgres\tclient\tcommits/v\trollbacks/v\tWAL syncs/v\tWAL B/v\tonce-only\tload\t")
	for _, r := range rs {
		vs, pg := "-", "-"
		if r.VsOne > 0 {
			vs = fmt.Sprintf("%.2fx", r.VsOne)
		}
		if r.PostgresLocal {
			pg = fmt.Sprintf("%.3f", r.PostgresCPU)
		}
		once := "ok"
		if !r.OnceOnly.Clean() {
			once = "VIOLATED"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%.3f\t%s\t%.3f\t%.2f\t%.3f\t%.3f\t%.0f\t%s\t%s\t\n", r.Replicas, r.Clients, r.Requests, r.Errors, r.Rate,
			r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), vs, r.ReplicaCPU, pg, r.ClientCPU,
			r.CommitsPerVerify, r.RollbacksPerVerify, r.WALSyncsPerVerify, r.WALBytesPerVerify, once, r.Load)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rs {
		if r.FirstError != "" {
			fmt.Fprintf(e.stdout, "%d replicas: first error: %s\n", r.Replicas, r.FirstError)
		}
		o := r.OnceOnly
		fmt.Fprintf(e.stdout, "%d replicas: once-only: %d races (%d not won by exactly one), %d replays (%d accepted), %d verify.ok entries for %d codes seen accepted, %d duplicates, %d counters out of step, audit chain of %d entries ok: %v\n",
			r.Replicas, o.Raced, o.RaceViolations, o.Replayed, o.ReplayAccepted, o.Audited, o.ClientAccepted, o.Duplicates, o.CounterMismatches, o.Chain.Entries, o.Chain.OK)
		for _, p := range o.Problems {
			fmt.Fprintf(e.stdout, "  %s\n", p)
		}
	}
	return nil
}
