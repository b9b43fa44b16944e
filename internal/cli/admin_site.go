package cli

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/outpost-auth/outpost/internal/siteissue"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/site"
	"github.com/spf13/cobra"
)

const adminSiteNote = `
These commands call the server's API (/v1/sites, admin scope): --server URL
(or $OUTPOST_SERVER), --token-file FILE (or $OUTPOST_TOKEN), --cacert FILE.
With --data DIR instead they work on a server data directory directly, for
air-gapped issuing: the same service, the same state (the database, DIR/outpost.db
or --database DSN) and the same audit log; the master key's passphrase is then
needed. Every change is recorded in the audit log (site.policy, site.provision,
site.credential, site.revoke, site.roll).`

func (e *env) adminSiteCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "site",
		Short: "Provision offline site verifiers and issue technicians' credentials",
		Long: `Sites verify technicians' TOTP codes with no network, from a scope key per
epoch: any number of technicians, no per-technician data at the site.
'provision' writes a site's package, 'credential' a technician's otpauth URI or
key file, 'revoke' a revocation list, 'roll' starts a new epoch at once,
'scope' shows or sets a scope's policy, and 'migrate' imports the sites.db of
an earlier version. See docs/sites.md.
` + adminSiteNote,
	}
	c.AddCommand(e.adminSiteScopeCmd(), e.adminSiteProvisionCmd(), e.adminSiteCredentialCmd(), e.adminSiteRevokeCmd(),
		e.adminSiteRollCmd(), e.adminSiteMigrateCmd())
	return c
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// notThere refuses, before anything is issued, to write a file over an
// existing one ("" is no file).
func notThere(path string) error {
	if _, err := os.Lstat(path); path != "" && err == nil {
		return fmt.Errorf("%s exists: it is never overwritten; remove it or choose another name", path)
	}
	return nil
}

// policyFlags are the scope policy flags; change returns the values given.
type policyFlags struct {
	p      site.Policy
	change func() (siteissue.PolicyChange, bool, error)
}

func (f *policyFlags) register(c *cobra.Command) {
	f.p = site.DefaultPolicy()
	fl := c.Flags()
	fl.IntVar(&f.p.Digits, "digits", f.p.Digits, "code length (6 to 10; fixed once credentials exist)")
	fl.DurationVar(&f.p.Period, "period", f.p.Period, "TOTP step (fixed once credentials exist)")
	fl.IntVar(&f.p.Window, "window", f.p.Window, "steps accepted either side of the site's current step")
	fl.DurationVar(&f.p.Overlap, "overlap", f.p.Overlap, "how long before its start and after its end an epoch's credentials still work")
	fl.DurationVar(&f.p.ClockTolerance, "clock-tolerance", f.p.ClockTolerance, "how far a site clock may go back before the site refuses everything")
	fl.IntVar(&f.p.LockoutFailures, "lockout-failures", f.p.LockoutFailures, "failed codes in a row that lock a technician out")
	fl.DurationVar(&f.p.Delay, "delay", f.p.Delay, "wait after a failed code, doubled at each further failure")
	fl.DurationVar(&f.p.Lockout, "lockout", f.p.Lockout, "how long a lockout lasts")
	fl.IntVar(&f.p.SiteFailuresPerHour, "site-failures-per-hour", f.p.SiteFailuresPerHour, "failed codes a site accepts per hour over all technicians together")
	f.change = func() (siteissue.PolicyChange, bool, error) {
		var ch siteissue.PolicyChange
		n := 0
		var bad error
		num := func(name string, v int) *int {
			if !fl.Changed(name) {
				return nil
			}
			n++
			return &v
		}
		secs := func(name string, d time.Duration) *int64 {
			if !fl.Changed(name) {
				return nil
			}
			n++
			if d%time.Second != 0 {
				bad = usageError{fmt.Errorf("--%s %v: give whole seconds", name, d)}
			}
			s := int64(d / time.Second)
			return &s
		}
		ch.Digits, ch.PeriodS, ch.Window = num("digits", f.p.Digits), secs("period", f.p.Period), num("window", f.p.Window)
		ch.OverlapS, ch.ClockToleranceS = secs("overlap", f.p.Overlap), secs("clock-tolerance", f.p.ClockTolerance)
		ch.LockoutFailures, ch.DelayS, ch.LockoutS = num("lockout-failures", f.p.LockoutFailures), secs("delay", f.p.Delay), secs("lockout", f.p.Lockout)
		ch.SiteFailuresPerHour = num("site-failures-per-hour", f.p.SiteFailuresPerHour)
		return ch, n > 0, bad
	}
}

func (e *env) adminSiteScopeCmd() *cobra.Command {
	var f siteFlags
	var scope string
	var pf policyFlags
	c := &cobra.Command{
		Use:   "scope --scope S [policy flags]",
		Short: "Show a scope (epochs, policy, revocations, sites), or set its policy",
		Long: `Show scope S: its current and next epoch, policy, revocation list serial,
revoked technicians and provisioned sites. With policy flags, change those
values (the others keep theirs), creating S if it does not exist; changes
reach sites with the packages provisioned from then on. Digits and period are
fixed once a credential or package exists. A scope is created with the
default policy the first time 'provision' or 'credential' names it.
` + adminSiteNote,
		Example: "  outpost admin site scope --scope north --digits 8 --site-failures-per-hour 10",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ch, changed, err := pf.change()
			if err != nil {
				return err
			}
			return e.withSiteBackend(c, &f, "passphrase-file", func(b siteBackend) error {
				var sc siteissue.Scope
				if changed {
					sc, err = b.UpdatePolicy(c.Context(), scope, ch)
				} else {
					sc, err = b.Scope(c.Context(), scope)
				}
				if err != nil {
					return e.siteFailure(&f, err)
				}
				if f.api.asJSON {
					return e.printJSON(sc)
				}
				fmt.Fprintf(e.stdout, "scope:          %s (created %s)\ncurrent epoch:  %d, %s to %s\nnext epoch:     %d, %s to %s\n",
					sc.ID, stamp(sc.Created), sc.Current.N, stamp(sc.Current.Start), stamp(sc.Current.End), sc.Next.N, stamp(sc.Next.Start), stamp(sc.Next.End))
				fmt.Fprintf(e.stdout, "policy:         %s\npackages:       serial %d, sites %v\nrevocation:     list serial %d, %d revoked\n",
					sc.PolicyJSON, sc.PackageSerial, sc.Sites, sc.RevocationSerial, len(sc.Revoked))
				for _, r := range sc.Rolls {
					fmt.Fprintf(e.stdout, "emergency roll: %s\n", stamp(r))
				}
				return nil
			})
		},
	}
	f.register(c, "passphrase-file")
	c.Flags().StringVar(&scope, "scope", "", "scope id (required)")
	pf.register(c)
	_ = c.MarkFlagRequired("scope")
	return c
}

func (e *env) adminSiteProvisionCmd() *cobra.Command {
	var f siteFlags
	var scope, siteID, out, pkgPassFile string
	c := &cobra.Command{
		Use:   "provision --scope S --site ID --out FILE --passphrase-file F",
		Short: "Write a site's provisioning package (scope keys sealed under a passphrase, signed)",
		Long: `Write the provisioning package of site ID in scope S: the scope keys of the
current and next epoch, sealed with argon2id and AES-256-GCM under the
passphrase in --passphrase-file (else a prompt), the scope's policy and
current revocation list, signed with the server's key and bound to ID.
Technicians need nothing in it: any credential of the scope works there.

--passphrase-file is the PACKAGE's passphrase (give it to the site's
installer); it travels to the server only inside the TLS request and is never
logged or stored. With --data, the master key's passphrase comes from
--master-passphrase-file, else $OUTPOST_PASSPHRASE, else a prompt, and the two
must differ. FILE is never overwritten. Install it with 'outpost site init'.
` + adminSiteNote,
		Example: "  outpost admin site provision --scope north --site cab-17 --out cab-17.pkg --passphrase-file cab-17.pass",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := site.CheckName("site", siteID); err != nil {
				return usageError{err}
			}
			if err := site.CheckName("scope", scope); err != nil {
				return usageError{err}
			}
			newPass := passphraseSource{file: pkgPassFile, prompt: "Passphrase for the package " + out}
			return e.withSecretOut(c, &f, "master-passphrase-file", out, newPass, func(b siteBackend, pass []byte) error {
				p, err := b.Provision(c.Context(), scope, siteID, pass)
				if err != nil {
					return e.siteFailure(&f, err)
				}
				if err := writeNewAs(out, p.Package, "the package", "out"); err != nil {
					return err
				}
				size := len(p.Package)
				if f.api.asJSON {
					p.Package = nil
					return e.printJSON(struct {
						siteissue.Provisioned
						File  string `json:"file"`
						Bytes int    `json:"bytes"`
					}{p, out, size})
				}
				fmt.Fprintf(e.stdout, "Wrote %s (%d bytes) for site %s in scope %s: package serial %d, revocation list serial %d\n",
					out, size, siteID, scope, p.Serial, p.RevocationSerial)
				for _, ep := range p.Epochs {
					fmt.Fprintf(e.stdout, "  epoch %d: %s to %s\n", ep.N, stamp(ep.Start), stamp(ep.End))
				}
				fmt.Fprintf(e.stdout, "Install it at the site with:\n  outpost site init --data SDIR --site %s --server-key server.pub --passphrase-file F %s\n(server.pub from 'outpost keys export-public', key id %s)\n",
					siteID, out, p.KeyID)
				return nil
			})
		},
	}
	f.register(c, "master-passphrase-file")
	c.Flags().StringVar(&pkgPassFile, "passphrase-file", "", "file holding the package's passphrase (else a prompt)")
	c.Flags().StringVar(&scope, "scope", "", "scope id (required)")
	c.Flags().StringVar(&siteID, "site", "", "site id the package is bound to (required)")
	c.Flags().StringVar(&out, "out", "", "package file to write (required; never overwritten)")
	for _, fl := range []string{"scope", "site", "out"} {
		_ = c.MarkFlagRequired(fl)
	}
	return c
}

func (e *env) adminSiteCredentialCmd() *cobra.Command {
	var f siteFlags
	var scope, tech, epoch, keyFile, exportPassFile string
	var showQR, reinstate bool
	c := &cobra.Command{
		Use:   "credential --scope S --tech T [--epoch current|next|N] [--qr | --key-file FILE]",
		Short: "Give a technician's TOTP credential for a scope: otpauth URI, QR code or encrypted key file",
		Long: `Derive technician T's TOTP seed for scope S and one epoch (the current one
unless --epoch says next or a number) and print it as an otpauth URI for any
authenticator app (--qr draws it as a QR code; --json prints
{"otpauth_uri": ...}), or with --key-file write it sealed under a passphrase
(--export-passphrase-file, else a prompt) like 'outpost keys export' does, for
a USB drive; 'outpost keys inspect FILE --qr' opens it. The authenticator
entry is labelled "Outpost S epoch N" so that a technician can hold the
current and the next epoch's credentials side by side.

Technicians are not registered anywhere: any id is valid, and the site needs
nothing new. A revoked technician gets a credential only for an epoch after
the revoked ones, with --reinstate.
` + adminSiteNote,
		Example: "  outpost admin site credential --scope north --tech tech-042 --epoch next --qr",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			sel, err := siteissue.ParseEpochSel(epoch)
			if err != nil {
				return usageError{err}
			}
			if err := site.CheckTechID(tech); err != nil {
				return usageError{err}
			}
			if keyFile != "" && showQR {
				return usageError{errors.New("--qr and --key-file exclude each other (open a key file with 'outpost keys inspect FILE --qr')")}
			}
			if err := notThere(keyFile); err != nil {
				return err
			}
			return e.withSiteBackend(c, &f, "passphrase-file", func(b siteBackend) error {
				req := siteissue.CredentialRequest{Scope: scope, Tech: tech, Epoch: sel, Reinstate: reinstate}
				if keyFile != "" {
					if req.Passphrase, err = (passphraseSource{file: exportPassFile, prompt: "Passphrase for " + keyFile}).read(true); err != nil {
						return err
					}
				}
				cred, err := b.Credential(c.Context(), req)
				if err != nil {
					return e.siteFailure(&f, err)
				}
				info := map[string]any{"scope": scope, "tech": tech, "epoch": cred.Epoch,
					"valid_from": cred.ValidFrom, "valid_until": cred.ValidUntil, "fingerprint": cred.Fingerprint}
				if keyFile != "" {
					if err := writeNewAs(keyFile, cred.KeyFile, "key file", "key-file"); err != nil {
						return err
					}
					info["key_file"] = keyFile
					if f.api.asJSON {
						return e.printJSON(info)
					}
					fmt.Fprintf(e.stdout, "Wrote %s for %s in scope %s, epoch %d (%s to %s), fingerprint %s\n",
						keyFile, tech, scope, cred.Epoch, stamp(cred.ValidFrom), stamp(cred.ValidUntil), cred.Fingerprint)
					return nil
				}
				uri := cred.OTPAuthURI
				if f.api.asJSON {
					info["otpauth_uri"] = uri
					return e.printJSON(info)
				}
				fmt.Fprintf(e.stderr, "%s in scope %s, epoch %d (%s to %s), fingerprint %s\n",
					tech, scope, cred.Epoch, stamp(cred.ValidFrom), stamp(cred.ValidUntil), cred.Fingerprint)
				fmt.Fprintln(e.stdout, uri)
				if showQR {
					t, err := qr.Terminal(uri)
					if err != nil {
						return err
					}
					fmt.Fprint(e.stdout, t)
				}
				return nil
			})
		},
	}
	f.register(c, "passphrase-file")
	c.Flags().StringVar(&scope, "scope", "", "scope id (required)")
	c.Flags().StringVar(&tech, "tech", "", "technician id (required; 1 to 128 printable ASCII characters)")
	c.Flags().StringVar(&epoch, "epoch", "current", "epoch: current, next or a number")
	c.Flags().BoolVar(&showQR, "qr", false, "also draw the otpauth URI as a QR code")
	c.Flags().StringVar(&keyFile, "key-file", "", "write a passphrase-encrypted key file instead of printing the URI (never overwritten)")
	c.Flags().StringVar(&exportPassFile, "export-passphrase-file", "", "file holding the key file's passphrase (else a prompt)")
	c.Flags().BoolVar(&reinstate, "reinstate", false, "issue a credential to a revoked technician for an epoch after the revoked ones")
	_ = c.MarkFlagRequired("scope")
	_ = c.MarkFlagRequired("tech")
	return c
}

func (e *env) adminSiteRevokeCmd() *cobra.Command {
	var f siteFlags
	var scope, out, reason string
	var techs, undo []string
	c := &cobra.Command{
		Use:   "revoke --scope S --tech T [--tech T2 ...] [--undo T3] --out LIST",
		Short: "Revoke technicians in a scope and write the new signed revocation list",
		Long: `Revoke every credential of the given technicians in scope S (for every epoch
a credential may exist for), lift revocations with --undo, and write the
scope's next revocation list (serial + 1) to LIST, replacing it. Deliver LIST
to the scope's sites ('outpost site update --data SDIR LIST'); new packages
carry it too. A site refuses an older list. With neither --tech nor --undo,
LIST is the current list. Until a site has the list it still accepts the
revoked technicians' codes, until the epochs it holds end (docs/sites.md).
` + adminSiteNote,
		Example: "  outpost admin site revoke --scope north --tech tech-042 --reason 'lost phone' --out north.revocations",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return e.withSiteBackend(c, &f, "passphrase-file", func(b siteBackend) error {
				r, err := b.Revoke(c.Context(), scope, techs, undo, reason)
				if err != nil {
					return e.siteFailure(&f, err)
				}
				if err := datadir.WriteFileAtomic(out, r.List, 0o644); err != nil {
					return fmt.Errorf("writing the revocation list: %w", err)
				}
				if f.api.asJSON {
					r.List = nil
					return e.printJSON(struct {
						siteissue.RevocationResult
						File string `json:"file"`
					}{r, out})
				}
				fmt.Fprintf(e.stdout, "Wrote %s: revocation list serial %d of scope %s, %d technician(s) listed", out, r.Serial, scope, r.Entries)
				if len(r.Added) > 0 {
					fmt.Fprintf(e.stdout, "; revoked %v (every epoch up to %d)", r.Added, r.Through)
				}
				if len(r.Removed) > 0 {
					fmt.Fprintf(e.stdout, "; lifted %v", r.Removed)
				}
				fmt.Fprintf(e.stdout, "\nDeliver it to every site of the scope: outpost site update --data SDIR %s\n", out)
				return nil
			})
		},
	}
	f.register(c, "passphrase-file")
	c.Flags().StringVar(&scope, "scope", "", "scope id (required)")
	c.Flags().StringArrayVar(&techs, "tech", nil, "technician to revoke (repeatable)")
	c.Flags().StringArrayVar(&undo, "undo", nil, "technician whose revocation to lift (repeatable)")
	c.Flags().StringVar(&reason, "reason", "", "why (kept by the issuer and its audit log, not put in the list)")
	c.Flags().StringVar(&out, "out", "", "revocation list file to write (required; replaced)")
	_ = c.MarkFlagRequired("scope")
	_ = c.MarkFlagRequired("out")
	return c
}

func (e *env) adminSiteRollCmd() *cobra.Command {
	var f siteFlags
	var scope string
	c := &cobra.Command{
		Use:   "roll --scope S",
		Short: "Emergency epoch roll: end the scope's current epoch now (a site or credential was compromised)",
		Long: `End scope S's current epoch now and start a new one numbered above every
epoch ever handed out, so that the keys a stolen site held and every
credential issued so far stop working at each site that installs a package
provisioned after the roll. Then provision every site of the scope again
(they are listed) and give technicians credentials for the new epoch. Sites
that do not get a new package keep accepting their old epochs until those end.
` + adminSiteNote,
		Example: "  outpost admin site roll --scope north",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return e.withSiteBackend(c, &f, "passphrase-file", func(b siteBackend) error {
				r, err := b.Roll(c.Context(), scope)
				if err != nil {
					return e.siteFailure(&f, err)
				}
				if f.api.asJSON {
					return e.printJSON(r)
				}
				fmt.Fprintf(e.stdout, "Scope %s rolled: epoch %d ended at %s; epoch %d runs from %s to %s (next: %d)\n",
					scope, r.Previous.N, stamp(r.Previous.End), r.Current.N, stamp(r.Current.Start), stamp(r.Current.End), r.Next.N)
				fmt.Fprintf(e.stdout, "Provision these sites again: %v\nand issue technicians credentials for epoch %d ('outpost admin site credential --epoch current').\n", r.Sites, r.Current.N)
				return nil
			})
		},
	}
	f.register(c, "passphrase-file")
	c.Flags().StringVar(&scope, "scope", "", "scope id (required)")
	_ = c.MarkFlagRequired("scope")
	return c
}

func (e *env) adminSiteMigrateCmd() *cobra.Command {
	var dir, database string
	var asJSON bool
	c := &cobra.Command{
		Use:   "migrate --data DIR [--database DSN]",
		Short: "Import the sites.db of an earlier version into the server's database (once)",
		Long: `Earlier versions kept site state (scopes, epoch schedules, revocations,
provisioned sites) in DIR/sites.db, apart from the server's database. This
imports it into the database (DIR/outpost.db, or --database DSN) in one
transaction, for the default realm, with a site.migrate audit entry, then
renames the file DIR/sites.db.migrated. 'outpost serve' and the --data mode of
the other site commands do the same on their own; running it again does
nothing. It needs no master key. A scope that already exists in the
database with other values stops the import (nothing is imported; see
docs/sites.md).`,
		Example: "  outpost admin site migrate --data ./outpost-data",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			st, err := e.openLocalStore(c.Context(), dir, database)
			if err != nil {
				return err
			}
			defer st.Close()
			m, found, err := siteissue.MigrateLegacy(c.Context(), st.(store.SiteStore), localActor(), dir, e.now())
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(map[string]any{"found": found, "migration": m})
			}
			if !found {
				fmt.Fprintf(e.stdout, "No %s in %s: nothing to import.\n", siteissue.LegacyFile, dir)
				return nil
			}
			fmt.Fprintf(e.stdout, "Imported %s: scopes %v (%d new, %d revocations, %d packages); renamed it %s\n",
				m.File, m.Scopes, len(m.Imported), m.Revocations, m.Packages, m.RenamedTo)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "data", "", "server data directory (required)")
	c.Flags().StringVar(&database, "database", "", "the server's database, a SQLite path or postgres://... (default DIR/outpost.db)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("data")
	return c
}

// rawJSON prints pre-encoded JSON as is.
type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }
