package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// adminOfflineCmd is long because it is a cobra command builder with many
// flags; its body only turns them into one API request and writes the answer.
func (e *env) adminOfflineCmd() *cobra.Command {
	c := &cobra.Command{Use: "offline", Short: "Issue offline bundles (hash lists) for field devices"}
	var sf serverFlags
	var user, token, device, from, until, out, pinFile string
	var count int
	var secrets []string
	var override bool
	b := &cobra.Command{
		Use:   "bundle --user U --device D (--count N | --from T1 --until T2) --out FILE",
		Short: "Issue a signed offline bundle for one user's token and one field device",
		Long: `Ask the server for a bundle: for an HOTP token the next --count counters after
the last one used online, for a TOTP token the steps from --from until --until
(RFC 3339 times, or durations from now such as 2h or 30m). The token keeps
working online. When the user has a PIN, give it with --pin-file: it is mixed
into every entry. --secret name=FILE adds a static secret released by a right
code. The server refuses a bundle below its attack-cost floor unless
--override-floor (admin scope; audited). Generation runs on the server's cores;
this command shows its progress and writes FILE for 'outpost field import'.`,
		Example: "  outpost admin offline bundle --user alice --device laptop-7 --from now --until 8h --pin-file pin.txt --out alice.bundle",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			body := map[string]any{"user": user, "device": device}
			if token != "" {
				body["token"] = token
			}
			if count != 0 {
				body["count"] = count
			}
			now := e.now()
			if from != "" || until != "" {
				if count != 0 {
					return usageError{errors.New("give --count (HOTP) or --from/--until (TOTP), not both")}
				}
				f, err := parseWhen(from, now)
				if err != nil {
					return usageError{fmt.Errorf("--from: %w", err)}
				}
				u, err := parseWhen(until, now)
				if err != nil {
					return usageError{fmt.Errorf("--until: %w", err)}
				}
				body["from"], body["until"] = f, u
			}
			if pinFile != "" {
				p, err := readServerPIN(pinFile)
				if err != nil {
					return err
				}
				body["pin"] = p
			}
			if len(secrets) > 0 {
				m := map[string]string{}
				for _, s := range secrets {
					name, file, ok := strings.Cut(s, "=")
					if !ok || name == "" {
						return usageError{fmt.Errorf("--secret %q: use name=FILE", s)}
					}
					v, err := datadir.ReadFileLimit(file, 4096)
					if err != nil {
						return err
					}
					m[name] = string(v)
				}
				body["secrets"] = m
			}
			if override {
				body["override_floor"] = true
			}
			cl, err := e.client(sf)
			if err != nil {
				return err
			}
			data, err := e.runBundleJob(c.Context(), cl.Do, cl.Raw, body)
			if err != nil {
				return apiErr(err)
			}
			if err := writeNew(out, data); err != nil {
				return err
			}
			if sf.asJSON {
				return e.printJSON(map[string]any{"out": out, "bytes": len(data)})
			}
			fmt.Fprintf(e.stdout, "wrote %s (%d bytes); import it with: outpost field import --data FDIR %s\n", out, len(data), out)
			return nil
		},
	}
	sf.register(b)
	fl := b.Flags()
	fl.StringVar(&user, "user", "", "user id (required)")
	fl.StringVar(&token, "token", "", "token id (default: the user's only active token)")
	fl.StringVar(&device, "device", "", "field device id the bundle is bound to (required)")
	fl.IntVar(&count, "count", 0, "HOTP: number of counters")
	fl.StringVar(&from, "from", "", "TOTP: start, RFC 3339 or a duration from now (default now)")
	fl.StringVar(&until, "until", "", "TOTP: end, RFC 3339 or a duration from now, e.g. 8h")
	fl.StringVar(&pinFile, "pin-file", "", "file holding the user's PIN (required when they have one)")
	fl.StringArrayVar(&secrets, "secret", nil, "static secret name=FILE released by a right code (repeatable)")
	fl.BoolVar(&override, "override-floor", false, "issue below the attack-cost floor (admin scope; audited)")
	fl.StringVar(&out, "out", "", "bundle file to write (required; never overwritten)")
	for _, r := range []string{"user", "device", "out"} {
		_ = b.MarkFlagRequired(r)
	}
	c.AddCommand(b)
	return c
}

// parseWhen reads an RFC 3339 time, "now", or a duration from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" || s == "now" {
		return now.UTC(), nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 2h", s)
	}
	return t, nil
}

// runBundleJob starts a bundle job, draws its progress, and returns the bundle.
func (e *env) runBundleJob(ctx context.Context, do func(context.Context, string, string, any, any) error,
	raw func(context.Context, string, string, any) ([]byte, error), body map[string]any) ([]byte, error) {
	var started struct {
		Job       string  `json:"job"`
		Entries   int     `json:"entries"`
		Estimated float64 `json:"estimated_seconds"`
	}
	if err := do(ctx, "POST", "/v1/offline/bundles?async=true", body, &started); err != nil {
		return nil, err
	}
	bar := newProgress(e.stderr, started.Entries)
	for {
		var st struct {
			State string `json:"state"`
			Done  int    `json:"done"`
			Total int    `json:"total"`
			Error string `json:"error"`
		}
		if err := do(ctx, "GET", "/v1/offline/jobs/"+started.Job, nil, &st); err != nil {
			return nil, err
		}
		bar.set(st.Done)
		switch st.State {
		case "done":
			bar.finish()
			return raw(ctx, "GET", "/v1/offline/jobs/"+started.Job+"/bundle", nil)
		case "failed":
			bar.finish()
			return nil, errors.New(st.Error)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// progress draws a bar on a terminal, or a line every 10% elsewhere.
type progress struct {
	w       io.Writer
	total   int
	start   time.Time
	tty     bool
	lastPct int
}

func newProgress(w io.Writer, total int) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progress{w: w, total: max(total, 1), start: time.Now(), tty: tty, lastPct: -1}
}

func (p *progress) set(done int) {
	pct := 100 * done / p.total
	el := time.Since(p.start)
	eta := "?"
	if done > 0 {
		eta = (time.Duration(float64(el) / float64(done) * float64(p.total-done))).Round(time.Second).String()
	}
	if p.tty {
		n := 30 * done / p.total
		fmt.Fprintf(p.w, "\r[%s%s] %d/%d entries, %s left ", strings.Repeat("#", n), strings.Repeat(".", 30-n), done, p.total, eta)
		return
	}
	if pct/10 != p.lastPct/10 {
		p.lastPct = pct
		fmt.Fprintf(p.w, "%d/%d entries (%d%%), %s left\n", done, p.total, pct, eta)
	}
}

func (p *progress) finish() {
	if p.tty {
		fmt.Fprintln(p.w)
	}
}
