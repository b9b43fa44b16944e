package cli

import (
	"fmt"
	"net/url"

	"github.com/outpost-auth/outpost/internal/roster"
	"github.com/spf13/cobra"
)

// Administration of the device roster (docs/onboarding.md): every command
// is one call of the /v1/roster API.

func (e *env) adminRosterCmd() *cobra.Command {
	c := &cobra.Command{Use: "roster", Short: "The device roster: vouches from field staff, expected serials, withdrawal, review"}
	var after, reason, vouch, staffDevice, file, order string
	var limit int
	var deny bool
	entry := func(e *env, o map[string]any) error {
		fmt.Fprintf(e.stdout, "serial %v: %v\n", o["serial"], o["state"])
		vs, _ := o["vouches"].([]any)
		for _, x := range vs {
			v, _ := x.(map[string]any)
			fmt.Fprintf(e.stdout, "  vouch %v: %v by %v at %v, key %v %v, expires %v %v\n", v["id"], v["state"], v["staff_device"], v["site"],
				v["key_type"], v["fingerprint"], v["expires_at"], v["reason"])
		}
		return nil
	}
	review := func(verb, short string) *cobra.Command {
		return e.apiCmd(apiCall{use: verb + " SERIAL [--vouch ID]", short: short, args: cobra.ExactArgs(1),
			example: "  outpost admin roster " + verb + " SN-0042",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&vouch, "vouch", "", "the held vouch (STAFF-DEVICE:SEQ), when the serial has several")
			},
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/roster/" + esc(a[0]) + "/" + verb, map[string]string{"vouch": vouch}, nil
			},
			text: entry})
	}
	c.AddCommand(
		e.apiCmd(apiCall{use: "list", short: "List the roster (paged by serial)", example: "  outpost admin roster list --limit 50",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&after, "after", "", "list serials after this one")
				c.Flags().IntVar(&limit, "limit", 100, "page size (1 to 1000)")
			},
			call: func(a []string) (string, string, any, error) {
				q := url.Values{"limit": {fmt.Sprint(limit)}}
				if after != "" {
					q.Set("after", after)
				}
				return "GET", "/v1/roster?" + q.Encode(), nil, nil
			},
			text: table("roster", "serial", "state")}),
		e.apiCmd(apiCall{use: "get SERIAL", short: "Show a serial's vouches", args: cobra.ExactArgs(1),
			example: "  outpost admin roster get SN-0042 --json",
			call:    func(a []string) (string, string, any, error) { return "GET", "/v1/roster/" + esc(a[0]), nil, nil },
			text:    entry}),
		e.apiCmd(apiCall{use: "withdraw SERIAL [--reason TEXT]", short: "Withdraw a serial's vouches: it can no longer enrol, and its certificates are revoked",
			args: cobra.ExactArgs(1), example: "  outpost admin roster withdraw SN-0042 --reason stolen",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
			},
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/roster/" + esc(a[0]) + "/withdraw", map[string]string{"reason": reason}, nil
			},
			text: entry}),
		review("approve", "Approve a held vouch: the device may enrol"),
		review("reject", "Reject a held vouch: it is withdrawn"),
		e.apiCmd(apiCall{use: "expect --file SERIALS [--order REF]", short: "Load the serials expected from a purchase order; vouches for others are held",
			long: `Read SERIALS (one serial per line; blank lines and text after '#' ignored)
and add them to the realm's expected serials. Once a realm expects any serial,
a vouch for a serial it does not expect is held for review.`,
			example: "  outpost admin roster expect --file po-7.txt --order PO-7",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&file, "file", "", "the file of serials (required)")
				c.Flags().StringVar(&order, "order", "", "the purchase order's reference, for the audit log")
				_ = c.MarkFlagRequired("file")
			},
			call: func(a []string) (string, string, any, error) {
				data, err := readInput(file, roster.MaxExpectedFile)
				if err != nil {
					return "", "", nil, err
				}
				serials, err := roster.ParseExpected(data)
				if err != nil {
					return "", "", nil, usageError{fmt.Errorf("--file %s: %w", file, err)}
				}
				return "POST", "/v1/roster/expected", map[string]any{"serials": serials, "order": order}, nil
			},
			text: func(e *env, o map[string]any) error {
				fmt.Fprintf(e.stdout, "%v serials submitted, %v newly expected\n", o["submitted"], o["added"])
				return nil
			}}),
		e.apiCmd(apiCall{use: "allow --device ID [--deny]", short: "Let a field device vouch for devices (or, with --deny, stop it)",
			long: `Vouches are believed only from field devices an administrator allowed: a
courier's phone, say, should not vouch for devices. A vouch from any other
device is recorded as an incident and changes nothing.`,
			example: "  outpost admin roster allow --device phone-7",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&staffDevice, "device", "", "the field device (required)")
				c.Flags().BoolVar(&deny, "deny", false, "withdraw the permission instead")
				_ = c.MarkFlagRequired("device")
			},
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/roster/vouchers", map[string]any{"device": staffDevice, "allowed": !deny}, nil
			},
			text: func(e *env, o map[string]any) error {
				fmt.Fprintf(e.stdout, "device %v may vouch: %v (changed: %v)\n", o["device"], o["allowed"], o["changed"])
				return nil
			}}),
	)
	return c
}
