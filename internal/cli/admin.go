package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/outpost-auth/outpost/internal/apiclient"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/spf13/cobra"
)

// Environment variables the admin commands read.
const (
	ServerEnv = "OUTPOST_SERVER"
	TokenEnv  = "OUTPOST_TOKEN"
	CACertEnv = "OUTPOST_CACERT"
)

// serverFlags find and authenticate to a server.
type serverFlags struct {
	server, tokenFile, cacert string
	asJSON                    bool
}

func (f *serverFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.server, "server", "", "server URL (else $"+ServerEnv+")")
	c.Flags().StringVar(&f.tokenFile, "token-file", "", "file holding the API token (else $"+TokenEnv+")")
	c.Flags().StringVar(&f.cacert, "cacert", "", "PEM CA certificate to trust, the server's DIR/tls/ca.pem (else $"+CACertEnv+")")
	c.Flags().BoolVar(&f.asJSON, "json", false, "print JSON for scripts")
}

func (e *env) client(f serverFlags) (*apiclient.Client, error) {
	srv := f.server
	if srv == "" {
		srv = os.Getenv(ServerEnv)
	}
	if srv == "" {
		return nil, usageError{errors.New("no server: pass --server URL or set " + ServerEnv)}
	}
	tok, err := apiToken(f.tokenFile)
	if err != nil {
		return nil, err
	}
	if tok == "" {
		return nil, usageError{errors.New("no API token: pass --token-file FILE or set " + TokenEnv)}
	}
	ca := f.cacert
	if ca == "" {
		ca = os.Getenv(CACertEnv)
	}
	return apiclient.New(srv, tok, ca)
}

// apiErr turns an API error into the documented exit code.
func apiErr(err error) error {
	var ae *apiclient.Error
	if !errors.As(err, &ae) {
		return err
	}
	switch {
	case ae.Status == 429:
		return withCode(ExitLocked, err)
	case ae.Code == "invalid_code" || ae.Code == "replayed" || ae.Code == "malformed_code",
		ae.Code == "wrong_code" || ae.Code == "already_delivered" || ae.Code == "expired": // delivery confirm
		return withCode(ExitRefused, err)
	case ae.Code == "attempts_exhausted":
		return withCode(ExitLocked, err)
	}
	return err
}

// apiCmd builds a command that calls the API once and prints the answer.
type apiCall struct {
	use, short, long, example string
	args                      cobra.PositionalArgs
	flags                     func(c *cobra.Command)
	// call returns the method, path and body for the request.
	call func(args []string) (method, path string, body any, err error)
	// text prints the answer for people; nil prints the JSON.
	text func(e *env, out map[string]any) error
	// resolve, when set, runs before call with the client (to look up an
	// identifier the user left out).
	resolve func(ctx context.Context, cl *apiclient.Client) error
}

func (e *env) apiCmd(a apiCall) *cobra.Command {
	var sf serverFlags
	c := &cobra.Command{Use: a.use, Short: a.short, Long: a.long, Example: a.example, Args: a.args,
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := e.client(sf)
			if err != nil {
				return err
			}
			if a.resolve != nil {
				if err := a.resolve(c.Context(), cl); err != nil {
					return e.apiFailure(sf, err)
				}
			}
			method, path, body, err := a.call(args)
			if err != nil {
				return usageError{err}
			}
			var out map[string]any
			if err := cl.Do(c.Context(), method, path, body, &out); err != nil {
				return e.apiFailure(sf, err)
			}
			if sf.asJSON || a.text == nil {
				if out == nil {
					out = map[string]any{"ok": true}
				}
				return e.printJSON(out)
			}
			return a.text(e, out)
		}}
	if c.Args == nil {
		c.Args = cobra.NoArgs
	}
	sf.register(c)
	if a.flags != nil {
		a.flags(c)
	}
	return c
}

// apiFailure returns err with its exit code; with --json, a refusal by the
// server is also printed on standard output as {"error":{...}}, so that a
// script reads every answer, accepted or not, from one place.
func (e *env) apiFailure(sf serverFlags, err error) error {
	var ae *apiclient.Error
	if sf.asJSON && errors.As(err, &ae) {
		_ = e.printJSON(map[string]any{"error": map[string]any{"status": ae.Status, "code": ae.Code, "message": ae.Message}})
	}
	return apiErr(err)
}

// table prints the list under key of a JSON answer as aligned columns, for
// people (--json prints the answer itself).
func table(key string, cols ...string) func(e *env, out map[string]any) error {
	return func(e *env, out map[string]any) error {
		rows, _ := out[key].([]any)
		if len(rows) == 0 {
			fmt.Fprintf(e.stdout, "no %s\n", strings.ReplaceAll(key, "_", " "))
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
		for _, r := range rows {
			m, _ := r.(map[string]any)
			vals := make([]string, len(cols))
			for i, c := range cols {
				switch v := m[c].(type) {
				case nil:
					vals[i] = "-"
				case []any:
					parts := make([]string, len(v))
					for j := range v {
						parts[j] = fmt.Sprint(v[j])
					}
					vals[i] = strings.Join(parts, ",")
				default:
					vals[i] = fmt.Sprint(v)
				}
			}
			fmt.Fprintln(tw, strings.Join(vals, "\t"))
		}
		if next, ok := out["next"].(string); ok && next != "" {
			fmt.Fprintf(tw, "(more: --after %s)\n", next)
		}
		return tw.Flush()
	}
}

func esc(s string) string { return url.PathEscape(s) }

func (e *env) adminUserCmd() *cobra.Command {
	c := &cobra.Command{Use: "user", Short: "Create, list, inspect and delete users; set PINs; reset lockouts"}
	var display string
	var pinFile string
	var after string
	var limit int
	c.AddCommand(
		e.apiCmd(apiCall{use: "add ID [--display-name NAME]", short: "Create a user", args: cobra.ExactArgs(1),
			example: "  outpost admin user add alice --display-name 'Alice Smith'",
			flags:   func(c *cobra.Command) { c.Flags().StringVar(&display, "display-name", "", "display name") },
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/users", map[string]string{"id": a[0], "display_name": display}, nil
			},
			text: func(e *env, o map[string]any) error { fmt.Fprintf(e.stdout, "created user %v\n", o["id"]); return nil }}),
		e.apiCmd(apiCall{use: "get ID", short: "Show a user", args: cobra.ExactArgs(1), example: "  outpost admin user get alice --json",
			call: func(a []string) (string, string, any, error) { return "GET", "/v1/users/" + esc(a[0]), nil, nil }}),
		e.apiCmd(apiCall{use: "list", short: "List users (paged by id)", example: "  outpost admin user list --limit 50",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&after, "after", "", "list users after this id")
				c.Flags().IntVar(&limit, "limit", 100, "page size (1 to 1000)")
			},
			call: func(a []string) (string, string, any, error) {
				q := url.Values{"limit": {fmt.Sprint(limit)}}
				if after != "" {
					q.Set("after", after)
				}
				return "GET", "/v1/users?" + q.Encode(), nil, nil
			},
			text: table("users", "id", "display_name", "has_pin", "failures", "locked", "created_at")}),
		e.apiCmd(apiCall{use: "delete ID", short: "Delete a user and their tokens", args: cobra.ExactArgs(1), example: "  outpost admin user delete alice",
			call: func(a []string) (string, string, any, error) { return "DELETE", "/v1/users/" + esc(a[0]), nil, nil },
			text: func(e *env, _ map[string]any) error { fmt.Fprintln(e.stdout, "deleted"); return nil }}),
		e.apiCmd(apiCall{use: "pin ID --pin-file FILE", short: "Set or change a user's static PIN (4 to 12 digits)", args: cobra.ExactArgs(1),
			example: "  outpost admin user pin alice --pin-file pin.txt",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&pinFile, "pin-file", "", "file holding the PIN (else a prompt); never a command-line argument")
			},
			call: func(a []string) (string, string, any, error) {
				p, err := passphraseSource{file: pinFile, prompt: "PIN for " + a[0]}.read(true)
				if err != nil {
					return "", "", nil, err
				}
				return "PUT", "/v1/users/" + esc(a[0]) + "/pin", map[string]string{"pin": string(p)}, nil
			},
			text: func(e *env, _ map[string]any) error { fmt.Fprintln(e.stdout, "PIN set"); return nil }}),
		e.apiCmd(apiCall{use: "unlock ID", short: "Reset a user's failure counter and lockout", args: cobra.ExactArgs(1), example: "  outpost admin user unlock alice",
			call: func(a []string) (string, string, any, error) {
				return "DELETE", "/v1/users/" + esc(a[0]) + "/lockout", nil, nil
			},
			text: func(e *env, _ map[string]any) error { fmt.Fprintln(e.stdout, "unlocked"); return nil }}),
	)
	return c
}

// adminTokenCmd is long because it is a table of five subcommands over one
// set of flag variables (their help, flags and API call side by side).
func (e *env) adminTokenCmd() *cobra.Command {
	c := &cobra.Command{Use: "token", Short: "Enrol, confirm, list, resync and delete a user's OTP tokens"}
	var user, typ, alg, seed, png, uriFile, code, code2, tok string
	var digits int
	var period uint64
	var showQR bool
	userFlag := func(c *cobra.Command) {
		c.Flags().StringVar(&user, "user", "", "user id (required)")
		_ = c.MarkFlagRequired("user")
	}
	tokFlag := func(c *cobra.Command) {
		userFlag(c)
		c.Flags().StringVar(&tok, "token", "", "token id (required)")
		_ = c.MarkFlagRequired("token")
	}
	c.AddCommand(
		e.apiCmd(apiCall{use: "add --user U [--type totp|hotp] [--algorithm SHA1] [--digits 6] [--period 30]",
			short:   "Enrol a token: prints its otpauth URI and QR code once; confirm it with a first code",
			example: "  outpost admin token add --user alice --qr\n  outpost admin token confirm --user alice --token tok_... --code 123456",
			flags: func(c *cobra.Command) {
				userFlag(c)
				c.Flags().StringVar(&typ, "type", "totp", "totp or hotp")
				c.Flags().StringVar(&alg, "algorithm", "SHA1", "SHA1, SHA256 or SHA512")
				c.Flags().IntVar(&digits, "digits", 6, "code length, 6 to 10")
				c.Flags().Uint64Var(&period, "period", 0, "TOTP step in seconds (default 30)")
				c.Flags().StringVar(&seed, "seed", "", "derived (default) or random")
				c.Flags().BoolVar(&showQR, "qr", false, "draw the QR code in the terminal")
				c.Flags().StringVar(&png, "png", "", "write the QR code PNG to FILE")
				c.Flags().StringVar(&uriFile, "uri-file", "", "write the otpauth URI to FILE (mode 0600) instead of printing it")
			},
			call: func(a []string) (string, string, any, error) {
				body := map[string]any{"type": typ, "algorithm": alg, "digits": digits}
				if period != 0 {
					body["period"] = period
				}
				if seed != "" {
					body["seed"] = seed
				}
				return "POST", "/v1/users/" + esc(user) + "/tokens", body, nil
			},
			text: func(e *env, o map[string]any) error {
				uri, _ := o["otpauth_uri"].(string)
				if uriFile != "" {
					// The URI holds the seed: as secret as the seed itself.
					if err := datadir.WriteFileAtomic(uriFile, []byte(uri+"\n"), 0o600); err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "token:       %v (pending until confirmed)\notpauth URI: written to %s\n", o["id"], uriFile)
				} else {
					fmt.Fprintf(e.stdout, "token:       %v (pending until confirmed)\notpauth URI: %s\n", o["id"], uri)
				}
				if png != "" {
					b, err := base64.StdEncoding.DecodeString(fmt.Sprint(o["qr_png"]))
					if err != nil {
						return err
					}
					if err := os.WriteFile(png, b, 0o600); err != nil {
						return err
					}
				}
				if showQR {
					t, err := qr.Terminal(uri)
					if err != nil {
						return err
					}
					fmt.Fprint(e.stdout, t)
				}
				return nil
			}}),
		e.apiCmd(apiCall{use: "confirm --user U [--token T] --code C", short: "Activate a pending token with its current code",
			long: `Activate a pending token with the code its authenticator shows now. Without
--token, the user's one pending token is meant (name it when there are several).`,
			example: "  outpost admin token confirm --user alice --code 123456\n  outpost admin token confirm --user alice --token tok_abc --code 123456",
			flags: func(c *cobra.Command) {
				userFlag(c)
				c.Flags().StringVar(&tok, "token", "", "token id (default: the user's one pending token)")
				c.Flags().StringVar(&code, "code", "", "current code from the authenticator (required)")
				_ = c.MarkFlagRequired("code")
			},
			resolve: func(ctx context.Context, cl *apiclient.Client) (err error) {
				if tok == "" {
					tok, err = pendingToken(ctx, cl, user)
				}
				return err
			},
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/users/" + esc(user) + "/tokens/" + esc(tok) + "/confirm", map[string]string{"code": code}, nil
			},
			text: func(e *env, o map[string]any) error {
				fmt.Fprintf(e.stdout, "token %v active\n", o["token"])
				return nil
			}}),
		e.apiCmd(apiCall{use: "list --user U", short: "List a user's tokens", example: "  outpost admin token list --user alice --json",
			flags: userFlag,
			call: func(a []string) (string, string, any, error) {
				return "GET", "/v1/users/" + esc(user) + "/tokens", nil, nil
			},
			text: table("tokens", "id", "type", "algorithm", "digits", "status", "created_at")}),
		e.apiCmd(apiCall{use: "delete --user U --token T", short: "Delete a token", example: "  outpost admin token delete --user alice --token tok_abc",
			flags: tokFlag,
			call: func(a []string) (string, string, any, error) {
				return "DELETE", "/v1/users/" + esc(user) + "/tokens/" + esc(tok), nil, nil
			},
			text: func(e *env, _ map[string]any) error { fmt.Fprintln(e.stdout, "deleted"); return nil }}),
		e.apiCmd(apiCall{use: "resync --user U --token T --code C1 --code2 C2", short: "Resynchronise an HOTP token with two consecutive codes",
			example: "  outpost admin token resync --user alice --token tok_abc --code 123456 --code2 654321",
			flags: func(c *cobra.Command) {
				tokFlag(c)
				c.Flags().StringVar(&code, "code", "", "first code")
				c.Flags().StringVar(&code2, "code2", "", "the next code")
			},
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/users/" + esc(user) + "/tokens/" + esc(tok) + "/resync", map[string]string{"code1": code, "code2": code2}, nil
			}}),
	)
	return c
}

// pendingToken names user's one pending token, for commands whose --token
// may be left out.
func pendingToken(ctx context.Context, cl *apiclient.Client, user string) (string, error) {
	var out struct {
		Tokens []struct{ ID, Status string } `json:"tokens"`
	}
	if err := cl.Do(ctx, "GET", "/v1/users/"+esc(user)+"/tokens", nil, &out); err != nil {
		return "", err
	}
	var ids []string
	for _, t := range out.Tokens {
		if t.Status == "pending" {
			ids = append(ids, t.ID)
		}
	}
	switch len(ids) {
	case 1:
		return ids[0], nil
	case 0:
		return "", usageError{fmt.Errorf("user %s has no pending token: enrol one with 'outpost admin token add --user %s'", user, user)}
	}
	return "", usageError{fmt.Errorf("user %s has %d pending tokens (%s): name one with --token", user, len(ids), strings.Join(ids, ", "))}
}

func (e *env) adminVerifyCmd() *cobra.Command {
	var user, code, pinFile string
	return e.apiCmd(apiCall{use: "verify --user U --code C [--pin-file FILE]",
		short:   "Verify a code online (exit 0 accepted, 3 refused, 4 locked)",
		example: "  outpost admin verify --user alice --code 123456",
		flags: func(c *cobra.Command) {
			c.Flags().StringVar(&user, "user", "", "user id (required)")
			c.Flags().StringVar(&code, "code", "", "the code (required)")
			c.Flags().StringVar(&pinFile, "pin-file", "", "file holding the user's PIN, when they have one")
			_ = c.MarkFlagRequired("user")
			_ = c.MarkFlagRequired("code")
		},
		call: func(a []string) (string, string, any, error) {
			body := map[string]string{"user": user, "code": code}
			if pinFile != "" {
				p, err := readServerPIN(pinFile)
				if err != nil {
					return "", "", nil, err
				}
				body["pin"] = p
			}
			return "POST", "/v1/verify", body, nil
		},
		text: func(e *env, o map[string]any) error {
			fmt.Fprintf(e.stdout, "accepted (token %v)\n", o["token"])
			return nil
		}})
}

func (e *env) adminAPIClientCmd() *cobra.Command {
	c := &cobra.Command{Use: "api-client", Short: "Create, list and disable API clients (tokens with scopes)"}
	var name, out string
	var scopes []string
	c.AddCommand(
		e.apiCmd(apiCall{use: "add --name N --scope verifier [--scope issuer]", short: "Create an API client; prints its token once",
			example: "  outpost admin api-client add --name door-controller --scope verifier",
			flags: func(c *cobra.Command) {
				c.Flags().StringVar(&name, "name", "", "client name")
				c.Flags().StringSliceVar(&scopes, "scope", nil, "admin, issuer or verifier (repeatable)")
				c.Flags().StringVar(&out, "out", "", "write the client's API token to FILE (mode 0600) instead of printing it")
			},
			call: func(a []string) (string, string, any, error) {
				return "POST", "/v1/api-clients", map[string]any{"name": name, "scopes": scopes}, nil
			},
			text: func(e *env, o map[string]any) error {
				if out != "" {
					if err := datadir.WriteFileAtomic(out, []byte(fmt.Sprint(o["token"])+"\n"), 0o600); err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "client: %v\ntoken:  written to %s\n", o["id"], out)
					return nil
				}
				fmt.Fprintf(e.stdout, "client: %v\ntoken:  %v\n(shown once: store it now)\n", o["id"], o["token"])
				return nil
			}}),
		e.apiCmd(apiCall{use: "list", short: "List API clients", example: "  outpost admin api-client list --json",
			call: func(a []string) (string, string, any, error) { return "GET", "/v1/api-clients", nil, nil },
			text: table("api_clients", "id", "name", "scopes", "disabled", "created_at")}),
		e.apiCmd(apiCall{use: "disable ID", short: "Disable an API client", args: cobra.ExactArgs(1), example: "  outpost admin api-client disable cli_0123",
			call: func(a []string) (string, string, any, error) {
				return "DELETE", "/v1/api-clients/" + esc(a[0]), nil, nil
			}}),
	)
	return c
}

func (e *env) adminAuditCmd() *cobra.Command {
	c := &cobra.Command{Use: "audit", Short: "Read and check the server's audit log through the API"}
	var after, limit int
	c.AddCommand(
		e.apiCmd(apiCall{use: "list", short: "List audit entries", example: "  outpost admin audit list --after 100 --limit 50 --json",
			flags: func(c *cobra.Command) {
				c.Flags().IntVar(&after, "after", 0, "entries after this sequence number")
				c.Flags().IntVar(&limit, "limit", 100, "page size (1 to 1000)")
			},
			call: func(a []string) (string, string, any, error) {
				return "GET", fmt.Sprintf("/v1/audit?after=%d&limit=%d", after, limit), nil, nil
			},
			text: table("entries", "seq", "time", "kind", "actor", "subject")}),
		e.apiCmd(apiCall{use: "verify", short: "Ask the server to recompute the audit chain", example: "  outpost admin audit verify",
			call: func(a []string) (string, string, any, error) { return "GET", "/v1/audit/verify", nil, nil }}),
		e.adminAuditCheckpointCmd(),
	)
	return c
}
