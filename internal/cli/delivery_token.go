package cli

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strconv"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/deliverytoken"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/spf13/cobra"
)

// deliveryTokenCmd is 'outpost delivery token': checking a delivery token
// (token mode, docs/deliveries.md) with the realm's public key alone,
// under the 'outpost delivery' group (deliveryCmd).
func (e *env) deliveryTokenCmd() *cobra.Command {
	c := &cobra.Command{Use: "token", Short: "Delivery tokens (token mode): check one with the realm's public key",
		Example: "  outpost delivery token verify --key delivery-token.pub --scan photo.jpg"}
	c.AddCommand(e.deliveryTokenVerifyCmd())
	return c
}

func (e *env) deliveryTokenVerifyCmd() *cobra.Command {
	var keyFile, text, scan, delivery, device string
	var version int
	var asJSON bool
	c := &cobra.Command{
		Use:   "verify --key PUB (--token T | --scan IMAGE) [--delivery D --version N [--device X]]",
		Short: "Check a delivery token's signature and expiry with the realm's public key alone",
		Long: `Check a delivery token, given as text (--token) or as a photo or image of its
QR code (--scan, PNG/JPEG/GIF, read in pure Go), with the realm's token key PUB
(the PEM from 'outpost admin delivery keys'): its format, its signature, then
its expiry at this machine's clock. With --delivery and --version it must also
be for that delivery at that code version (after a reassignment the old
token names the old version), and with --device for that device (a token
without a device binding is good for any). No network, no secret.

Exit codes: 0 the token holds, 3 it is genuine but expired or for another
delivery, version or device, 5 it is forged, altered or not a token, 1 a file
cannot be read, 2 bad usage.`,
		Example: "  outpost delivery token verify --key token.pub --token 'ODT1:…' --delivery parcel-1 --version 1 --device van-7",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if (text == "") == (scan == "") {
				return usageError{errors.New("give exactly one of --token and --scan")}
			}
			if (delivery == "") != (version == 0) {
				return usageError{errors.New("--delivery and --version go together")}
			}
			pub, err := readPublicKeyFile("--key", keyFile)
			if err != nil {
				return err
			}
			if scan != "" {
				img, err := readInput(scan, qr.MaxImageBytes)
				if err != nil {
					return err
				}
				if text, err = qr.Decode(bytes.NewReader(img)); err != nil {
					return withCode(ExitTampered, fmt.Errorf("--scan %s: %w", scan, err))
				}
			}
			cl, err := deliverytoken.Verify(pub, text, e.now())
			if err == nil && delivery != "" {
				err = cl.For(cl.Realm, delivery, version, device)
			}
			if err != nil {
				code := ExitTampered
				if errors.Is(err, deliverytoken.ErrExpired) || errors.Is(err, deliverytoken.ErrMismatch) {
					code = ExitRefused
				}
				if asJSON {
					_ = e.printJSON(map[string]any{"ok": false, "error": err.Error()})
				}
				return withCode(code, fmt.Errorf("the token does not hold: %w", err))
			}
			if asJSON {
				return e.printJSON(map[string]any{"ok": true, "realm": cl.Realm, "delivery": cl.Delivery, "version": cl.Version,
					"device": cl.Device, "not_after": cl.NotAfter})
			}
			bound := "any device of the realm"
			if cl.Device != "" {
				bound = "device " + strconv.Quote(cl.Device)
			}
			fmt.Fprintf(e.stdout, "OK: delivery %s (realm %s, code version %d) on %s, valid until %s\n",
				strconv.Quote(cl.Delivery), strconv.Quote(cl.Realm), cl.Version, bound, cl.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
			return nil
		},
	}
	c.Flags().StringVar(&keyFile, "key", "", "the realm's delivery token public key, PEM (required)")
	c.Flags().StringVar(&text, "token", "", "the token text (ODT1:…)")
	c.Flags().StringVar(&scan, "scan", "", "an image of the token's QR code")
	c.Flags().StringVar(&delivery, "delivery", "", "the delivery it must be for")
	c.Flags().IntVar(&version, "version", 0, "the code version it must be for (with --delivery)")
	c.Flags().StringVar(&device, "device", "", "the device it must be good for")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("key")
	return c
}

// readPublicKeyFile reads the Ed25519 public key PEM file a flag names:
// exit 1 when it cannot be read, a usage error when it is not such a key.
func readPublicKeyFile(flag, path string) (ed25519.PublicKey, error) {
	pem, err := datadir.ReadFileLimit(path, 16<<10)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", flag, err)
	}
	pub, err := keys.ParsePublicPEM(pem)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s %s: %w", flag, path, err)}
	}
	return pub, nil
}
