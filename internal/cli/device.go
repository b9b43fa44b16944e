package cli

import (
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/spf13/cobra"
)

// Files of a device directory ('outpost device init').
const (
	deviceKeyFile   = "device.key"
	deviceLabelFile = "label.txt" // the label's payload: public
	devicePNGFile   = "label.png"
)

// cmdEnv is the env of a command built without one (the device commands):
// the streams the root gave it and the system clock.
func cmdEnv(c *cobra.Command) *env {
	return &env{stdin: c.InOrStdin(), stdout: c.OutOrStdout(), stderr: c.ErrOrStderr(), now: clock.System}
}

// newDeviceCmd is the parent of the commands that play a device (issue 12).
func newDeviceCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "device",
		Short: "Play a device being onboarded: key pair, QR label, enrolment, certificate",
		Long: `A device leaves the factory with a key pair it made itself and a QR label
carrying its serial, model and public key (nothing secret). Field staff scan
the label ('outpost field vouch'); later the device proves it holds the key.
These commands do on a computer what a device agent does with the device
package. See docs/onboarding.md.`,
	}
	c.AddCommand(deviceInitCmd(), deviceLabelCmd())
	addDeviceEnrolCmds(c) // enrol, renew, whoami: device_enrol.go
	return c
}

// labelInfo is what the device commands print about a label.
type labelInfo struct {
	Serial      string `json:"serial"`
	Model       string `json:"model"`
	KeyType     string `json:"key_type"`
	Fingerprint string `json:"fingerprint"`
	Payload     string `json:"payload"`
	Fallback    string `json:"fallback"`
	Dir         string `json:"dir,omitempty"`
	PNG         string `json:"png,omitempty"`
}

func infoOf(l *device.Label) (labelInfo, error) {
	p, err := l.Payload()
	if err != nil {
		return labelInfo{}, err
	}
	fb, err := l.Fallback()
	if err != nil {
		return labelInfo{}, err
	}
	fp, err := device.Fingerprint(l.PublicKey)
	if err != nil {
		return labelInfo{}, err
	}
	return labelInfo{Serial: l.Serial, Model: l.Model, KeyType: l.KeyType().String(), Fingerprint: fp, Payload: p, Fallback: fb}, nil
}

func (e *env) printLabel(info labelInfo, asJSON bool) error {
	if asJSON {
		return e.printJSON(info)
	}
	fmt.Fprintf(e.stdout, "Serial:   %s\nModel:    %s\nKey:      %s\nPayload:  %s\nFallback: %s\n", info.Serial, info.Model, info.KeyType, info.Payload, info.Fallback)
	if info.PNG != "" {
		fmt.Fprintf(e.stdout, "Label:    %s\n", info.PNG)
	}
	return nil
}

func deviceInitCmd() *cobra.Command {
	var dir, serial, model string
	var ed, asJSON bool
	c := &cobra.Command{
		Use:   "init --serial S --model M --dir DIR",
		Short: "Make a device's key pair and its QR label",
		Long: `Create DIR (mode 0700) with the device's new key pair (device.key, PKCS#8 PEM,
mode 0600; ECDSA P-256, or Ed25519 with --ed25519), its label payload
(label.txt) and the label as a PNG (label.png), and print the fallback line
printed under the code (the serial and the key's fingerprint). Nothing is
ever overwritten: a device key is made once.`,
		Example: "  outpost device init --serial SN-0042 --model gw-100 --dir ./sn-0042",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			e := cmdEnv(c)
			t := device.P256
			if ed {
				t = device.Ed25519
			}
			key, err := device.GenerateKey(t)
			if err != nil {
				return err
			}
			l, err := device.NewLabel(serial, model, key.Public())
			if err != nil {
				return usageError{err}
			}
			info, err := infoOf(l)
			if err != nil {
				return err
			}
			png, err := l.PNG(0)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			if err := device.WriteKeyFile(filepath.Join(dir, deviceKeyFile), key); err != nil {
				return err
			}
			if err := datadir.WriteFileExclusive(filepath.Join(dir, deviceLabelFile), []byte(info.Payload+"\n"), 0o644); err != nil {
				return fmt.Errorf("writing %s: %w", deviceLabelFile, err)
			}
			info.Dir, info.PNG = dir, filepath.Join(dir, devicePNGFile)
			if err := datadir.WriteFileExclusive(info.PNG, png, 0o644); err != nil {
				return fmt.Errorf("writing %s: %w", info.PNG, err)
			}
			return e.printLabel(info, asJSON)
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "the device's directory (required)")
	c.Flags().StringVar(&serial, "serial", "", "the device's serial, 1 to 64 of A-Z a-z 0-9 . _ - (required)")
	c.Flags().StringVar(&model, "model", "", "the device's model, same characters (required)")
	c.Flags().BoolVar(&ed, "ed25519", false, "make an Ed25519 key instead of ECDSA P-256")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	for _, f := range []string{"dir", "serial", "model"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}

// loadLabel reads a device directory's label and checks that it carries
// the public key of the directory's key file.
func loadLabel(dir string) (*device.Label, error) {
	raw, err := readInput(filepath.Join(dir, deviceLabelFile), int64(device.MaxPayload)+2)
	if err != nil {
		return nil, err
	}
	l, err := device.DecodeLabel(strings.TrimRight(string(raw), "\r\n"))
	if err != nil {
		return nil, withCode(ExitTampered, fmt.Errorf("%s: %w", filepath.Join(dir, deviceLabelFile), err))
	}
	key, err := device.ReadKeyFile(filepath.Join(dir, deviceKeyFile))
	if err != nil {
		return nil, err
	}
	a, err1 := x509.MarshalPKIXPublicKey(key.Public())
	b, err2 := x509.MarshalPKIXPublicKey(l.PublicKey)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(a, b) != 1 {
		return nil, withCode(ExitTampered, fmt.Errorf("%s does not carry the key of %s: the label was replaced", deviceLabelFile, deviceKeyFile))
	}
	return l, nil
}

func deviceLabelCmd() *cobra.Command {
	var dir, pngOut string
	var terminal, asJSON bool
	c := &cobra.Command{
		Use:   "label --dir DIR [--png FILE] [--terminal]",
		Short: "Show a device's label again: payload, fallback, PNG or terminal QR code",
		Long: `Read the label of the device in DIR (made by 'outpost device init'), check it
carries the key in DIR/device.key, and print its payload and fallback line;
--png FILE writes the QR code as a PNG (never over an existing file);
--terminal draws it in the terminal.`,
		Example: "  outpost device label --dir ./sn-0042 --terminal\n  outpost device label --dir ./sn-0042 --png label.png",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			e := cmdEnv(c)
			l, err := loadLabel(dir)
			if err != nil {
				return err
			}
			info, err := infoOf(l)
			if err != nil {
				return err
			}
			if pngOut != "" {
				png, err := l.PNG(0)
				if err != nil {
					return err
				}
				if err := datadir.WriteFileExclusive(pngOut, png, 0o644); err != nil {
					return fmt.Errorf("writing --png %s: %w (it is never overwritten)", pngOut, err)
				}
				info.PNG = pngOut
			}
			if terminal && !asJSON {
				t, err := l.Terminal()
				if err != nil {
					return err
				}
				fmt.Fprint(e.stdout, t)
			}
			return e.printLabel(info, asJSON)
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "the device's directory (required)")
	c.Flags().StringVar(&pngOut, "png", "", "write the QR code to this PNG file")
	c.Flags().BoolVar(&terminal, "terminal", false, "draw the QR code in the terminal")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("dir")
	return c
}
