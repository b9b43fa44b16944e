package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/spf13/cobra"
)

// retentionFlags are the audit retention policy of 'outpost serve'
// (auditcheck.Archive, docs/storage.md).
type retentionFlags struct {
	dir, retain string
	every       time.Duration
	age         time.Duration // retain, parsed by validate
}

func (f *retentionFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.dir, "audit-segment-dir", "", "directory (local, or mounted object storage) for signed audit segments: enables 'outpost audit export' and 'prune'")
	fl.StringVar(&f.retain, "audit-retain", "", "keep this much audit log in the database (30d, 36h); older entries a checkpoint covers are exported to --audit-segment-dir, verified and pruned (default: keep all)")
	fl.DurationVar(&f.every, "audit-retain-every", time.Hour, "how often to apply --audit-retain (at least 1m)")
}

func (f *retentionFlags) validate() error {
	if f.retain == "" {
		return nil
	}
	age, err := auditcheck.ParseAge(f.retain)
	switch {
	case err != nil:
		return usageError{fmt.Errorf("--audit-retain: %w", err)}
	case f.dir == "":
		return usageError{errors.New("--audit-retain needs --audit-segment-dir DIR: entries are pruned only once exported there")}
	case f.every < time.Minute:
		return usageError{fmt.Errorf("--audit-retain-every %s: give at least 1m", f.every)}
	}
	f.age = age
	return nil
}

// checkpointDir is where the scheduled checkpoints go (checkpointExportFlags.start).
func (f checkpointExportFlags) checkpointDir(dataDir string) string {
	if f.dir != "" {
		return f.dir
	}
	return filepath.Join(dataDir, CheckpointDir)
}

// start applies the retention policy at once and then every f.every until
// the returned stop is called (which waits for a run in progress). Failures
// are logged and retried at the next run.
func (f retentionFlags) start(ctx context.Context, srv *server.Server, logger *slog.Logger) (stop func()) {
	a := srv.AuditArchive()
	if f.age == 0 || a == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	retain := func() {
		ex, pr, err := a.Retain(ctx, f.age)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, auditcheck.ErrBroken), errors.Is(err, auditcheck.ErrSegment):
			logger.Error("audit retention stopped: the log or a segment does not verify", "error", err.Error())
		case err != nil:
			logger.Warn("audit retention failed", "error", err.Error())
		case len(ex.Files) > 0 || pr.Segments > 0:
			logger.Info("audit retention", "exported", ex.Entries, "files", len(ex.Files), "pruned", pr.Entries, "through", pr.Through)
		}
	}
	wg.Go(func() {
		retain()
		clock.Every(ctx, f.every, retain)
	})
	logger.Info("applying audit retention", "retain", f.retain, "dir", f.dir, "every", f.every.String())
	return func() { cancel(); wg.Wait() }
}
