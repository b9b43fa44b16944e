package cli

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/spf13/cobra"
)

func (e *env) auditCmd() *cobra.Command {
	c := &cobra.Command{Use: "audit", Short: "Check the server's hash-chained audit log"}
	var dir, dsn string
	var asJSON bool
	var cf checkpointFlags
	v := &cobra.Command{
		Use:   "verify --data DIR [--database DSN] [--checkpoint FILE|DIR ...] [--server-key PUB]",
		Short: "Recompute the audit log's hash chain from the database and report the first broken link",
		Long: `Read every audit entry straight from the database (not through a server, so a
compromised server cannot answer for it) and recompute the chain. Exits 0 when
intact, 5 when an entry was removed, reordered or altered, naming the first bad
sequence number.

A chain alone cannot see a tail rewritten with every hash recomputed, or cut
short. With --checkpoint (signed checkpoints from 'outpost serve' or 'outpost
admin audit checkpoint', kept away from the server) the log must also still
hold the entry each checkpoint vouches for, exactly: otherwise exit 5. The
checkpoints' signatures are checked with --server-key, or with the key derived
from DIR's master key (which needs its passphrase).`,
		Example: `  outpost audit verify --data ./outpost-data
  outpost audit verify --data ./outpost-data --server-key server.pub --checkpoint /mnt/worm/checkpoints`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if dsn == "" {
				if dir == "" {
					return usageError{errors.New("pass --data DIR or --database DSN")}
				}
				dsn = filepath.Join(dir, datadir.DatabaseFile)
			}
			cps, err := cf.load(e, dir)
			if err != nil {
				return err
			}
			st, err := store.Open(c.Context(), dsn)
			if err != nil {
				return err
			}
			defer st.Close()
			anchors := make([]auditcheck.Checkpoint, len(cps))
			for i, cp := range cps {
				anchors[i] = cp.Checkpoint
			}
			rep, err := auditcheck.VerifyStore(c.Context(), st, anchors...)
			if err != nil {
				return err
			}
			return e.auditReport(rep, cps, asJSON)
		},
	}
	v.Flags().StringVar(&dir, "data", "", "server data directory")
	v.Flags().StringVar(&dsn, "database", "", "database DSN (default DIR/outpost.db)")
	v.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	cf.register(v)
	c.AddCommand(v)
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
		fmt.Fprintf(e.stdout, "audit log intact: %d entries%s\n", rep.Entries, checkpointSummary(rep, cps))
	}
	if !rep.OK {
		return withCode(ExitTampered, fmt.Errorf("audit log broken at entry %d: %s%s", rep.BrokenAt, rep.Problem, checkpointSummary(rep, cps)))
	}
	return nil
}
