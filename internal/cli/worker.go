package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/spf13/cobra"
)

type workerFlags struct {
	data     dataFlags
	database string
	bundles  bundlePoolFlags
	nice     int
	lease    time.Duration
	logLevel string
}

func (e *env) workerCmd() *cobra.Command {
	var f workerFlags
	c := &cobra.Command{
		Use:   "worker --data DIR [--database DSN]",
		Short: "Compute queued bundle jobs for the servers of one database, at low priority",
		Long: `Claim the bundle jobs servers on the same database queued (POST
/v1/offline/bundles?async=true), compute them and write the bundles back, so
that the servers answering verifications run no argon2id ('outpost serve
--bundle-workers 0' only queues). Use PostgreSQL (--database postgres://...)
to run workers on other hosts; a SQLite file works only on the one host that
holds it. The worker needs the data directory's master key (a copy of
master.key), as every replica does.

Each job is claimed with a lease (--lease), renewed as entries finish; a
worker that dies loses its job when the lease runs out and another worker
computes it again. The process lowers its priority to --nice (Linux; if the
system refuses it says so and runs at normal priority) and computes with
--bundle-workers argon2id evaluations at once (default: every core, since it
does nothing else). SIGTERM or SIGINT stops it; its job is taken over.`,
		Example: "  outpost worker --data ./outpost-data --database 'postgres://outpost@db/outpost'",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return e.worker(c.Context(), f)
		},
	}
	f.data.register(c)
	f.bundles.register(c)
	fl := c.Flags()
	// A worker does nothing else: every core by default.
	_ = fl.Set("bundle-workers", fmt.Sprint(runtime.NumCPU()))
	fl.Lookup("bundle-workers").Usage = "argon2id evaluations at once"
	fl.Lookup("bundle-workers").DefValue = "every core"
	fl.Lookup("bundle-queue").Usage = "jobs computing at once in this process"
	fl.StringVar(&f.database, "database", "", "database DSN: a SQLite path or postgres://... (default DIR/outpost.db)")
	fl.IntVar(&f.nice, "nice", 10, "niceness of this process (0 keeps it; raising it needs no privilege)")
	fl.DurationVar(&f.lease, "lease", 0, "how long a claimed job stays this worker's without progress (default 1m)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return c
}

func (e *env) worker(ctx context.Context, f workerFlags) error {
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level: %w", err)}
	}
	if f.bundles.workers < 1 {
		return usageError{fmt.Errorf("--bundle-workers %d: a worker computes with at least 1", f.bundles.workers)}
	}
	logger := slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	if f.nice > 0 {
		if _, err := workpool.Nice(f.nice); err != nil {
			logger.Warn("running at normal priority", "error", err.Error())
		}
	}
	pool, err := f.bundles.pool()
	if err != nil {
		return err
	}
	defer pool.Close()
	m, err := e.openMaster(f.data)
	if err != nil {
		return err
	}
	st, err := openDatabase(ctx, f.data.dir, f.database)
	if err != nil {
		return err
	}
	defer st.Close()
	srv, err := server.New(server.Config{Store: st, Master: m, Policy: online.DefaultPolicy, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		BundlePool: pool, DurableJobs: true, BundleJobLease: f.lease})
	if err != nil {
		return usageError{err}
	}
	owner := workerOwner()
	logger.Info("computing bundle jobs", "owner", owner, "engine", st.Engine(), "workers", pool.Workers())
	sigCtx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	stopJobs := workBundles(sigCtx, srv, owner, logger)
	<-sigCtx.Done()
	stopJobs()
	logger.Info("stopped")
	return nil
}

// openDatabase opens --database, or DIR's SQLite file when it is empty.
func openDatabase(ctx context.Context, dir, database string) (store.Store, error) {
	dsn := database
	if dsn == "" {
		dsn = filepath.Join(dir, datadir.DatabaseFile)
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	return st, nil
}
