package cli

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/outpost-auth/outpost/otp"
	"github.com/spf13/cobra"
)

func (e *env) otpCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "otp",
		Short: "Work with otpauth:// URIs: show a code, draw a QR code",
	}
	var asJSON bool
	code := &cobra.Command{
		Use:     "code URI",
		Short:   "Print the current code of an otpauth URI (what an authenticator app shows)",
		Example: `  outpost otp code 'otpauth://totp/Outpost:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			k, err := otp.ParseURI(args[0])
			if err != nil {
				return usageError{err}
			}
			now := time.Now()
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
	var png string
	var size int
	qrc := &cobra.Command{
		Use:     "qr URI [--png FILE]",
		Short:   "Draw an otpauth URI as a QR code in the terminal, or write it as a PNG",
		Example: `  outpost otp qr "$URI" --png enrol.png`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if _, err := otp.ParseURI(args[0]); err != nil {
				return usageError{err}
			}
			if png == "" {
				t, err := qr.Terminal(args[0])
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(e.stdout, t)
				return err
			}
			b, err := qr.PNG(args[0], size)
			if err != nil {
				return err
			}
			if size > 4096 {
				return usageError{errors.New("--size must be at most 4096")}
			}
			return os.WriteFile(png, b, 0o600)
		},
	}
	qrc.Flags().StringVar(&png, "png", "", "write a PNG to FILE instead of drawing in the terminal")
	qrc.Flags().IntVar(&size, "size", 256, "PNG size in pixels")
	c.AddCommand(code, qrc)
	return c
}
