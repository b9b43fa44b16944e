package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/site"
	"github.com/spf13/cobra"
)

func (e *env) siteCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "site",
		Short: "Verify technicians' codes at a site with no network (a data directory with an embedded database)",
		Long: `A site verifies the TOTP codes of any number of technicians offline, from the
scope keys in its provisioning package: 'init' installs the first package,
'verify' checks a code (exit 0 accepted, 3 refused, 4 locked out), 'update'
installs a newer revocation list or package, 'log' prints the signed,
hash-chained log of every decision, 'status' what is installed.
See docs/sites.md.`,
	}
	c.AddCommand(e.siteInitCmd(), e.siteVerifyCmd(), e.siteUpdateCmd(), e.siteLogCmd(), e.siteStatusCmd())
	return c
}

// siteErr gives site errors their documented exit codes.
func siteErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, site.ErrLocked):
		return withCode(ExitLocked, err)
	case errors.Is(err, site.ErrRefused), errors.Is(err, keys.ErrWrongPassphrase):
		return withCode(ExitRefused, err)
	case errors.Is(err, artifact.ErrBadSig), errors.Is(err, site.ErrCorrupt):
		return withCode(ExitTampered, err)
	case errors.Is(err, site.ErrBadID):
		return usageError{err}
	}
	return err
}

func readArtifactFile(path string) ([]byte, error) { return readInput(path, site.MaxPackageSize) }

func (e *env) siteInitCmd() *cobra.Command {
	var dir, siteID, serverKey, passFile string
	var asJSON bool
	c := &cobra.Command{
		Use:   "init --data SDIR --site ID --server-key FILE [--passphrase-file F] PACKAGE",
		Short: "Create a site data directory from its provisioning package",
		Long: `Check PACKAGE completely — signed by the server key in --server-key (from
'outpost keys export-public'), bound to site ID, not over at this machine's
time, and openable with its passphrase (--passphrase-file, else a prompt) —
and only then create SDIR (mode 0700) with the site database (site.db) and
the site's own Ed25519 log key (device.key, mode 0600). Nothing is written if
any check fails. Print the log key's id: register it with the server so that
the site's log can be checked when it comes back.`,
		Example: "  outpost site init --data /var/lib/outpost-site --site cab-17 --server-key server.pub --passphrase-file cab-17.pass cab-17.pkg",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := site.CheckName("site", siteID); err != nil {
				return usageError{err}
			}
			pemData, err := datadir.ReadFileLimit(serverKey, 16<<10)
			if err != nil {
				return fmt.Errorf("reading --server-key: %w", err)
			}
			pub, err := keys.ParsePublicPEM(pemData)
			if err != nil {
				return usageError{err}
			}
			pkg, err := readArtifactFile(args[0])
			if err != nil {
				return err
			}
			pass, err := passphraseSource{file: passFile, prompt: "Passphrase for " + args[0]}.read(false)
			if err != nil {
				return err
			}
			s, err := site.Init(c.Context(), dir, site.InitConfig{SiteID: siteID, ServerKey: pub, Package: pkg, Passphrase: pass})
			if err != nil {
				return siteErr(err)
			}
			defer s.Close()
			st, err := s.Status(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(st)
			}
			fmt.Fprintf(e.stdout, "Site %s (scope %s) initialised in %s\n", st.Site, st.Scope, dir)
			printEpochs(e.stdout, st.Epochs)
			fmt.Fprintf(e.stdout, "Accepts codes until %s unless updated. Revocation list serial %d (%d revoked).\nSite log key: %s (register it with the server)\n",
				stamp(st.AcceptsUntil), st.RevocationSerial, st.Revoked, st.DeviceKey)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "data", "", "site data directory to create (required)")
	c.Flags().StringVar(&siteID, "site", "", "this site's id; the package must be bound to it (required)")
	c.Flags().StringVar(&serverKey, "server-key", "", "the server's public key PEM (required)")
	c.Flags().StringVar(&passFile, "passphrase-file", "", "file holding the package's passphrase (else a prompt)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	for _, f := range []string{"data", "site", "server-key"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}

func printEpochs(w io.Writer, es []site.Epoch) {
	for _, ep := range es {
		fmt.Fprintf(w, "  epoch %d: %s to %s\n", ep.N, stamp(ep.Start), stamp(ep.End))
	}
}

func (e *env) siteVerifyCmd() *cobra.Command {
	var dir, tech, code string
	var asJSON bool
	c := &cobra.Command{
		Use:   "verify --data SDIR --tech T --code C",
		Short: "Check a technician's code at this site (exit 0 accepted, 3 refused, 4 locked out)",
		Long: `Check technician T's TOTP code C against the site's scope keys at this
machine's time and record the decision in the site's log. Any technician id
the administrator has issued works; no list of technicians exists.
With --code - the code is read from standard input (keeps it out of the
process list).

Exit codes: 0 accepted; 3 refused (wrong, malformed or replayed code, revoked
technician, clock set back, no open epoch); 4 locked out (too many failed
codes for this technician or for the whole site; the message says until
when); 2 bad arguments.`,
		Example: "  outpost site verify --data /var/lib/outpost-site --tech tech-042 --code 492039",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if code == "-" {
				line, err := bufio.NewReader(io.LimitReader(e.stdin, 64)).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("reading the code from standard input: %w", err)
				}
				code = strings.TrimRight(line, "\r\n")
			}
			if err := site.CheckTechID(tech); err != nil {
				return usageError{err}
			}
			return withSite(c.Context(), dir, func(s *site.Site) error {
				d, verr := s.Verify(c.Context(), tech, code)
				if verr != nil && d.Time.IsZero() { // not a decision: an error before or while deciding
					return siteErr(verr)
				}
				if asJSON {
					out := struct {
						site.Decision
						Error string `json:"error,omitempty"`
					}{Decision: d}
					if verr != nil {
						out.Error = verr.Error()
					}
					if err := e.printJSON(out); err != nil {
						return err
					}
				} else if verr == nil {
					fmt.Fprintf(e.stdout, "accepted: %s (epoch %d, step %d, log entry %d)\n", tech, d.Epoch, d.Step, d.LogSeq)
				}
				return siteErr(verr)
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "site data directory (required)")
	c.Flags().StringVar(&tech, "tech", "", "technician id (required)")
	c.Flags().StringVar(&code, "code", "", "the code, or - to read it from standard input (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the decision as JSON")
	for _, f := range []string{"data", "tech", "code"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}

func (e *env) siteUpdateCmd() *cobra.Command {
	var dir, passFile string
	var asJSON bool
	c := &cobra.Command{
		Use:   "update --data SDIR [--passphrase-file F] FILE",
		Short: "Install a newer revocation list or provisioning package",
		Long: `Install FILE, a revocation list ('outpost admin site revoke') or a newer
provisioning package ('outpost admin site provision'). A list must be for this
site's scope and newer (higher serial) than the installed one: an older list
never replaces a newer one. A package must be bound to this site, for its
scope, newer than the installed one and not over; it replaces the epochs,
keys and policy, and its revocation list if that is newer. The package's
passphrase comes from --passphrase-file, else a prompt (lists need none).
A refused file changes nothing.`,
		Example: "  outpost site update --data /var/lib/outpost-site north.revocations",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			data, err := readArtifactFile(args[0])
			if err != nil {
				return err
			}
			return withSite(c.Context(), dir, func(s *site.Site) error {
				u, err := s.Update(c.Context(), data, func() ([]byte, error) {
					return passphraseSource{file: passFile, prompt: "Passphrase for " + args[0]}.read(false)
				})
				if err != nil {
					return siteErr(err)
				}
				if asJSON {
					return e.printJSON(u)
				}
				if u.Type == site.TypeRevocationList {
					fmt.Fprintf(e.stdout, "Installed revocation list serial %d (%d revoked)\n", u.Serial, u.Revoked)
					return nil
				}
				fmt.Fprintf(e.stdout, "Installed package serial %d; revocation list serial %d (%d revoked)\n", u.Serial, u.RevocationSerial, u.Revoked)
				printEpochs(e.stdout, u.Epochs)
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "site data directory (required)")
	c.Flags().StringVar(&passFile, "passphrase-file", "", "file holding a package's passphrase (else a prompt)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("data")
	return c
}

func (e *env) siteLogCmd() *cobra.Command {
	var dir string
	var after uint64
	var limit int
	var asJSON bool
	c := &cobra.Command{
		Use:   "log --data SDIR [--after N] [--limit N] [--json]",
		Short: "Check and print the site's signed, hash-chained log of decisions",
		Long: `Verify the whole log (sequence, hash chain and every signature against the
site's log key), then print the entries after --after. --json prints them with
the site's public key, the form to carry to the server by file. A log that
fails the check exits 5 and names the first bad entry (entries are still
printed up to it). The log never holds a code or a key.`,
		Example: "  outpost site log --data /var/lib/outpost-site --json > cab-17.log.json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return withSite(c.Context(), dir, func(s *site.Site) error {
				bad, verr := s.VerifyLog(c.Context())
				entries, err := s.Log(c.Context(), after, limit)
				if err != nil {
					return err
				}
				if verr != nil {
					for i, en := range entries {
						if en.Seq >= bad {
							entries = entries[:i]
							break
						}
					}
				}
				st, err := s.Status(c.Context())
				if err != nil {
					return err
				}
				if asJSON {
					if err := e.printJSON(map[string]any{"site": st.Site, "scope": st.Scope, "device_key": st.DeviceKey,
						"device_public_key": []byte(s.DevicePublicKey()), "verified": verr == nil, "entries": entries}); err != nil {
						return err
					}
				} else {
					for _, en := range entries {
						fmt.Fprintf(e.stdout, "%6d  %s  %-20s %-24s %s\n", en.Seq, en.Time.Format("2006-01-02T15:04:05.000000Z"), en.Kind, en.Subject, en.Data)
					}
					if verr == nil {
						fmt.Fprintf(e.stdout, "log verified: %d entries, signed by %s\n", st.LogEntries, st.DeviceKey)
					}
				}
				if verr != nil {
					return withCode(ExitTampered, fmt.Errorf("the site log fails its check at entry %d: %w", bad, verr))
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "site data directory (required)")
	c.Flags().Uint64Var(&after, "after", 0, "print entries after this sequence number")
	c.Flags().IntVar(&limit, "limit", 10000, "print at most this many entries")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts and shipping")
	_ = c.MarkFlagRequired("data")
	return c
}

func (e *env) siteStatusCmd() *cobra.Command {
	var dir string
	var asJSON bool
	c := &cobra.Command{
		Use:     "status --data SDIR",
		Short:   "Show what a site has installed: scope, epochs, serials, clock, log",
		Example: "  outpost site status --data /var/lib/outpost-site",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return withSite(c.Context(), dir, func(s *site.Site) error {
				st, err := s.Status(c.Context())
				if err != nil {
					return siteErr(err)
				}
				pol, _ := site.MarshalPolicy(st.Policy)
				if asJSON {
					return e.printJSON(struct {
						site.Status
						Policy rawJSON `json:"policy"`
					}{st, rawJSON(pol)})
				}
				fmt.Fprintf(e.stdout, "site:        %s (scope %s)\nserver key:  %s\nlog key:     %s (%d entries)\npackage:     serial %d, installed %s\n",
					st.Site, st.Scope, st.ServerKey, st.DeviceKey, st.LogEntries, st.PackageSerial, stamp(st.Installed))
				printEpochs(e.stdout, st.Epochs)
				fmt.Fprintf(e.stdout, "accepts:     until %s unless updated\nrevocation:  list serial %d, %d revoked\npolicy:      %s\nclock:       high-water mark %s\ntechnicians: %d seen\n",
					stamp(st.AcceptsUntil), st.RevocationSerial, st.Revoked, pol, stamp(st.ClockHighWater), st.Technicians)
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "site data directory (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("data")
	return c
}

// withSite opens the site store in dir for one command, runs fn on it and
// closes it.
func withSite(ctx context.Context, dir string, fn func(s *site.Site) error) error {
	s, err := site.Open(ctx, dir)
	if err != nil {
		return siteErr(err)
	}
	defer s.Close()
	return fn(s)
}
