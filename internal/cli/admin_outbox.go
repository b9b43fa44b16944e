package cli

import (
	"fmt"
	"net/url"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/spf13/cobra"
)

// Administration of the outbox and the shipper webhook (docs/deliveries.md):
// every command is one call of the /v1/outbox or /v1/webhook API.

func (e *env) adminOutboxCmd() *cobra.Command {
	c := &cobra.Command{Use: "outbox", Short: "List the outbox's messages (dead letters) and resend one"}
	var state, after string
	var limit int
	c.AddCommand(
		e.apiCmd(apiCall{use: "list [--state dead]", short: "List outbox messages (no code, no recipient), paged by id",
			long: `List the realm's outbox messages: the recipients' code messages and the
shipper's webhook events. --state is pending, sent, dead or skipped (any when
left out); a dead message has its last error and may be resent.`,
			example: "  outpost admin outbox list --state dead",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&state, "state", "", "pending, sent, dead or skipped")
				c.Flags().StringVar(&after, "after", "", "list messages after this id")
				c.Flags().IntVar(&limit, "limit", 100, "page size (1 to 1000)")
			},
			call: func(a []string) (string, string, any, error) {
				q := url.Values{"limit": {fmt.Sprint(limit)}}
				if state != "" {
					q.Set("state", state)
				}
				if after != "" {
					q.Set("after", after)
				}
				return "GET", "/v1/outbox?" + q.Encode(), nil, nil
			},
			text: table("messages", "id", "delivery", "version", "kind", "state", "attempts", "last_error")}),
		e.apiCmd(apiCall{use: "resend ID", short: "Send a dead message again (attempts start over; audited)", args: cobra.ExactArgs(1),
			example: "  outpost admin outbox resend ob-3f2a…",
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/outbox/" + esc(a[0]) + "/resend", nil, nil
			},
			text: func(e *env, o map[string]any) error {
				fmt.Fprintf(e.stdout, "outbox message %v %v: the worker sends it at its next round\n", o["id"], o["state"])
				return nil
			}}),
	)
	return c
}

func (e *env) adminWebhookCmd() *cobra.Command {
	c := &cobra.Command{Use: "webhook", Short: "Set or show the realm's shipper webhook (signed delivery events)"}
	var hookURL, secretFile string
	c.AddCommand(
		e.apiCmd(apiCall{use: "set --url URL [--secret-file F]", short: "Set where delivery events go; prints the signing secret once",
			long: `Set the realm's shipper webhook: every delivery state change is POSTed to URL
as JSON, signed with the header Outpost-Signature: t=<unix>,v1=<hex HMAC-SHA256
of "t.body">. The secret is read from --secret-file (16 to 128 bytes), or made
by the server; either way it is printed once: configure the receiver with it
(the Go package github.com/outpost-auth/outpost/webhook verifies it).
URL is https, or http to a loopback address.`,
			example: "  outpost admin webhook set --url https://shipper.example/outpost-events",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&hookURL, "url", "", "the receiver's URL (required)")
				c.Flags().StringVar(&secretFile, "secret-file", "", "read the signing secret from this file instead of having one made")
				_ = c.MarkFlagRequired("url")
			},
			call: func(a []string) (string, string, any, error) {
				body := map[string]any{"url": hookURL}
				if secretFile != "" {
					b, err := datadir.ReadFileLimit(secretFile, 4096)
					if err != nil {
						return "", "", nil, fmt.Errorf("reading --secret-file: %w", err)
					}
					body["secret"] = string(trimNewline(b))
				}
				return "PUT", "/v1/webhook", body, nil
			},
			text: func(e *env, o map[string]any) error {
				fmt.Fprintf(e.stdout, "webhook %v\nsigning secret (shown once, keep it in the receiver's configuration): %v\n", o["url"], o["secret"])
				return nil
			}}),
		e.apiCmd(apiCall{use: "get", short: "Show the realm's shipper webhook (never its secret)",
			example: "  outpost admin webhook get",
			call:    func(a []string) (string, string, any, error) { return "GET", "/v1/webhook", nil, nil }}),
	)
	return c
}
