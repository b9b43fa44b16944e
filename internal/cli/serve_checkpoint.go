package cli

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/spf13/cobra"
)

// CheckpointDir is where 'outpost serve' exports audit checkpoints by default, inside DIR.
const CheckpointDir = "audit-checkpoints"

// checkpointExportFlags schedule the export of signed audit checkpoints.
type checkpointExportFlags struct {
	dir   string
	every time.Duration
	keep  int
}

func (f *checkpointExportFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.dir, "audit-checkpoint-dir", "", "directory to export signed audit checkpoints to (default DIR/"+CheckpointDir+"); copy them off this host")
	fl.DurationVar(&f.every, "audit-checkpoint-every", 10*time.Minute, "how often to sign and export the audit log's head (0 disables; at least 1s)")
	fl.IntVar(&f.keep, "audit-checkpoint-keep", 1000, "how many checkpoint files to keep in the directory (0 keeps all)")
}

func (f checkpointExportFlags) validate() error {
	if f.every < 0 || (f.every > 0 && f.every < time.Second) {
		return usageError{fmt.Errorf("--audit-checkpoint-every %s: give 0 (off) or at least 1s", f.every)}
	}
	if f.keep < 0 {
		return usageError{fmt.Errorf("--audit-checkpoint-keep %d: give 0 (keep all) or more", f.keep)}
	}
	return nil
}

// start resumes the server's notary from the newest exported checkpoint and,
// unless disabled, exports on schedule until the returned stop is called
// (which waits for an export in progress).
func (f checkpointExportFlags) start(ctx context.Context, dataDir string, srv *server.Server, logger *slog.Logger) (stop func()) {
	dir := f.checkpointDir(dataDir)
	x := &auditcheck.Exporter{Notary: srv.Checkpoints(), Dir: dir, Keep: f.keep, Log: logger}
	if err := x.Resume(); err != nil {
		// Not fatal: the server keeps authenticating; new checkpoints then
		// chain on from a full check of the log instead.
		logger.Error("cannot resume from the newest audit checkpoint; move it aside if it is not this server's", "error", err.Error())
	}
	if f.every == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); x.Run(ctx, f.every) }()
	logger.Info("exporting audit checkpoints", "dir", dir, "every", f.every.String())
	return func() { cancel(); wg.Wait() }
}
