package cli

import (
	"fmt"
	"path/filepath"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/spf13/cobra"
)

func (e *env) auditCmd() *cobra.Command {
	c := &cobra.Command{Use: "audit", Short: "Check the server's hash-chained audit log"}
	var dir, dsn string
	var asJSON bool
	v := &cobra.Command{
		Use:   "verify --data DIR [--database DSN]",
		Short: "Recompute the audit log's hash chain from the database and report the first broken link",
		Long: `Read every audit entry straight from the database (not through a server, so a
compromised server cannot answer for it) and recompute the chain. Exits 0 when
intact, 5 when an entry was removed, reordered or altered, naming the first bad
sequence number.`,
		Example: "  outpost audit verify --data ./outpost-data",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if dsn == "" {
				dsn = filepath.Join(dir, datadir.DatabaseFile)
			}
			st, err := store.Open(c.Context(), dsn)
			if err != nil {
				return err
			}
			defer st.Close()
			rep, err := audit.VerifyStore(c.Context(), st)
			if err != nil {
				return err
			}
			if asJSON {
				if err := e.printJSON(rep); err != nil {
					return err
				}
			} else if rep.OK {
				fmt.Fprintf(e.stdout, "audit log intact: %d entries\n", rep.Entries)
			}
			if !rep.OK {
				return withCode(ExitTampered, fmt.Errorf("audit log broken at entry %d (after %d good entries): %s", rep.BrokenAt, rep.Entries, rep.Problem))
			}
			return nil
		},
	}
	v.Flags().StringVar(&dir, "data", "", "server data directory")
	v.Flags().StringVar(&dsn, "database", "", "database DSN (default DIR/outpost.db)")
	v.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	c.AddCommand(v)
	return c
}
