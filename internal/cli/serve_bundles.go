package cli

import (
	"fmt"

	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/spf13/cobra"
)

// bundlePoolFlags size the pool bundle and refill generation run in
// (internal/workpool, docs/server.md "Bundle work").
type bundlePoolFlags struct {
	workers, memoryMiB, queue int
}

func (f *bundlePoolFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.IntVar(&f.workers, "bundle-workers", workpool.DefaultWorkers(), "argon2id evaluations of bundles and refills at once (default: half the cores, at least 1)")
	fl.IntVar(&f.memoryMiB, "bundle-memory", 0, "MiB of argon2id memory bundle work may hold at once (default: --bundle-workers × the bundle KDF's memory)")
	fl.IntVar(&f.queue, "bundle-queue", workpool.DefaultQueue, "bundles queued or computing at once; beyond it a bundle request is answered 503 busy")
}

// pool starts the bundle pool the flags describe; the caller closes it.
func (f bundlePoolFlags) pool() (*workpool.Pool, error) {
	switch {
	case f.workers < 1:
		return nil, usageError{fmt.Errorf("--bundle-workers %d: give at least 1 (a separate 'outpost worker' process is not built yet)", f.workers)}
	case f.memoryMiB < 0:
		return nil, usageError{fmt.Errorf("--bundle-memory %d: give a size in MiB, or 0 for the default", f.memoryMiB)}
	case f.queue < 1:
		return nil, usageError{fmt.Errorf("--bundle-queue %d: give at least 1", f.queue)}
	}
	mem := int64(f.memoryMiB) << 10
	if mem == 0 {
		mem = int64(f.workers) * int64(cost.Default.MemoryKiB)
	}
	return workpool.New(workpool.Config{Workers: f.workers, MemoryKiB: mem, Queue: f.queue}), nil
}
