package cli

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/outpost-auth/outpost/internal/ca"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/spf13/cobra"
)

// The device CA (internal/ca, docs/onboarding.md): create it, export its
// root; and the admin mirror of the onboarding API.

func (e *env) caCmd() *cobra.Command {
	c := &cobra.Command{Use: "ca", Short: "The device CA: create it, export the root devices trust"}
	var df dataFlags
	var dsn, out string
	// open opens DIR's database (or --database) as a CA store.
	open := func(c *cobra.Command, dir string) (store.Store, store.CAStore, error) {
		d := dsn
		if d == "" {
			d = filepath.Join(dir, datadir.DatabaseFile)
		}
		st, err := store.Open(c.Context(), d, store.WithClock(e.now))
		if err != nil {
			return nil, nil, err
		}
		cs, ok := st.(store.CAStore)
		if !ok {
			st.Close()
			return nil, nil, errors.New("this database cannot hold a CA")
		}
		return st, cs, nil
	}
	in := &cobra.Command{
		Use:   "init --data DIR [--database DSN]",
		Short: "Create the device CA (a root and an issuing key) if there is none",
		Long: `Create the device CA in the database: a root and an issuing CA, ECDSA P-256
keys from crypto/rand, their private keys sealed under the master key. 'outpost
serve' does the same at its first start; running it again changes nothing.`,
		Example: "  outpost ca init --data ./outpost-data",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			m, err := e.openMaster(df)
			if err != nil {
				return err
			}
			st, cs, err := open(c, df.dir)
			if err != nil {
				return err
			}
			defer st.Close()
			a, created, err := ca.LoadOrCreate(c.Context(), cs, m, "cli", e.now())
			if err != nil {
				return err
			}
			verb := "exists"
			if created {
				verb = "created"
			}
			fmt.Fprintf(e.stdout, "device CA %s: root SHA-256 %s\n", verb, ca.Fingerprint(a.Root.Raw))
			return nil
		},
	}
	df.register(in)
	in.Flags().StringVar(&dsn, "database", "", "database DSN (default DIR/outpost.db)")

	var dir string
	ex := &cobra.Command{
		Use:   "export-root --data DIR [--out FILE]",
		Short: "Write the device root CA (PEM): the one file devices trust",
		Long: `Write the device CA's root certificate in PEM to --out (or standard output).
Give it to devices (outpost device enrol --root FILE; curl --cacert FILE). It is
no secret and needs no passphrase. A running server serves it at GET /v1/ca/root.`,
		Example: "  outpost ca export-root --data ./outpost-data --out root.pem",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if dir == "" && dsn == "" {
				return usageError{errors.New("pass --data DIR or --database DSN")}
			}
			st, cs, err := open(c, dir)
			if err != nil {
				return err
			}
			defer st.Close()
			pemRoot, err := ca.StoredRootPEM(c.Context(), cs)
			if err != nil {
				return err
			}
			if out == "" {
				_, err = e.stdout.Write(pemRoot)
				return err
			}
			if err := os.WriteFile(out, pemRoot, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "device root CA written to %s\n", out)
			return nil
		},
	}
	ex.Flags().StringVar(&dir, "data", "", "server data directory")
	ex.Flags().StringVar(&dsn, "database", "", "database DSN (default DIR/outpost.db)")
	ex.Flags().StringVar(&out, "out", "", "write to FILE instead of standard output")
	c.AddCommand(in, ex)
	return c
}

// adminOnboardedCmd mirrors /v1/ca/devices: devices onboarded with a
// certificate (the field devices of sync are 'outpost admin device').
func (e *env) adminOnboardedCmd() *cobra.Command {
	c := &cobra.Command{Use: "onboarded", Short: "List, inspect and revoke onboarded devices (certificates over mutual TLS)"}
	var after, reason string
	var limit int
	c.AddCommand(
		e.apiCmd(apiCall{use: "list", short: "List onboarded devices (paged by serial)", example: "  outpost admin onboarded list --limit 50",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&after, "after", "", "list devices after this serial")
				c.Flags().IntVar(&limit, "limit", 100, "page size (1 to 1000)")
			},
			call: func(a []string) (string, string, any, error) {
				q := url.Values{"limit": {fmt.Sprint(limit)}}
				if after != "" {
					q.Set("after", after)
				}
				return "GET", "/v1/ca/devices?" + q.Encode(), nil, nil
			},
			text: table("devices", "serial", "status", "not_after", "certificates")}),
		e.apiCmd(apiCall{use: "get SERIAL", short: "Show an onboarded device", args: cobra.ExactArgs(1),
			example: "  outpost admin onboarded get SN-0042 --json",
			call:    func(a []string) (string, string, any, error) { return "GET", "/v1/ca/devices/" + esc(a[0]), nil, nil }}),
		e.apiCmd(apiCall{use: "revoke SERIAL [--reason TEXT]", short: "Revoke a device: no renewal, refused at its next handshake",
			long: `Revoke an onboarded device (audited). It gets no certificate again, and its
current certificate is refused at the next TLS handshake and request.`,
			args: cobra.ExactArgs(1), example: "  outpost admin onboarded revoke SN-0042 --reason stolen",
			flags: func(c *cobra.Command) { c.Flags().StringVar(&reason, "reason", "", "why (kept in the audit entry)") },
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/ca/devices/" + esc(a[0]) + "/revoke", map[string]string{"reason": reason}, nil
			}}),
	)
	return c
}

// adminCertCmd mirrors /v1/ca/certs.
func (e *env) adminCertCmd() *cobra.Command {
	c := &cobra.Command{Use: "cert", Short: "List the certificates issued to onboarded devices"}
	var after, dev string
	var limit int
	c.AddCommand(e.apiCmd(apiCall{use: "list [--device SERIAL]", short: "List device certificates (paged by serial number)",
		example: "  outpost admin cert list --device SN-0042",
		flags: func(c *cobra.Command) {
			c.Flags().StringVar(&dev, "device", "", "only this device's")
			c.Flags().StringVar(&after, "after", "", "list certificates after this serial number")
			c.Flags().IntVar(&limit, "limit", 100, "page size (1 to 1000)")
		},
		call: func(a []string) (string, string, any, error) {
			q := url.Values{"limit": {fmt.Sprint(limit)}}
			if after != "" {
				q.Set("after", after)
			}
			if dev != "" {
				q.Set("device", dev)
			}
			return "GET", "/v1/ca/certs?" + q.Encode(), nil, nil
		},
		text: table("certificates", "serial", "device", "kind", "not_before", "not_after")}))
	return c
}
