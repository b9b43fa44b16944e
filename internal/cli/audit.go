package cli

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/spf13/cobra"
)

func (e *env) auditCmd() *cobra.Command {
	c := &cobra.Command{Use: "audit", Short: "Check, export and prune the server's hash-chained audit log"}
	var dir, dsn, segDir string
	var asJSON, full bool
	var parallel int
	var cf checkpointFlags
	v := &cobra.Command{
		Use:   "verify --data DIR [--database DSN] [--checkpoint FILE|DIR ...] [--full] [--segments DIR [--parallel N]] [--server-key PUB]",
		Short: "Recompute the audit log's hash chain from the database and its exported segments, and report the first broken link",
		Long: `Read the audit entries straight from the database (not through a server, so a
compromised server cannot answer for it) and recompute the chain. Exits 0 when
intact, 5 when an entry was removed, reordered or altered, naming the first bad
sequence number.

A chain alone cannot see a tail rewritten with every hash recomputed, or cut
short. With --checkpoint (signed checkpoints from 'outpost serve' or 'outpost
admin audit checkpoint', kept away from the server) the log must also still
hold the entry each checkpoint vouches for, exactly: otherwise exit 5. The
check then continues from the newest checkpoint: it reads that entry and the
ones after it only (and one entry per older checkpoint), trusting the
checkpoint for what came before. --full reads the whole log instead, which
also sees rows before the checkpoint changed since it was signed.

A log whose oldest entries were exported and pruned ('outpost audit export',
'outpost audit prune', 'outpost serve --audit-retain') starts at its first
entry kept; an audit.prune entry must record exactly that prune. --segments
DIR checks the exported segment files, each on its own with --parallel
workers (its signature, its SHA-256, its chain), then that they follow each
other and that the database's first entry chains on from them: a segment
missing, reordered, altered or truncated exits 5 naming the file and seq.
--segments without --data or --database checks the files alone.

The signatures are checked with --server-key, or with the key derived from
DIR's master key (which needs its passphrase).`,
		Example: `  outpost audit verify --data ./outpost-data
  outpost audit verify --data ./outpost-data --server-key server.pub --checkpoint /mnt/worm/checkpoints
  outpost audit verify --data ./outpost-data --server-key server.pub --segments /mnt/archive/audit --parallel 4`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if dsn == "" && dir != "" {
				dsn = filepath.Join(dir, datadir.DatabaseFile)
			}
			if dsn == "" && segDir == "" {
				return usageError{errors.New("pass --data DIR or --database DSN (or --segments DIR to check exported segments alone)")}
			}
			if parallel < 1 {
				return usageError{fmt.Errorf("--parallel %d: give 1 or more", parallel)}
			}
			cps, err := cf.load(e, dir)
			if err != nil {
				return err
			}
			anchors := make([]auditcheck.Checkpoint, len(cps))
			for i, cp := range cps {
				anchors[i] = cp.Checkpoint
			}
			var st store.Store
			if dsn != "" {
				if st, err = store.Open(c.Context(), dsn); err != nil {
					return err
				}
				defer st.Close()
			}
			if segDir != "" {
				ring, err := cf.keyring(e, dir, "--segments")
				if err != nil {
					return err
				}
				srep, err := auditcheck.VerifySegments(c.Context(), segDir, ring, parallel, st, anchors...)
				if err != nil {
					return err
				}
				if err := e.segmentsReport(srep, parallel, asJSON); err != nil || st == nil {
					return err
				}
			}
			verify := auditcheck.VerifyFromCheckpoint
			if full {
				verify = auditcheck.VerifyStore
			}
			rep, err := verify(c.Context(), st, anchors...)
			if err != nil {
				return err
			}
			return e.auditReport(rep, cps, asJSON)
		},
	}
	v.Flags().StringVar(&dir, "data", "", "server data directory")
	v.Flags().StringVar(&dsn, "database", "", "database DSN (default DIR/outpost.db)")
	v.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	v.Flags().BoolVar(&full, "full", false, "read the whole log even with --checkpoint (slower; also sees rows before the checkpoint changed since)")
	v.Flags().StringVar(&segDir, "segments", "", "directory of exported audit segments to check, and link to the database")
	v.Flags().IntVar(&parallel, "parallel", runtime.NumCPU(), "segments checked at once")
	cf.register(v)
	c.AddCommand(v, e.auditExportCmd(), e.auditPruneCmd())
	return c
}

// auditReport prints rep and returns exit 5 when the log is broken.
func (e *env) auditReport(rep audit.Report, cps []namedCheckpoint, asJSON bool) error {
	if asJSON {
		if err := e.printJSON(struct {
			audit.Report
			Checkpoints int `json:"checkpoints"`
		}{rep, len(cps)}); err != nil {
			return err
		}
	} else if rep.OK {
		fmt.Fprintf(e.stdout, "audit log intact: %d entries (%d read from the database%s)%s\n", rep.Entries, rep.Read, prunedSummary(rep), checkpointSummary(rep, cps))
	}
	if !rep.OK {
		return withCode(ExitTampered, fmt.Errorf("audit log broken at entry %d: %s%s", rep.BrokenAt, rep.Problem, checkpointSummary(rep, cps)))
	}
	return nil
}
