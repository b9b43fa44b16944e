package cli

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// Administration of deliveries (docs/deliveries.md): every command is one
// call of the /v1/deliveries API.

func (e *env) adminDeliveryCmd() *cobra.Command {
	c := &cobra.Command{Use: "delivery", Short: "Create, list, inspect, cancel, reassign and confirm deliveries (one-time recipient codes)"}
	var device, email, phone, notAfter, mode, after string
	var limit int
	var code string
	showCode := func(e *env, o map[string]any) error {
		fmt.Fprintf(e.stdout, "delivery %v on device %v (code version %v, %v until %v)\n",
			o["id"], o["device"], o["code_version"], o["state"], o["not_after"])
		if code, ok := o["code"]; ok {
			fmt.Fprintf(e.stdout, "recipient code (shown once, the server keeps no copy): %v\n", code)
		} else {
			fmt.Fprintln(e.stdout, "the recipient's code goes to them through the server's notifier (see 'outpost admin outbox list')")
		}
		if tok, ok := o["token"].(map[string]any); ok {
			fmt.Fprintf(e.stdout, "recipient token (token mode; its QR code is in --json): %v\n", tok["text"])
		}
		return nil
	}
	c.AddCommand(
		e.apiCmd(apiCall{use: "add ID --device D (--email E | --phone P) --not-after TIME [--mode hash]",
			short: "Create a delivery and its one-time recipient code (shown once)",
			long: `Create delivery ID for the courier device D. The recipient (an email address
or an E.164 phone number) is stored sealed and never shown again. When the
server has a notifier (serve --smtp-addr, --sms-url) the code goes to the
recipient by mail or SMS and is not shown; without one it is printed once,
for you to pass to the recipient.
--not-after is RFC 3339, at most 30 days ahead. --mode is how the device will
check the code offline: hash, fingerprint or token.`,
			example: "  outpost admin delivery add parcel-1 --device van-7 --email ana@example.org --not-after 2031-06-01T18:00:00Z",
			args:    cobra.ExactArgs(1),
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&device, "device", "", "the courier device (required)")
				c.Flags().StringVar(&email, "email", "", "the recipient's email address")
				c.Flags().StringVar(&phone, "phone", "", "the recipient's phone number, E.164 (+33612345678)")
				c.Flags().StringVar(&notAfter, "not-after", "", "expiry, RFC 3339 (required)")
				c.Flags().StringVar(&mode, "mode", "hash", "offline check: hash, fingerprint or token")
				_ = c.MarkFlagRequired("device")
				_ = c.MarkFlagRequired("not-after")
			},
			call: func(a []string) (string, string, any, error) {
				if (email == "") == (phone == "") {
					return "", "", nil, errors.New("give exactly one of --email and --phone")
				}
				t, err := time.Parse(time.RFC3339, notAfter)
				if err != nil {
					return "", "", nil, fmt.Errorf("--not-after: want RFC 3339 (2031-06-01T18:00:00Z): %w", err)
				}
				rcpt := map[string]string{}
				if email != "" {
					rcpt["email"] = email
				} else {
					rcpt["phone"] = phone
				}
				return "POST", "/v1/deliveries", map[string]any{"id": a[0], "device": device, "recipient": rcpt,
					"not_after": t.UTC().Format(time.RFC3339), "mode": mode}, nil
			},
			text: showCode}),
		e.apiCmd(apiCall{use: "list", short: "List deliveries (paged by id)", example: "  outpost admin delivery list --limit 50",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&after, "after", "", "list deliveries after this id")
				c.Flags().IntVar(&limit, "limit", 100, "page size (1 to 1000)")
			},
			call: func(a []string) (string, string, any, error) {
				q := url.Values{"limit": {fmt.Sprint(limit)}}
				if after != "" {
					q.Set("after", after)
				}
				return "GET", "/v1/deliveries?" + q.Encode(), nil, nil
			},
			text: table("deliveries", "id", "device", "mode", "state", "not_after", "code_version")}),
		e.apiCmd(apiCall{use: "get ID", short: "Show a delivery (never its recipient nor its code)", args: cobra.ExactArgs(1),
			example: "  outpost admin delivery get parcel-1 --json",
			call:    func(a []string) (string, string, any, error) { return "GET", "/v1/deliveries/" + esc(a[0]), nil, nil }}),
		e.apiCmd(apiCall{use: "proof ID", short: "Fetch a delivery's proof of delivery (check it with 'outpost delivery proof verify')", args: cobra.ExactArgs(1),
			example: "  outpost admin delivery proof parcel-1 --json > parcel-1.proof",
			call: func(a []string) (string, string, any, error) {
				return "GET", "/v1/deliveries/" + esc(a[0]) + "/proof", nil, nil
			}}),
		e.apiCmd(apiCall{use: "cancel ID", short: "Cancel a delivery: its code is dead", args: cobra.ExactArgs(1),
			example: "  outpost admin delivery cancel parcel-1",
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/deliveries/" + esc(a[0]) + "/cancel", nil, nil
			},
			text: func(e *env, o map[string]any) error {
				fmt.Fprintf(e.stdout, "delivery %v %v\n", o["id"], o["state"])
				return nil
			}}),
		e.apiCmd(apiCall{use: "reassign ID --device D", short: "Move a delivery to another device with a new code (shown once; the old one is dead)",
			args: cobra.ExactArgs(1), example: "  outpost admin delivery reassign parcel-1 --device van-9",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&device, "device", "", "the new courier device (required)")
				_ = c.MarkFlagRequired("device")
			},
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/deliveries/" + esc(a[0]) + "/reassign", map[string]string{"device": device}, nil
			},
			text: showCode}),
		e.apiCmd(apiCall{use: "confirm ID --code C --device D", short: "Confirm a delivery online with the recipient's code (attempts limited)",
			long: `Check the code the recipient gave at the door against delivery ID at the
server, as entered on courier device D (the device the delivery is assigned
to). A mistyped code (its check digit is wrong) is refused without using an
attempt; each wrong code uses one of the code version's attempts (5 by
default), and the last one makes the delivery failed: reassign it to issue a
new code. A right code makes the delivery delivered, once.`,
			args: cobra.ExactArgs(1), example: "  outpost admin delivery confirm parcel-1 --code '5820 3917 0' --device van-7",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&code, "code", "", "the recipient's code (spaces and hyphens ignored) (required)")
				c.Flags().StringVar(&device, "device", "", "the courier device it was entered on (required)")
				_ = c.MarkFlagRequired("code")
				_ = c.MarkFlagRequired("device")
			},
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/deliveries/" + esc(a[0]) + "/confirm", map[string]string{"code": code, "device": device}, nil
			},
			text: func(e *env, o map[string]any) error {
				fmt.Fprintf(e.stdout, "delivery %v %v (confirmed on device %v)\n", o["id"], o["state"], o["device"])
				return nil
			}}),
		e.apiCmd(apiCall{use: "keys", short: "Show the realm's delivery public keys (token verification PEM, HPKE seal key)",
			long: `Print the public keys courier devices pin for this realm: the Ed25519 key
that verifies delivery tokens, as PEM (save it to check a token elsewhere), and
the HPKE (X25519) key devices seal entered codes to in fingerprint mode.`,
			example: "  outpost admin delivery keys --json",
			call:    func(a []string) (string, string, any, error) { return "GET", "/v1/keys/deliveries", nil, nil },
			text: func(e *env, o map[string]any) error {
				fmt.Fprintf(e.stdout, "%vseal key (HPKE X25519, base64): %v\n", o["token_public_key_pem"], o["seal_public_key"])
				return nil
			}}),
	)
	return c
}
