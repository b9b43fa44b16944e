package auditcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/datadir"
)

// File names of exported checkpoints: the seq, zero-padded so that names
// sort in log order, and one file per seq.
const (
	filePrefix = "audit-checkpoint-"
	fileSuffix = ".json"
)

// FileName is the name an Exporter gives the checkpoint of seq.
func FileName(seq uint64) string { return fmt.Sprintf("%s%020d%s", filePrefix, seq, fileSuffix) }

// Exporter writes checkpoints into Dir: one file per head (mode 0600,
// written to a temporary file and linked into place, never overwriting),
// keeping the newest Keep files.
type Exporter struct {
	Notary *Notary
	Dir    string
	// Keep is how many files to keep; older ones are removed. 0 keeps all.
	Keep int
	Log  *slog.Logger
}

// Resume hands the newest checkpoint file in Dir, verified with the
// notary's key, to the notary, so that after a restart the server still
// refuses to sign over a rewrite of what it exported before. A missing or
// empty Dir is not an error; a file that does not verify is.
func (x *Exporter) Resume() error {
	names, err := x.files()
	if err != nil || len(names) == 0 {
		return err
	}
	path := filepath.Join(x.Dir, names[len(names)-1])
	data, err := datadir.ReadFileLimit(path, MaxSize)
	if err != nil {
		return err
	}
	s, err := Open(data, artifact.Keys{x.Notary.Signer.Public})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	x.Notary.Resume(s)
	return nil
}

// Export has the notary sign the current head and writes it to Dir. It
// returns the file's path, or "" when that head's file already exists.
func (x *Exporter) Export(ctx context.Context) (string, error) {
	s, err := x.Notary.Checkpoint(ctx)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(x.Dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(x.Dir, FileName(s.Seq))
	switch err := datadir.WriteFileAtomicNew(path, s.Bytes, 0o600); {
	case errors.Is(err, fs.ErrExist):
		return "", nil
	case err != nil:
		return "", err
	}
	return path, x.prune()
}

// files lists Dir's checkpoint files, oldest first.
func (x *Exporter) files() ([]string, error) { return checkpointNames(x.Dir) }

// prune removes the oldest files beyond Keep.
func (x *Exporter) prune() error {
	names, err := x.files()
	if err != nil || x.Keep <= 0 || len(names) <= x.Keep {
		return err
	}
	for _, n := range names[:len(names)-x.Keep] {
		if err := os.Remove(filepath.Join(x.Dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// Run exports at once and then every period until ctx ends. The period only
// paces the exports; each checkpoint's time is the notary's clock. Failures
// are logged (a broken log at error level, every time) and retried at the
// next tick.
func (x *Exporter) Run(ctx context.Context, every time.Duration) {
	x.runOnce(ctx)
	clock.Every(ctx, every, func() { x.runOnce(ctx) })
}

func (x *Exporter) runOnce(ctx context.Context) {
	path, err := x.Export(ctx)
	switch {
	case errors.Is(err, ErrEmpty), ctx.Err() != nil:
	case errors.Is(err, ErrBroken):
		x.Log.Error("audit log does not match the last checkpoint", "error", err.Error())
	case err != nil:
		x.Log.Warn("audit checkpoint export failed", "error", err.Error())
	case path != "":
		x.Log.Info("audit checkpoint exported", "file", path)
	}
}
