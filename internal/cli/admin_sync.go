package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/apiclient"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/spf13/cobra"
)

// Administration of field devices and the air-gapped sync path (docs/sync.md).

// adminDeviceCmd is long because it is a table of subcommands over one set of
// flag variables (their help, flags and API call side by side).
func (e *env) adminDeviceCmd() *cobra.Command {
	c := &cobra.Command{Use: "device", Short: "Register, list, inspect and revoke field devices; create enrolment codes"}
	var id, keyFile, after string
	var ttl time.Duration
	var limit int
	var burn bool
	idFlag := func(c *cobra.Command) {
		c.Flags().StringVar(&id, "id", "", "device id (required), as bundles name it")
		_ = c.MarkFlagRequired("id")
	}
	c.AddCommand(
		e.apiCmd(apiCall{use: "register --id D --public-key FILE", short: "Register a field device with the public key it made (FDIR/device.pub)",
			long: `Register device D with the Ed25519 public key its field store made at
'outpost field init' (the file FDIR/device.pub, carried to you). From then on
the server accepts sync uploads signed by that key. To let the device register
itself instead, give it a one-time code: 'outpost admin device enrol-code'.`,
			example: "  outpost admin device register --id van-7 --public-key van-7.pub",
			flags: func(c *cobra.Command) {
				idFlag(c)
				c.Flags().StringVar(&keyFile, "public-key", "", "the device's public key PEM file (required)")
				_ = c.MarkFlagRequired("public-key")
			},
			call: func(a []string) (string, string, any, error) {
				pem, err := datadir.ReadFileLimit(keyFile, 16<<10)
				if err != nil {
					return "", "", nil, fmt.Errorf("reading --public-key: %w", err)
				}
				if _, err := keys.ParsePublicPEM(pem); err != nil {
					return "", "", nil, fmt.Errorf("--public-key %s: %w", keyFile, err)
				}
				return "POST", "/v1/devices", map[string]string{"id": id, "public_key": string(pem)}, nil
			},
			text: func(e *env, o map[string]any) error {
				fmt.Fprintf(e.stdout, "registered device %v with key %v\n", o["id"], o["key_id"])
				return nil
			}}),
		e.apiCmd(apiCall{use: "enrol-code --id D [--ttl 24h]", short: "Create a one-time code with which device D registers itself (shown once)",
			example: "  outpost admin device enrol-code --id phone-12 --ttl 2h",
			flags: func(c *cobra.Command) {
				idFlag(c)
				c.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the code works (at most 720h)")
			},
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/devices/" + esc(id) + "/enrolment", map[string]any{"ttl_seconds": int64(ttl / time.Second)}, nil
			},
			text: func(e *env, o map[string]any) error {
				fmt.Fprintf(e.stdout, "enrolment code for %v: %v\nvalid until %v; on the device run:\n  outpost field enrol --data FDIR --server URL --code %v\n",
					o["device"], o["code"], o["expires_at"], o["code"])
				return nil
			}}),
		e.apiCmd(apiCall{use: "list", short: "List field devices", example: "  outpost admin device list --json",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&after, "after", "", "list devices after this id")
				c.Flags().IntVar(&limit, "limit", 100, "page size (1 to 1000)")
			},
			call: func(a []string) (string, string, any, error) {
				q := url.Values{"limit": {fmt.Sprint(limit)}}
				if after != "" {
					q.Set("after", after)
				}
				return "GET", "/v1/devices?" + q.Encode(), nil, nil
			},
			text: func(e *env, o map[string]any) error {
				ds, _ := o["devices"].([]any)
				if len(ds) == 0 {
					fmt.Fprintln(e.stdout, "no devices")
				}
				for _, x := range ds {
					d, _ := x.(map[string]any)
					fmt.Fprintf(e.stdout, "%-24v %-8v key %-26v log acked to %v, last sync %v\n", d["id"], d["status"], d["key_id"], d["acked"], orNever(d["last_sync"]))
				}
				return nil
			}}),
		e.apiCmd(apiCall{use: "show ID", short: "Show a device and what the server knows of its tokens", args: cobra.ExactArgs(1),
			example: "  outpost admin device show van-7 --json",
			call:    func(a []string) (string, string, any, error) { return "GET", "/v1/devices/" + esc(a[0]), nil, nil }}),
		e.apiCmd(apiCall{use: "revoke ID [--burn-hotp]", short: "Revoke a device: it can no longer sync; lists the bundles it holds",
			long: `Revoke device ID at once: its sync uploads are refused (and recorded as
incidents). The answer lists the bundles it holds (from its log) or was
issued (from the audit log): their entries are hashes of the users' codes,
open to an offline attack by whoever has the device. --burn-hotp moves each
HOTP token's online counter past the device's bundle, so that none of those
codes is ever accepted online. For TOTP bundles and static secrets, see
docs/sync.md (revocation).`,
			args: cobra.ExactArgs(1), example: "  outpost admin device revoke van-7 --burn-hotp",
			flags: func(c *cobra.Command) {
				c.Flags().BoolVar(&burn, "burn-hotp", false, "move HOTP tokens' online counters past the device's bundles")
			},
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/devices/" + esc(a[0]) + "/revoke", map[string]any{"burn_hotp": burn}, nil
			},
			text: func(e *env, o map[string]any) error {
				d, _ := o["device"].(map[string]any)
				fmt.Fprintf(e.stdout, "device %v revoked\n", d["id"])
				bs, _ := o["bundles"].([]any)
				if len(bs) == 0 {
					fmt.Fprintln(e.stdout, "no bundles known for it")
				}
				for _, x := range bs {
					b, _ := x.(map[string]any)
					line := fmt.Sprintf("  %v/%v/%v", b["realm"], b["user"], b["token"])
					if b["source"] == "device_log" {
						line += fmt.Sprintf(": %v %v..%v, serial %v, valid until %v", b["type"], b["first"], b["last"], b["serial"], b["not_after"])
					} else {
						line += fmt.Sprintf(": issued %v", b["issued_at"])
					}
					if b["burned"] == true {
						line += " (online counter moved past it)"
					}
					fmt.Fprintln(e.stdout, line)
				}
				return nil
			}}),
	)
	return c
}

func orNever(v any) any {
	if v == nil {
		return "never"
	}
	return v
}

func (e *env) adminImportSyncCmd() *cobra.Command {
	var sf serverFlags
	var out string
	c := &cobra.Command{
		Use:   "import-sync FILE --out ANSWER",
		Short: "Import a device's sync file (from 'outpost field export-sync') and write the answer to carry back",
		Long: `The air-gapped path. FILE is a device's signed sync upload, carried by hand;
the server applies it with exactly the checks of an online sync (signature by
a registered, unrevoked device, not a replay, log chain and continuity, state
never going backwards) and in one transaction. ANSWER is the server's signed
answer: carry it back and apply it with 'outpost field apply-sync'. ANSWER is
never overwritten. Exit 5 when the file was altered or the device's log does
not match, 3 when the server refuses the device or the file.`,
		Example: "  outpost admin import-sync /media/usb/van-7.sync --out /media/usb/van-7.answer",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			data, err := readInput(args[0], syncproto.MaxUploadSize)
			if err != nil {
				return err
			}
			cl, err := e.client(sf)
			if err != nil {
				return err
			}
			answer, err := postRaw(c, cl, "/v1/sync/import", data)
			if err != nil {
				return importSyncExit(err)
			}
			if err := writeNew(out, answer); err != nil {
				return err
			}
			if sf.asJSON {
				return e.printJSON(map[string]any{"answer": out, "bytes": len(answer)})
			}
			fmt.Fprintf(e.stdout, "Applied %s; wrote the answer %s. On the device: outpost field apply-sync --data FDIR %s\n", args[0], out, out)
			return nil
		},
	}
	sf.register(c)
	c.Flags().StringVar(&out, "out", "", "file to write the server's answer to (required; never overwritten)")
	_ = c.MarkFlagRequired("out")
	return c
}

func importSyncExit(err error) error {
	var ae *apiclient.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case "log_rewritten", "log_truncated", "broken_chain", "state_backwards", "bad_signature", "invalid_upload":
			return withCode(ExitTampered, err)
		case "device_revoked", "unknown_device", "replayed_upload", "upload_expired", "upload_not_yet_valid", "sync_gap":
			return withCode(ExitRefused, err)
		}
	}
	return apiErr(err)
}

// postRaw posts body as it is (a signed file: re-encoding it would break its signature).
func postRaw(c *cobra.Command, cl *apiclient.Client, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(c.Context(), http.MethodPost, cl.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+cl.Token)
	resp, err := cl.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling %s: %w", cl.BaseURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, syncproto.MaxResponseSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > syncproto.MaxResponseSize {
		return nil, errors.New("the answer is larger than a sync answer may be")
	}
	if resp.StatusCode/100 != 2 {
		var env struct {
			Error apiclient.Error `json:"error"`
		}
		if json.Unmarshal(b, &env) != nil || env.Error.Code == "" {
			return nil, &apiclient.Error{Status: resp.StatusCode, Code: "http_error", Message: strings.TrimSpace(http.StatusText(resp.StatusCode))}
		}
		env.Error.Status = resp.StatusCode
		return nil, &env.Error
	}
	return b, nil
}
