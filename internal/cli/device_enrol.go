package cli

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/enrol"
	"github.com/spf13/cobra"
)

// Device agent commands of onboarding (docs/onboarding.md): play the
// device against the device listener (outpost serve --device-addr). The
// device key is the one its label carries (device.ReadKeyFile); the
// certificate is kept next to it (KEY without .key, plus .crt), mode 0600.

// certPath is where a device's certificate lives: next to its key.
func certPath(keyFile string) string {
	return strings.TrimSuffix(keyFile, ".key") + ".crt"
}

type deviceFlags struct {
	server, root, key, realm string
	asJSON                   bool
}

func (f *deviceFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.server, "server", "", "the device listener, https://HOST:PORT (required)")
	c.Flags().StringVar(&f.root, "root", "", "the device root CA, PEM (from 'outpost ca export-root') (required)")
	c.Flags().StringVar(&f.key, "key", "", "the device key file (required); the certificate is kept next to it")
	c.Flags().StringVar(&f.realm, "realm", "", "the device's realm (default: the server's default realm)")
	c.Flags().BoolVar(&f.asJSON, "json", false, "print JSON for scripts")
	for _, n := range []string{"server", "root", "key"} {
		_ = c.MarkFlagRequired(n)
	}
}

// client builds the device client; withCert loads the certificate next to the key.
func (f *deviceFlags) client(withCert bool) (*enrol.Client, error) {
	pemRoot, err := readInput(f.root, 64<<10)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemRoot) {
		return nil, fmt.Errorf("--root %s holds no PEM certificate (get it with 'outpost ca export-root')", f.root)
	}
	key, err := device.ReadKeyFile(f.key)
	if err != nil {
		return nil, err
	}
	c := &enrol.Client{Server: f.server, Roots: roots, Key: key, Realm: f.realm}
	if withCert {
		pemCert, err := readInput(certPath(f.key), 64<<10)
		if err != nil {
			return nil, fmt.Errorf("the device certificate: %w (enrol first: outpost device enrol)", err)
		}
		var chain [][]byte
		for rest := pemCert; ; {
			der, r := nextCert(rest)
			if der == nil {
				break
			}
			chain, rest = append(chain, der), r
		}
		if len(chain) == 0 {
			return nil, fmt.Errorf("%s holds no certificate (enrol again: outpost device enrol)", certPath(f.key))
		}
		c.Certificate = &tls.Certificate{Certificate: chain, PrivateKey: key}
	}
	return c, nil
}

func (e *deviceFlags) print(c *cobra.Command, a enrol.Answer, verb string) error {
	if e.asJSON {
		enc := json.NewEncoder(c.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"realm": a.Realm, "serial": a.Serial, "cert_serial": a.CertSerial, "not_after": a.NotAfter, "certificate_file": certPath(e.key)})
	}
	fmt.Fprintf(c.OutOrStdout(), "%s %s: certificate %s valid until %s, written to %s\n", verb, a.Serial, a.CertSerial, a.NotAfter.Format("2006-01-02T15:04:05Z07:00"), certPath(e.key))
	return nil
}

// refusal turns a server refusal into exit code 3.
func refusal(err error) error {
	var se *enrol.ServerError
	if errors.As(err, &se) {
		return withCode(ExitRefused, err)
	}
	return err
}

// addDeviceEnrolCmds adds enrol, renew and whoami to parent.
func addDeviceEnrolCmds(parent *cobra.Command) {
	var ef, rf, wf deviceFlags
	var serial string
	en := &cobra.Command{
		Use:   "enrol --server URL --root FILE --key FILE --serial S",
		Short: "First contact: prove the device holds its label's key and get a certificate",
		Long: `Connect to the device listener over TLS 1.3, trusting only --root, ask for a
challenge, sign it together with this connection's TLS exporter value with the
key in --key, and send a CSR for that key on the same connection. The server
issues a short-lived client certificate when the roster holds a live vouch for
this serial and key. The certificate is written next to the key (mode 0600).
A refusal exits 3.`,
		Example: "  outpost device enrol --server https://outpost.example:8444 --root root.pem --key device.key --serial SN-0042",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := ef.client(false)
			if err != nil {
				return err
			}
			a, err := cl.Enrol(c.Context(), serial)
			if err != nil {
				return refusal(err)
			}
			if err := datadir.WriteFileAtomic(certPath(ef.key), []byte(a.Certificate), 0o600); err != nil {
				return err
			}
			return ef.print(c, a, "enrolled")
		},
	}
	ef.register(en)
	en.Flags().StringVar(&serial, "serial", "", "the device serial, as on its label (required)")
	_ = en.MarkFlagRequired("serial")

	rn := &cobra.Command{
		Use:   "renew --server URL --root FILE --key FILE",
		Short: "Renew the device certificate over mutual TLS (also shortly after it expired)",
		Long: `Renew the certificate kept next to --key for the same key, authenticating with
it over mutual TLS. A certificate that expired less than the server's grace ago
(default 30 days) still renews; after that, enrol again. A refusal exits 3.`,
		Example: "  outpost device renew --server https://outpost.example:8444 --root root.pem --key device.key",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := rf.client(true)
			if err != nil {
				return err
			}
			a, err := cl.Renew(c.Context())
			if err != nil {
				return refusal(err)
			}
			if err := datadir.WriteFileAtomic(certPath(rf.key), []byte(a.Certificate), 0o600); err != nil {
				return err
			}
			return rf.print(c, a, "renewed")
		},
	}
	rf.register(rn)

	wh := &cobra.Command{
		Use:     "whoami --server URL --root FILE --key FILE",
		Short:   "Ask the server who the device certificate names (mutual TLS)",
		Example: "  outpost device whoami --server https://outpost.example:8444 --root root.pem --key device.key",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := wf.client(true)
			if err != nil {
				return err
			}
			raw, err := cl.Whoami(c.Context())
			if err != nil {
				return refusal(err)
			}
			if wf.asJSON {
				_, err = c.OutOrStdout().Write(raw)
				return err
			}
			var who struct {
				Realm, Serial, URI string
				NotAfter           string `json:"not_after"`
			}
			if err := json.Unmarshal(raw, &who); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s (realm %s), certificate valid until %s\n", who.URI, who.Realm, who.NotAfter)
			return nil
		},
	}
	wf.register(wh)
	parent.AddCommand(en, rn, wh)
}

// nextCert returns the DER of the next CERTIFICATE block of b and the rest.
func nextCert(b []byte) ([]byte, []byte) {
	for {
		blk, rest := pem.Decode(b)
		if blk == nil {
			return nil, nil
		}
		if blk.Type == "CERTIFICATE" {
			return blk.Bytes, rest
		}
		b = rest
	}
}
