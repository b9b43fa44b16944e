package cli

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/apiclient"
	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/spf13/cobra"
)

// checkpointFlags are the flags of 'outpost audit verify' that anchor the check.
type checkpointFlags struct {
	paths      []string      // --checkpoint: files or directories
	serverKeys []string      // --server-key: PEM public keys
	passFile   string        // to derive the key from --data instead
	ring       artifact.Keys // the keys, once read
}

func (f *checkpointFlags) register(c *cobra.Command) {
	c.Flags().StringArrayVar(&f.paths, "checkpoint", nil, "signed checkpoint FILE, or a DIR of *.json checkpoints, the log must still hold (repeatable)")
	c.Flags().StringArrayVar(&f.serverKeys, "server-key", nil, "the server's signing public key (PEM from 'outpost keys export-public'); else derived from --data (repeatable)")
	c.Flags().StringVar(&f.passFile, "passphrase-file", "", "master key passphrase file, to derive the server key from --data (else $"+PassphraseEnv+", else a prompt)")
}

// namedCheckpoint is a verified checkpoint and the file it came from.
type namedCheckpoint struct {
	auditcheck.Signed
	file string
}

// load verifies every checkpoint the flags name with the server's key.
func (f *checkpointFlags) load(e *env, dataDir string) ([]namedCheckpoint, error) {
	if len(f.paths) == 0 {
		return nil, nil
	}
	ring, err := f.keyring(e, dataDir, "--checkpoint")
	if err != nil {
		return nil, err
	}
	var out []namedCheckpoint
	for _, p := range f.paths {
		files, err := checkpointFiles(p)
		if err != nil {
			return nil, err
		}
		for _, file := range files {
			data, err := datadir.ReadFileLimit(file, auditcheck.MaxSize)
			if err != nil {
				return nil, fmt.Errorf("reading checkpoint: %w", err)
			}
			s, err := auditcheck.Open(data, ring)
			if err != nil {
				return nil, withCode(ExitTampered, fmt.Errorf("checkpoint %s: %w", file, err))
			}
			out = append(out, namedCheckpoint{Signed: s, file: file})
		}
	}
	return out, nil
}

// keyring is the --server-key files, or the signing key derived from the
// data directory; flag names what needs it.
func (f *checkpointFlags) keyring(e *env, dataDir, flag string) (artifact.Keys, error) {
	if f.ring != nil {
		return f.ring, nil
	}
	var ring artifact.Keys
	for _, path := range f.serverKeys {
		pem, err := datadir.ReadFileLimit(path, 16<<10)
		if err != nil {
			return nil, fmt.Errorf("reading --server-key: %w", err)
		}
		pub, err := keys.ParsePublicPEM(pem)
		if err != nil {
			return nil, usageError{fmt.Errorf("--server-key %s: %w", path, err)}
		}
		ring = append(ring, pub)
	}
	if len(ring) > 0 {
		f.ring = ring
		return ring, nil
	}
	if dataDir == "" {
		return nil, usageError{errors.New(flag + " needs the server's public key: pass --server-key FILE, or --data DIR holding master.key")}
	}
	m, err := e.openMaster(dataFlags{dir: dataDir, passphraseFile: f.passFile})
	if err != nil {
		return nil, err
	}
	f.ring = artifact.Keys{m.Signer(0).Public}
	return f.ring, nil
}

// checkpointFiles is path itself, or the *.json files of a directory in name order.
func checkpointFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--checkpoint: %w", err)
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("--checkpoint: %w", err)
	}
	var files []string
	for _, d := range ents {
		if n := d.Name(); d.Type().IsRegular() && strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") {
			files = append(files, filepath.Join(path, n))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("--checkpoint %s: the directory holds no *.json checkpoint", path)
	}
	return files, nil
}

// checkpointSummary says what the checkpoints vouch for, or which one the log contradicts.
func checkpointSummary(rep audit.Report, cps []namedCheckpoint) string {
	if len(cps) == 0 {
		return ""
	}
	if !rep.OK {
		if c := contradicted(rep, cps); c != nil {
			return fmt.Sprintf("; it contradicts checkpoint %s (seq %d, signed %s): the log was rewritten or cut after that checkpoint was taken",
				c.file, c.Seq, c.Header.IssuedAt.Format(time.RFC3339))
		}
		return ""
	}
	newest := slices.MaxFunc(cps, func(a, b namedCheckpoint) int { return cmp.Compare(a.Seq, b.Seq) })
	return fmt.Sprintf("; %d checkpoint(s) hold, the newest (%s, signed %s) vouches for entries 1..%d; %d later entries are not anchored yet",
		len(cps), newest.file, newest.Header.IssuedAt.Format(time.RFC3339), newest.Seq, rep.Entries-newest.Seq)
}

// contradicted is the first checkpoint at or after the break: the one the log contradicts.
func contradicted(rep audit.Report, cps []namedCheckpoint) *namedCheckpoint {
	var hit *namedCheckpoint
	for i, c := range cps {
		if c.Seq >= rep.BrokenAt && (hit == nil || c.Seq < hit.Seq) {
			hit = &cps[i]
		}
	}
	return hit
}

func (e *env) adminAuditCheckpointCmd() *cobra.Command {
	var sf serverFlags
	var out string
	var latest bool
	c := &cobra.Command{
		Use:   "checkpoint --out FILE [--latest]",
		Short: "Have the server sign a checkpoint of the audit log's head, and save it",
		Long: `Ask the server to check its audit log since its last checkpoint and sign the
current head (POST /v1/audit/checkpoints, audited), or with --latest fetch the
last checkpoint it signed (GET /v1/audit/checkpoint). FILE is never
overwritten. Keep it away from the server (WORM storage, another host): later,
'outpost audit verify --checkpoint FILE' detects a log rewritten or cut short
before it. Exit 5 when the server finds its log no longer matches.`,
		Example: "  outpost admin audit checkpoint --out /mnt/worm/audit-$(date +%s).json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := e.client(sf)
			if err != nil {
				return err
			}
			method, path := "POST", "/v1/audit/checkpoints"
			if latest {
				method, path = "GET", "/v1/audit/checkpoint"
			}
			data, err := cl.Raw(c.Context(), method, path, nil)
			if err != nil {
				return checkpointExit(err)
			}
			if err := datadir.WriteFileAtomicNew(out, data, 0o600); err != nil {
				return fmt.Errorf("writing %s: %w (it is never overwritten)", out, err)
			}
			if sf.asJSON {
				return e.printJSON(map[string]any{"file": out, "bytes": len(data)})
			}
			fmt.Fprintf(e.stdout, "Wrote %s. Check the log against it with: outpost audit verify --data DIR --checkpoint %s\n", out, out)
			return nil
		},
	}
	sf.register(c)
	c.Flags().StringVar(&out, "out", "", "file to write the signed checkpoint to (required; never overwritten)")
	c.Flags().BoolVar(&latest, "latest", false, "fetch the last checkpoint the server signed instead of a new one")
	_ = c.MarkFlagRequired("out")
	return c
}

func checkpointExit(err error) error {
	var ae *apiclient.Error
	if errors.As(err, &ae) && ae.Code == "audit_log_broken" {
		return withCode(ExitTampered, err)
	}
	return apiErr(err)
}
