package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/outpost-auth/outpost/offline"
	"github.com/spf13/cobra"
)

// The courier's commands (docs/deliveries.md): checks at the door on the
// field store ('outpost courier'), and the check of a proof of delivery
// with public keys alone ('outpost delivery proof verify').

const courierExits = `Exit codes: 0 accepted (a fingerprint-mode acceptance is provisional: the
server confirms the code at sync), 2 the code was mistyped (its check digit
is wrong) or is not a code, or the delivery is checked another way: ask
again, no attempt used; 3 refused (wrong code, expired, already confirmed,
not on this device's route, route manifest too old: sync); 4 no attempts
left; 5 the local store failed its integrity check.`

func (e *env) courierCmd() *cobra.Command {
	c := &cobra.Command{Use: "courier", Short: "Check recipients' delivery codes at the door, offline, on a field device",
		Long: `A courier device is a field device ('outpost field init', registered with the
server): the same store, the same signed log, the same key. Each sync
('outpost field sync') brings its route manifest (its deliveries and what
checks their codes, no recipient data) and takes back its receipts.

` + courierExits, Example: "  outpost courier verify --data ./field --delivery parcel-1 --code '1234 5678 9'"}
	c.AddCommand(e.courierVerifyCmd(), e.courierRouteCmd())
	return c
}

// courierExit maps the courier's errors to exit codes; the rest as fieldExit.
func courierExit(err error) error {
	if errors.Is(err, offline.ErrTypo) || errors.Is(err, offline.ErrNotACode) || errors.Is(err, offline.ErrWrongMode) ||
		errors.Is(err, courierproto.ErrMalformed) || errors.Is(err, qr.ErrNoCode) || errors.Is(err, qr.ErrImage) {
		return usageError{err}
	}
	return fieldExit(err)
}

func (e *env) courierVerifyCmd() *cobra.Command {
	var dir, scan string
	var a offline.DeliveryAttempt
	var asJSON bool
	c := &cobra.Command{
		Use:   "verify --data FDIR --delivery D (--code C | --scan IMAGE | --token T) [--location LAT,LON]",
		Short: "Check a recipient's code or token for a delivery; exit 0 when accepted",
		Long: `Check, offline, the code the recipient gives (hash and fingerprint modes) or
the token they show (token mode: --token, or --scan a photo of its QR code)
for delivery D of this device's route manifest. A mistyped code costs no
attempt; each other attempt counts, and is recorded before the check runs;
a delivery is accepted once. Every decision goes to the device's signed log
with the time and --location; an acceptance writes a receipt that the next
'outpost field sync' sends.

` + courierExits,
		Example: "  outpost courier verify --data ./field --delivery parcel-1 --code '1234 5678 9' --location 48.8566,2.3522",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if (a.Code != "") == (a.Token != "" || scan != "") || (a.Token != "" && scan != "") {
				return usageError{errors.New("give exactly one of --code, --token and --scan")}
			}
			if scan != "" {
				f, err := os.Open(scan)
				if err != nil {
					return fmt.Errorf("reading --scan: %w", err)
				}
				text, err := qr.Decode(f)
				f.Close()
				if err != nil {
					return courierExit(fmt.Errorf("--scan %s: %w: take the photo again, or type the token with --token", scan, err))
				}
				a.Token = text
			}
			return e.withField(dir, func(s *offline.Store) error {
				res, err := s.CheckDelivery(c.Context(), a)
				if err != nil {
					if asJSON {
						_ = e.printJSON(map[string]any{"ok": false, "error": err.Error()})
					}
					return courierExit(err)
				}
				if asJSON {
					return e.printJSON(map[string]any{"ok": true, "delivery": res.Delivery, "version": res.Version, "mode": res.Mode,
						"provisional": res.Provisional, "log_seq": res.LogSeq})
				}
				if res.Provisional {
					fmt.Fprintf(e.stdout, "OK (provisional): delivery %s accepted; the server confirms the code at the next sync\n", res.Delivery)
				} else {
					fmt.Fprintf(e.stdout, "OK: delivery %s accepted; the receipt goes to the server at the next sync\n", res.Delivery)
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().StringVar(&a.Delivery, "delivery", "", "delivery id (required)")
	c.Flags().StringVar(&a.Code, "code", "", "the code the recipient gives (spaces and hyphens ignored)")
	c.Flags().StringVar(&a.Token, "token", "", "the recipient's delivery token, as text")
	c.Flags().StringVar(&scan, "scan", "", "a photo (PNG, JPEG, GIF) of the recipient's QR code")
	c.Flags().StringVar(&a.Location, "location", "", "where the check happens, \"lat,lon\" in degrees")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	for _, f := range []string{"data", "delivery"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}

func (e *env) courierRouteCmd() *cobra.Command {
	var dir string
	var asJSON bool
	c := &cobra.Command{
		Use:     "route --data FDIR",
		Short:   "Show this device's route manifest: deliveries, attempts, receipts",
		Example: "  outpost courier route --data ./field",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return e.withField(dir, func(s *offline.Store) error {
				r, err := s.Route(c.Context())
				if err != nil {
					return courierExit(err)
				}
				if asJSON {
					return e.printJSON(r)
				}
				fmt.Fprintf(e.stdout, "route manifest %d, issued %s, usable until %s\n", r.Serial, r.IssuedAt.UTC().Format("2006-01-02T15:04:05Z"), r.UsableTill.UTC().Format("2006-01-02T15:04:05Z"))
				for _, d := range r.Deliveries {
					state := "open"
					if d.Accepted {
						state = "accepted"
					}
					if d.Receipt != "" {
						state += ", receipt " + d.Receipt
					}
					fmt.Fprintf(e.stdout, "  %s v%d %s until %s: %d/%d attempts, %s\n", d.ID, d.Version, d.Mode, d.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), d.Attempts, d.Limit, state)
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("data")
	return c
}

func (e *env) deliveryCmd() *cobra.Command {
	c := &cobra.Command{Use: "delivery", Short: "Check proofs of delivery and delivery tokens with public keys alone",
		Example: "  outpost delivery proof verify parcel-1.proof --server-key server.pub\n  outpost delivery token verify --key token.pub --scan photo.png"}
	proof := &cobra.Command{Use: "proof", Short: "Proofs of delivery (GET /v1/deliveries/{id}/proof)",
		Example: "  outpost delivery proof verify parcel-1.proof --server-key server.pub"}
	proof.AddCommand(e.deliveryProofVerifyCmd())
	c.AddCommand(proof, e.deliveryTokenCmd())
	return c
}

func (e *env) deliveryProofVerifyCmd() *cobra.Command {
	var serverKey string
	var asJSON bool
	c := &cobra.Command{
		Use:   "verify FILE --server-key PUB",
		Short: "Check a proof of delivery with the server's public key alone",
		Long: `Check the proof of delivery in FILE (from 'outpost admin delivery proof ID
--json' or GET /v1/deliveries/{id}/proof) with the server's public key PUB
('outpost keys export-public', or GET /v1/keys/signing): the server's
countersignature, then the courier device's receipt with the device key the
countersignature names, and that both name the same receipt, delivery,
version and device. No network, no secret.

Exit codes: 0 the proof holds, 5 it does not (altered, another server's, or
a receipt and countersignature that do not belong together), 1 the file
cannot be read, 2 bad usage.`,
		Example: "  outpost delivery proof verify parcel-1.proof --server-key server.pub",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			pem, err := datadir.ReadFileLimit(serverKey, 16<<10)
			if err != nil {
				return fmt.Errorf("reading --server-key: %w", err)
			}
			pub, err := keys.ParsePublicPEM(pem)
			if err != nil {
				return usageError{fmt.Errorf("--server-key %s: %w", serverKey, err)}
			}
			data, err := readInput(args[0], courierproto.MaxProofSize)
			if err != nil {
				return err
			}
			r, cs, err := courierproto.VerifyProof(data, pub)
			if err != nil {
				if asJSON {
					_ = e.printJSON(map[string]any{"ok": false, "error": err.Error()})
				}
				return withCode(ExitTampered, fmt.Errorf("the proof does not hold: %w", err))
			}
			if asJSON {
				return e.printJSON(map[string]any{"ok": true, "receipt": r, "countersign": cs})
			}
			fmt.Fprintf(e.stdout, "OK: delivery %s (realm %s, code version %d) confirmed by device %s (key %s) at %s",
				r.Delivery, r.Realm, r.Version, r.Device, keys.KeyID(cs.DeviceKey), r.Time.UTC().Format("2006-01-02T15:04:05Z"))
			if r.Location != "" {
				fmt.Fprintf(e.stdout, " at %s", r.Location)
			}
			fmt.Fprintf(e.stdout, "; accepted by the server at %s\n", cs.DeliveredAt.UTC().Format("2006-01-02T15:04:05Z"))
			return nil
		},
	}
	c.Flags().StringVar(&serverKey, "server-key", "", "the server's public key PEM file (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("server-key")
	return c
}
