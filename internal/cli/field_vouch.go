package cli

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/outpost-auth/outpost/offline"
	"github.com/spf13/cobra"
)

// vouchExit maps the errors of a vouch to the exit codes of cli.go: a label
// or image that fails its checks 5, a repeated vouch 3, a bad site or
// location 2.
func vouchExit(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, device.ErrMalformed), errors.Is(err, device.ErrChecksum), errors.Is(err, device.ErrVersion),
		errors.Is(err, qr.ErrImage), errors.Is(err, qr.ErrNoCode):
		return withCode(ExitTampered, err)
	case errors.Is(err, offline.ErrDuplicateVouch):
		return withCode(ExitRefused, err)
	case errors.Is(err, offline.ErrBadVouch):
		return usageError{err}
	}
	return fieldExit(err)
}

// labelPayload returns the label text of a vouch: decoded from the image
// scan (pure Go, internal/qr) or given as payload. The fallback line a
// human reads off the label (serial and fingerprint) carries no key, so it
// cannot make a vouch: the error says so.
func labelPayload(scan, payload string) (string, error) {
	switch {
	case (scan == "") == (payload == ""):
		return "", usageError{errors.New("give the label as --scan IMAGE or --payload TEXT (one of them)")}
	case payload != "":
		p := strings.TrimSpace(payload)
		if !strings.HasPrefix(p, device.Prefix) && strings.Count(p, "-") >= 4 && strings.Contains(p, " ") {
			return "", usageError{fmt.Errorf("%q looks like the label's fallback line (serial and fingerprint), which does not carry the device's key: "+
				"scan the QR code (--scan IMAGE) or type the payload that starts with %s", p, device.Prefix)}
		}
		return p, nil
	}
	img, err := readInput(scan, qr.MaxImageBytes)
	if err != nil {
		return "", err
	}
	text, err := qr.Decode(bytes.NewReader(img))
	if err != nil {
		return "", fmt.Errorf("--scan %s: %w (take a sharper, closer picture, or type the payload with --payload)", scan, err)
	}
	return text, nil
}

func (e *env) fieldVouchCmd() *cobra.Command {
	var dir, scan, payload, site, location string
	var asJSON bool
	c := &cobra.Command{
		Use:   "vouch --data FDIR (--scan IMAGE | --payload TEXT) --site S [--location LAT,LON]",
		Short: "Vouch, offline, for a device being installed: record its label in the signed log",
		Long: `Record that you, holding this field device, installed the device whose QR label
you scanned (--scan: a photo or PNG of the label, decoded here with no
network) or typed (--payload: the text starting with OPD:), at site S and
optionally at a location in decimal degrees. The vouch is an entry of this
device's signed log (time, site, location, the label's serial, model and
public key); the next 'outpost field sync' takes it to the server's roster,
once. A label that does not decode (checksum, version, size) or a device
this field device already vouched for is refused and nothing is written.
The server believes vouches only from field devices an administrator allowed
('outpost admin roster allow').`,
		Example: "  outpost field vouch --data ./field --scan label.jpg --site cabinet-12 --location 52.3702,4.8952",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			p, err := labelPayload(scan, payload)
			if err != nil {
				return vouchExit(err)
			}
			s, err := e.openField(dir)
			if err != nil {
				return err
			}
			defer s.Close()
			v, err := s.Vouch(c.Context(), offline.VouchRequest{Label: p, Site: site, Location: location})
			if err != nil {
				return vouchExit(err)
			}
			if asJSON {
				return e.printJSON(v)
			}
			fmt.Fprintf(e.stdout, "Vouched for %s (model %s, key %s %s) at site %s, log entry %d.\nSync to send it to the server: outpost field sync --data %s\n",
				v.Serial, v.Model, v.KeyType, v.Fingerprint, v.Site, v.Seq, dir)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().StringVar(&scan, "scan", "", "an image (PNG, JPEG, GIF) of the device's QR label")
	c.Flags().StringVar(&payload, "payload", "", "the label's text (OPD:...), when no image is at hand")
	c.Flags().StringVar(&site, "site", "", "the site where the device is installed (required)")
	c.Flags().StringVar(&location, "location", "", `where, as "lat,lon" in decimal degrees`)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	for _, f := range []string{"data", "site"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}
