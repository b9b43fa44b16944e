package cli

import (
	"fmt"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/outpost-auth/outpost/otp"
	"github.com/spf13/cobra"
)

func (e *env) otpCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "otp",
		Short: "Work with otpauth:// URIs: show a code, draw a QR code",
		Long: `Tools for otpauth:// key URIs (the format Google Authenticator, FreeOTP and
Aegis read), such as the one 'outpost keys inspect --show-secret' prints.`,
		Example: `  outpost otp code "$URI"
  outpost otp qr "$URI" --png enrol.png`,
	}
	var asJSON bool
	var counter int64
	code := &cobra.Command{
		Use:   "code URI [--counter N]",
		Short: "Print the current code of an otpauth URI (what an authenticator app shows)",
		Long: `Print the code an authenticator app holding URI shows now (TOTP), or the code
for the URI's counter (HOTP; --counter N for the code after N presses).
With --json, also the TOTP time step.`,
		Example: `  outpost otp code 'otpauth://totp/Outpost:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'
  outpost otp code --counter 3 "$(cat alice.uri)"`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			k, err := otp.ParseURI(args[0])
			if err != nil {
				return usageError{err}
			}
			if counter >= 0 {
				if k.Type != otp.TypeHOTP {
					return usageError{fmt.Errorf("--counter is for HOTP URIs; this one is %s", k.Type)}
				}
				k.Counter = uint64(counter)
			}
			now := e.now()
			s, err := k.Generate(k.Secret, k.Counter, now)
			if err != nil {
				return err
			}
			if asJSON {
				out := map[string]any{"code": s}
				if k.Type == otp.TypeTOTP {
					out["step"] = k.Step(now)
				}
				return e.printJSON(out)
			}
			fmt.Fprintln(e.stdout, s)
			return nil
		},
	}
	code.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	code.Flags().Int64Var(&counter, "counter", -1, "HOTP: the counter to compute (default: the URI's)")
	var png string
	var size int
	qrc := &cobra.Command{
		Use:     "qr URI [--png FILE]",
		Short:   "Draw an otpauth URI as a QR code in the terminal, or write it as a PNG",
		Example: `  outpost otp qr "$URI" --png enrol.png`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			k, err := otp.ParseURI(args[0])
			if err != nil {
				return usageError{err}
			}
			// Encode the canonical form: labels percent-encoded, as every reader expects.
			uri := k.URI()
			if png == "" {
				t, err := qr.Terminal(uri)
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(e.stdout, t)
				return err
			}
			if size < 1 || size > qr.MaxPNGSize {
				return usageError{fmt.Errorf("--size must be between 1 and %d pixels", qr.MaxPNGSize)}
			}
			b, err := qr.PNG(uri, size)
			if err != nil {
				return err
			}
			// The URI holds a secret: the PNG is as secret as the URI.
			return datadir.WriteFileAtomic(png, b, 0o600)
		},
	}
	qrc.Flags().StringVar(&png, "png", "", "write a PNG to FILE instead of drawing in the terminal")
	qrc.Flags().IntVar(&size, "size", 256, "PNG size in pixels")
	c.AddCommand(code, qrc)
	return c
}
