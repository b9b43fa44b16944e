package cli

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/outpost-auth/outpost/internal/server"

	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/spf13/cobra"
)

// bundlePoolFlags size the pool bundle and refill generation run in
// (internal/workpool, docs/server.md "Bundle work").
type bundlePoolFlags struct {
	workers, memoryMiB, queue int
	share                     float64
}

func (f *bundlePoolFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.IntVar(&f.workers, "bundle-workers", workpool.DefaultWorkers(), "argon2id evaluations of bundles and refills at once (default: half the cores, at least 1); 0 computes none here: jobs wait for 'outpost worker'")
	fl.IntVar(&f.memoryMiB, "bundle-memory", 0, "MiB of argon2id memory bundle work may hold at once (default: --bundle-workers × the bundle KDF's memory)")
	fl.IntVar(&f.queue, "bundle-queue", workpool.DefaultQueue, "bundles queued or computing at once; beyond it a bundle request is answered 503 busy")
	fl.Float64Var(&f.share, "bundle-share", 1, "fraction of its time each bundle worker computes, from 0.01 to 1: below 1 it rests between argon2id evaluations, so that bundle work takes less than a core beside verification and bundles take 1/share as long")
}

// pool starts the bundle pool the flags describe (nil for --bundle-workers
// 0); the caller closes it.
func (f bundlePoolFlags) pool() (*workpool.Pool, error) {
	switch {
	case f.workers < 0:
		return nil, usageError{fmt.Errorf("--bundle-workers %d: give 0 (compute no bundle here) or more", f.workers)}
	case f.memoryMiB < 0:
		return nil, usageError{fmt.Errorf("--bundle-memory %d: give a size in MiB, or 0 for the default", f.memoryMiB)}
	case f.queue < 1:
		return nil, usageError{fmt.Errorf("--bundle-queue %d: give at least 1", f.queue)}
	}
	if err := workpool.CheckShare(f.share); err != nil {
		return nil, usageError{fmt.Errorf("--bundle-share: %w", err)}
	}
	if f.workers == 0 {
		return nil, nil
	}
	mem := int64(f.memoryMiB) << 10
	if mem == 0 {
		mem = int64(f.workers) * int64(cost.Default.MemoryKiB)
	}
	return workpool.New(workpool.Config{Workers: f.workers, MemoryKiB: mem, Queue: f.queue, Share: f.share}), nil
}

// workerOwner names this process as the owner of the bundle jobs it
// claims: its pid and a random suffix (pids repeat across hosts).
func workerOwner() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("w%d-%x", os.Getpid(), b)
}

// workBundles runs srv's bundle job loop until ctx ends (stop waits for it),
// logging a failure of the store and retrying after a pause.
func workBundles(ctx context.Context, srv *server.Server, owner string, logger *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := srv.WorkBundles(ctx, owner); err != nil && ctx.Err() == nil {
				logger.Warn("bundle jobs", "error", err.Error())
				t := time.NewTimer(5 * time.Second)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
		}
	}()
	return func() { cancel(); <-done }
}
