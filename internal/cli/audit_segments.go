package cli

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/outpost-auth/outpost/internal/apiclient"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/spf13/cobra"
)

// segmentsReport prints what 'audit verify --segments' found and returns
// exit 5 when the segments are broken.
func (e *env) segmentsReport(rep auditcheck.SegmentsReport, parallel int, asJSON bool) error {
	if asJSON {
		if err := e.printJSON(struct {
			Segments auditcheck.SegmentsReport `json:"segments"`
		}{rep}); err != nil {
			return err
		}
	} else if rep.OK {
		linked := "; no database given"
		if rep.Database != 0 {
			linked = fmt.Sprintf("; the database's first entry, %d, chains on from them", rep.Database)
		}
		start := ""
		if rep.From > 1 {
			start = fmt.Sprintf(" (entries 1..%d are in no segment here)", rep.From-1)
		}
		fmt.Fprintf(e.stdout, "audit segments intact: %d segments, entries %d..%d%s%s, %d checkpoint(s) matched, %d worker(s)\n",
			rep.Segments, rep.From, rep.To, start, linked, rep.Checkpoints, parallel)
	}
	if !rep.OK {
		return withCode(ExitTampered, fmt.Errorf("audit segments broken at entry %d, in %s: %s", rep.BrokenAt, rep.File, rep.Problem))
	}
	return nil
}

// prunedSummary says where a pruned log starts.
func prunedSummary(rep audit.Report) string {
	if rep.Pruned == 0 {
		return ""
	}
	return fmt.Sprintf("; entries 1..%d were pruned to segments: check them with --segments DIR", rep.Pruned)
}

func (e *env) auditExportCmd() *cobra.Command {
	var sf serverFlags
	var through uint64
	var to string
	c := &cobra.Command{
		Use:   "export [--through SEQ] [--to DIR]",
		Short: "Have the server export its audit log to signed segment files in its --audit-segment-dir",
		Long: `Ask the server (POST /v1/audit/export, admin, audited) to write the audit
entries it has not exported yet to signed segment files in its
--audit-segment-dir, up to a signed checkpoint: the newest at or before
--through, or by default a new checkpoint of the log's head. Each file is
written to a temporary name, synced and linked into place; nothing is
deleted ('outpost audit prune' does that). With --to DIR the new files are
also downloaded (GET /v1/audit/segments/NAME, up to 64 MiB each), checked
against the SHA-256 the server recorded, and written to DIR, never
overwriting: a copy off the server's host. Exit 5 when the log no longer
matches its checkpoint (nothing is exported) or a download does not match.`,
		Example: "  outpost audit export --server https://outpost.example:8443 --to /mnt/worm/audit",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := e.client(sf)
			if err != nil {
				return err
			}
			var res auditcheck.ExportResult
			if err := cl.Do(c.Context(), "POST", "/v1/audit/export", map[string]any{"through": through}, &res); err != nil {
				return archiveExit(err)
			}
			if to != "" {
				if err := downloadSegments(c.Context(), cl, res, to); err != nil {
					return err
				}
			}
			if sf.asJSON {
				return e.printJSON(res)
			}
			if len(res.Files) == 0 {
				fmt.Fprintf(e.stdout, "Nothing to export: entries up to the checkpoint of seq %d are exported already.\n", res.Anchored)
				return nil
			}
			fmt.Fprintf(e.stdout, "Exported entries %d..%d to %d segment(s), ending at the checkpoint of seq %d: %v\n", res.From, res.To, len(res.Files), res.Anchored, res.Files)
			return nil
		},
	}
	sf.register(c)
	c.Flags().Uint64Var(&through, "through", 0, "end at the newest checkpoint at or before this seq (default: a new checkpoint of the head)")
	c.Flags().StringVar(&to, "to", "", "also copy the new segment files to this local directory (never overwritten)")
	return c
}

// downloadSegments copies the files res names from the server to dir,
// each checked against its recorded SHA-256 first.
func downloadSegments(ctx context.Context, cl *apiclient.Client, res auditcheck.ExportResult, dir string) error {
	if len(res.SHA256) != len(res.Files) {
		return fmt.Errorf("the server named %d files and %d hashes", len(res.Files), len(res.SHA256))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for i, name := range res.Files {
		b, err := cl.Raw(ctx, "GET", "/v1/audit/segments/"+url.PathEscape(name), nil)
		if err != nil {
			return archiveExit(fmt.Errorf("downloading %s (it is exported on the server; copy it from there): %w", name, err))
		}
		sum := sha256.Sum256(b)
		if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(res.SHA256[i])) != 1 {
			return withCode(ExitTampered, fmt.Errorf("downloaded %s does not match the SHA-256 the server recorded for it: not written", name))
		}
		if err := datadir.WriteFileAtomicNew(filepath.Join(dir, name), b, 0o600); err != nil {
			return fmt.Errorf("writing %s (never overwritten): %w", filepath.Join(dir, name), err)
		}
	}
	return nil
}

func (e *env) auditPruneCmd() *cobra.Command {
	var sf serverFlags
	var before uint64
	var olderThan string
	c := &cobra.Command{
		Use:   "prune --before SEQ | --older-than AGE",
		Short: "Have the server delete exported audit entries from its database",
		Long: `Ask the server (POST /v1/audit/prune, admin) to delete from its database the
audit entries its segment files hold: whole segments, from the oldest, that
end before --before and/or whose last entry is older than --older-than (30d,
36h). The server reads each file back and checks it (signature, SHA-256,
chain, link to the entries kept) before it deletes, and records each prune
(audit.prune) in the same transaction. It refuses to delete what no segment
holds: run 'outpost audit export' first. Exit 5 when a segment does not
verify or the database does not chain on from it.`,
		Example: "  outpost audit prune --older-than 30d",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if before == 0 && olderThan == "" {
				return usageError{errors.New("give --before SEQ or --older-than AGE (like 30d): a prune needs a limit")}
			}
			if olderThan != "" {
				if _, err := auditcheck.ParseAge(olderThan); err != nil {
					return usageError{fmt.Errorf("--older-than: %w", err)}
				}
			}
			cl, err := e.client(sf)
			if err != nil {
				return err
			}
			var res auditcheck.PruneResult
			if err := cl.Do(c.Context(), "POST", "/v1/audit/prune", map[string]any{"before": before, "older_than": olderThan}, &res); err != nil {
				return archiveExit(err)
			}
			if sf.asJSON {
				return e.printJSON(res)
			}
			if res.Segments == 0 {
				fmt.Fprintln(e.stdout, "Nothing pruned: no whole exported segment is within the limit.")
				return nil
			}
			fmt.Fprintf(e.stdout, "Pruned entries %d..%d (%d segment(s)) from the database; the segment files keep them.\n", res.From, res.Through, res.Segments)
			return nil
		},
	}
	sf.register(c)
	c.Flags().Uint64Var(&before, "before", 0, "prune only segments that end before this seq")
	c.Flags().StringVar(&olderThan, "older-than", "", "prune only segments whose last entry is older than this (30d, 36h)")
	return c
}

// archiveExit is exit 5 for a log or segment that failed its check, else apiErr's.
func archiveExit(err error) error {
	var ae *apiclient.Error
	if errors.As(err, &ae) && ae.Code == "segment_invalid" {
		return withCode(ExitTampered, err)
	}
	return checkpointExit(err) // audit_log_broken: exit 5 too
}
