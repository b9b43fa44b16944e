package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/otp"
	"github.com/spf13/cobra"
)

func (e *env) fieldCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "field",
		Short: "Verify codes offline on a field device from bundles the server issued",
		Long: `A field device (a technician's laptop, a courier's phone) keeps a local store
in a data directory: the server's pinned public key, the device's own key,
the imported bundles, each token's state (last used code, failures, wipe) and
a signed, hash-chained log of every decision. See docs/offline.md.

Exit codes: 0 accepted, 3 refused (wrong, used or expired code, bundle for
another device or out of date), 4 locked or wiped after failures, 5 a bundle
or the local store failed its integrity check, 2 bad usage.`,
	}
	c.AddCommand(e.fieldInitCmd(), e.fieldImportCmd(), e.fieldVerifyCmd(false), e.fieldVerifyCmd(true), e.fieldStatusCmd(),
		e.fieldSyncCmd(), e.fieldExportSyncCmd(), e.fieldApplySyncCmd(), e.fieldEnrolCmd(), e.fieldLoginCmd(), e.fieldVouchCmd())
	return c
}

// fieldExit maps the offline package's errors to the exit codes of cli.go.
func fieldExit(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, offline.ErrLocked), errors.Is(err, offline.ErrWiped):
		return withCode(ExitLocked, err)
	case errors.Is(err, offline.ErrCorrupt), errors.Is(err, offline.ErrBadSignature), errors.Is(err, offline.ErrUnknownKey),
		errors.Is(err, offline.ErrMalformed), errors.Is(err, offline.ErrTooLarge):
		return withCode(ExitTampered, err)
	case errors.Is(err, offline.ErrRefused), errors.Is(err, offline.ErrWrongDevice), errors.Is(err, offline.ErrExpired),
		errors.Is(err, offline.ErrNotYetValid), errors.Is(err, offline.ErrStale), errors.Is(err, offline.ErrUnknownUser):
		return withCode(ExitRefused, err)
	case errors.Is(err, otp.ErrMalformedCode), errors.Is(err, offline.ErrPINRequired), errors.Is(err, offline.ErrPINNotUsed),
		errors.Is(err, offline.ErrAmbiguous), errors.Is(err, offline.ErrNoSecret):
		return usageError{err}
	}
	return err
}

func (e *env) openField(dir string) (*offline.Store, error) {
	s, err := offline.Open(context.Background(), dir, offline.Options{})
	return s, fieldExit(err)
}

func (e *env) fieldInitCmd() *cobra.Command {
	var dir, serverKey, device string
	var asJSON bool
	pol := offline.DefaultPolicy
	c := &cobra.Command{
		Use:   "init --data FDIR --server-key FILE --device-id ID",
		Short: "Create a field store: pin the server's key, make this device's key",
		Long: `Create the field data directory FDIR (mode 0700) with this device's Ed25519
key (device.key; device.pub to register the device with the server), and a
SQLite store that trusts bundles signed by the server key in FILE (from
'outpost keys export-public') and bound to device ID. The lockout policy is
fixed here: after --max-failures consecutive wrong codes for a token, every
bundle of that user on this device is deleted.`,
		Example: "  outpost field init --data ./field --server-key server.pub --device-id dev-7",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			pem, err := datadir.ReadFileLimit(serverKey, 16<<10)
			if err != nil {
				return fmt.Errorf("reading --server-key: %w", err)
			}
			pub, err := keys.ParsePublicPEM(pem)
			if err != nil {
				return usageError{fmt.Errorf("--server-key %s: %w", serverKey, err)}
			}
			if err := pol.Validate(); err != nil {
				return usageError{err}
			}
			s, err := offline.Init(c.Context(), dir, offline.Config{DeviceID: device, ServerKey: pub, Policy: pol}, offline.Options{})
			if err != nil {
				return fieldExit(err)
			}
			defer s.Close()
			kid := keys.KeyID(s.DevicePublicKey())
			if asJSON {
				return e.printJSON(map[string]any{"data": dir, "device": device, "device_key_id": kid,
					"server_key_id": keys.KeyID(pub), "policy": s.Policy()})
			}
			fmt.Fprintf(e.stdout, "Initialised field store %s for device %s\nDevice key:  %s (public key in %s/%s)\nServer key:  %s (pinned)\nWipe after %d failed attempts.\n",
				dir, device, kid, dir, offline.PublicKeyFile, keys.KeyID(pub), pol.MaxFailures)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().StringVar(&serverKey, "server-key", "", "the server's public key PEM file (required)")
	c.Flags().StringVar(&device, "device-id", "", "this device's id, as bundles name it (required)")
	c.Flags().IntVar(&pol.MaxFailures, "max-failures", pol.MaxFailures, "consecutive failures that wipe a user's bundles (1-1000)")
	c.Flags().DurationVar(&pol.DelayBase, "delay", pol.DelayBase, "wait after the first failure, doubling after each further one (0 = none)")
	c.Flags().DurationVar(&pol.DelayMax, "max-delay", pol.DelayMax, "longest wait between attempts")
	c.Flags().DurationVar(&pol.ClockTolerance, "clock-tolerance", pol.ClockTolerance, "how far the clock may go back, and bundle validity skew")
	c.Flags().IntVar(&pol.TOTPBack, "totp-back", pol.TOTPBack, "TOTP steps tried before the current one")
	c.Flags().IntVar(&pol.TOTPForward, "totp-forward", pol.TOTPForward, "TOTP steps tried after the current one")
	c.Flags().IntVar(&pol.HOTPLookahead, "hotp-lookahead", pol.HOTPLookahead, "HOTP counters tried after the next expected one")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	for _, f := range []string{"data", "server-key", "device-id"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}

func (e *env) fieldImportCmd() *cobra.Command {
	var dir string
	var asJSON bool
	c := &cobra.Command{
		Use:   "import --data FDIR BUNDLE",
		Short: "Import a bundle after checking its signature, device binding and validity",
		Long: `Verify BUNDLE (a file from 'outpost admin offline bundle' or 'outpost field
login') — signed by the pinned server key, bound to this device, valid now,
well-formed — and only then store it, replacing an older bundle (lower
serial) for the same token. A refused bundle changes nothing.`,
		Example: "  outpost field import --data ./field alice.bundle",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			data, err := readInput(args[0], offline.MaxBundleSize)
			if err != nil {
				return err
			}
			return e.withField(dir, func(s *offline.Store) error {
				res, err := s.Import(c.Context(), data)
				if err != nil {
					return fieldExit(fmt.Errorf("bundle %s refused: %w", args[0], err))
				}
				if asJSON {
					return e.printJSON(res)
				}
				if res.Unchanged {
					fmt.Fprintf(e.stdout, "Already imported: %s serial %d\n", res.TokenKey, res.Serial)
					return nil
				}
				fmt.Fprintf(e.stdout, "Imported %s: %s %s %d..%d (%d entries), serial %d, valid %s to %s\n",
					res.TokenKey, res.Type, counterWord(res.Type), res.First, res.Last, res.Entries, res.Serial,
					res.NotBefore.UTC().Format(time.RFC3339), res.NotAfter.UTC().Format(time.RFC3339))
				if res.Replaced != 0 {
					fmt.Fprintf(e.stdout, "Replaced serial %d.\n", res.Replaced)
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("data")
	return c
}

func counterWord(typ string) string {
	if typ == "totp" {
		return "steps"
	}
	return "counters"
}

func (e *env) fieldVerifyCmd(unlock bool) *cobra.Command {
	var dir, pinFile, secret string
	var a offline.Attempt
	var asJSON bool
	c := &cobra.Command{
		Use:     "verify --data FDIR --user U --code C [--pin P]",
		Short:   "Check a code offline; exit 0 when it is accepted",
		Example: "  outpost field verify --data ./field --user alice --code 123456 --pin 2468",
		Long: `Check a one-time code (and PIN, when the user's bundle needs one) against the
user's bundle on this device. TOTP tries only the steps around the device
clock, HOTP only the look-ahead after the last used counter; each code is
accepted once. A wrong code counts towards the wipe, and the next attempt
waits longer after each failure. --realm and --token are needed only when
the user has several tokens on this device.`,
		Args: cobra.NoArgs,
	}
	if unlock {
		c.Use = "unlock --data FDIR --user U --code C [--pin P] [--secret NAME]"
		c.Short = "Check a code offline and print the static secret it releases"
		c.Example = "  outpost field unlock --data ./field --user alice --code 123456 --secret door"
		c.Long = `Verify a code exactly as 'outpost field verify' does; on success, decrypt the
static secret(s) the bundle carries with the key the code released, and print
them: the one named by --secret, or all of them as NAME: VALUE lines. The
secret name is checked before the code is used.`
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := pinFromFile(&a.PIN, pinFile); err != nil {
			return err
		}
		return e.withField(dir, func(s *offline.Store) error {
			if unlock {
				res, secrets, err := s.Unlock(c.Context(), a, secret)
				return e.printUnlocked(res, secrets, err, asJSON, secret)
			}
			res, err := s.Verify(c.Context(), a)
			if err != nil {
				if asJSON {
					_ = e.printJSON(map[string]any{"ok": false, "error": err.Error()})
				}
				return fieldExit(err)
			}
			if asJSON {
				return e.printJSON(map[string]any{"ok": true, "realm": res.Realm, "user": res.User, "token": res.Token, "counter": res.Counter, "serial": res.Serial})
			}
			word := "counter"
			if res.Type == "totp" {
				word = "step"
			}
			fmt.Fprintf(e.stdout, "OK: %s accepted (%s %d)\n", res.TokenKey, word, res.Counter)
			return nil
		})
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().StringVar(&a.User, "user", "", "user id (required)")
	c.Flags().StringVar(&a.Realm, "realm", "", "realm, when the user has tokens in several")
	c.Flags().StringVar(&a.Token, "token", "", "token id, when the user has several tokens here")
	c.Flags().StringVar(&a.Code, "code", "", "the one-time code (required)")
	c.Flags().StringVar(&a.PIN, "pin", "", "the user's PIN, when the bundle needs one (visible to other local users; prefer --pin-file)")
	c.Flags().StringVar(&pinFile, "pin-file", "", "read the PIN from FILE")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	if unlock {
		c.Flags().StringVar(&secret, "secret", "", "print only the static secret NAME")
	}
	for _, f := range []string{"data", "user", "code"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}

// printUnlocked prints what Store.Unlock released: the one secret asked
// for, or every secret as NAME: VALUE lines; with --json, all of it.
func (e *env) printUnlocked(res *offline.Result, secrets map[string][]byte, err error, asJSON bool, name string) error {
	if err != nil {
		if asJSON {
			_ = e.printJSON(map[string]any{"ok": false, "error": err.Error()})
		}
		return fieldExit(err)
	}
	if asJSON {
		out := map[string]any{"ok": true, "realm": res.Realm, "user": res.User, "token": res.Token, "counter": res.Counter, "serial": res.Serial}
		text := map[string]string{}
		for n, v := range secrets {
			text[n] = string(v)
		}
		out["secrets"] = text
		return e.printJSON(out)
	}
	if name != "" {
		fmt.Fprintln(e.stdout, string(secrets[name]))
		return nil
	}
	names := make([]string, 0, len(secrets))
	for n := range secrets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(e.stdout, "%s: %s\n", n, secrets[n])
	}
	return nil
}

func (e *env) fieldStatusCmd() *cobra.Command {
	var dir string
	var asJSON bool
	c := &cobra.Command{
		Use:   "status --data FDIR",
		Short: "Show the device, its bundles, each token's state and the log",
		Long: `Show this device's id and key, the pinned server key, the policy, the clock
high-water mark, every token's bundle (entries left, validity, secrets by
name) and state (last used, failures, lock, wipe), and the device log's
length and head. Every stored bundle and the whole log are re-verified;
exit 5 when any of them fails.`,
		Example: "  outpost field status --data ./field --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return e.withField(dir, func(s *offline.Store) error {
				st, err := s.Status(c.Context())
				if err != nil {
					return fieldExit(err)
				}
				problems := 0
				for _, t := range st.Tokens {
					if t.Problem != "" {
						problems++
					}
				}
				if st.LogProblem != "" {
					problems++
				}
				if asJSON {
					if err := e.printJSON(st); err != nil {
						return err
					}
				} else {
					e.printFieldStatus(st)
				}
				if problems > 0 {
					return withCode(ExitTampered, fmt.Errorf("%w: %d problem(s) listed above", offline.ErrCorrupt, problems))
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("data")
	return c
}

func (e *env) printFieldStatus(st offline.Status) {
	w := e.stdout
	p := st.Policy
	fmt.Fprintf(w, "device:      %s (key %s)\nserver keys: %s\nclock seen:  %s\npolicy:      wipe after %d failures, delay %v..%v, clock tolerance %v, TOTP -%d..+%d, HOTP look-ahead %d\n",
		st.Device, st.DeviceKeyID, strings.Join(st.ServerKeyIDs, ", "), st.ClockHighWater.Format(time.RFC3339),
		p.MaxFailures, p.DelayBase, p.DelayMax, p.ClockTolerance, p.TOTPBack, p.TOTPForward, p.HOTPLookahead)
	fmt.Fprintf(w, "log:         %d entries", st.LogEntries)
	if st.LogHead != "" {
		fmt.Fprintf(w, ", head %s", st.LogHead[:16])
	}
	if st.LogProblem != "" {
		fmt.Fprintf(w, "\n             PROBLEM: %s", st.LogProblem)
	}
	fmt.Fprintln(w)
	if len(st.Tokens) == 0 {
		fmt.Fprintln(w, "tokens:      none (import a bundle with 'outpost field import')")
		return
	}
	fmt.Fprintln(w, "tokens:")
	for _, t := range st.Tokens {
		fmt.Fprintf(w, "  %s\n", t.TokenKey)
		switch {
		case t.Problem != "":
			fmt.Fprintf(w, "    PROBLEM: %s\n", t.Problem)
		case !t.Wiped.IsZero():
			fmt.Fprintf(w, "    WIPED at %s after %d failures\n", t.Wiped.Format(time.RFC3339), t.Failures)
		default:
			pin := ""
			if t.PIN {
				pin = " + PIN"
			}
			fmt.Fprintf(w, "    %s %d digits%s, %s %d..%d, %d of %d entries left, serial %d, valid until %s\n",
				t.Type, t.Digits, pin, counterWord(t.Type), t.First, t.Last, t.Remaining, t.Entries, t.Serial, t.NotAfter.UTC().Format(time.RFC3339))
			if len(t.Secrets) > 0 {
				fmt.Fprintf(w, "    static secrets: %s\n", strings.Join(t.Secrets, ", "))
			}
		}
		last := "none"
		if t.LastUsed != nil {
			last = fmt.Sprint(*t.LastUsed)
		}
		fmt.Fprintf(w, "    last used %s, %d consecutive failures", last, t.Failures)
		if !t.LockedUntil.IsZero() {
			fmt.Fprintf(w, ", locked until %s", t.LockedUntil.Format(time.RFC3339))
		}
		fmt.Fprintln(w)
	}
}

// withField opens the field store in dir for one command, runs fn on it and
// closes it.
func (e *env) withField(dir string, fn func(s *offline.Store) error) error {
	s, err := e.openField(dir)
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(s)
}
