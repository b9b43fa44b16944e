// Package cli implements the outpost command tree with cobra. Each command
// parses flags, reads files and calls a library package; none of them holds
// security logic of its own.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/site"
	"github.com/spf13/cobra"
)

// Exit codes, documented in the README ("Exit codes").
const (
	ExitOK       = 0
	ExitError    = 1 // any failure not listed below
	ExitUsage    = 2 // bad flags or arguments
	ExitRefused  = 3 // a verification was refused (wrong, replayed or expired code)
	ExitLocked   = 4 // locked out or wiped after too many failures
	ExitTampered = 5 // a signed file or store failed its integrity check
)

// exitError carries an exit code through cobra's error return.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withCode attaches an exit code to err.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// Version is set at build time with -ldflags "-X github.com/outpost-auth/outpost/internal/cli.Version=v1.2.3".
var Version = "dev"

// Main runs the command line and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "outpost:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitCode(err)
}

// exitCode is the one rule that gives an error without an explicit code its
// exit code: usage errors 2; a signed file that is expired, not yet valid or
// bound to another identity 3 (refused); any other signed or sealed file,
// store or input that fails its integrity or bounds check 5; the rest 1.
func exitCode(err error) int {
	switch {
	case isUsageError(err) || strings.HasPrefix(err.Error(), "unknown command ") || strings.HasPrefix(err.Error(), "required flag(s) "):
		return ExitUsage
	case errors.Is(err, artifact.ErrExpired), errors.Is(err, artifact.ErrNotYetValid), errors.Is(err, artifact.ErrWrongBound),
		errors.Is(err, keys.ErrWrongPassphrase):
		return ExitRefused
	case errors.Is(err, artifact.ErrInvalid), errors.Is(err, artifact.ErrBadSig), errors.Is(err, artifact.ErrUnknownKey),
		errors.Is(err, artifact.ErrTooLarge), errors.Is(err, datadir.ErrTooLarge), errors.Is(err, keys.ErrMalformedFile),
		errors.Is(err, offline.ErrMalformed), errors.Is(err, offline.ErrCorrupt), errors.Is(err, site.ErrCorrupt), errors.Is(err, site.ErrBadPackage):
		return ExitTampered
	}
	return ExitError
}

// readInput reads a file a command was given, bounded by limit: one rule for
// every input file. A file that cannot be read (missing, unreadable) exits 1;
// one over its size limit failed its bounds check and exits 5, like any
// other file that fails its integrity check.
func readInput(path string, limit int64) ([]byte, error) {
	b, err := datadir.ReadFileLimit(path, limit)
	switch {
	case errors.Is(err, datadir.ErrTooLarge):
		return nil, withCode(ExitTampered, err)
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return b, nil
}

type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func isUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// env carries the process streams to every command.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// now is the clock every command hands down (clock.System).
	now func() time.Time
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, now: clock.System}
	root := &cobra.Command{
		Use:   "outpost",
		Short: "Offline-first authentication: issue credentials online, verify them where there is no network",
		Long: `Outpost issues one-time-password credentials while online and verifies them
where there is no network, then reconciles everything when the network returns.

Roles are subcommands: 'outpost init' and 'outpost keys' manage the root of
trust, 'outpost serve' runs the online authority. Every command has --help.`,
		Example: `  outpost init --data ./outpost-data
  outpost keys export-public --data ./outpost-data --out server.pub
  outpost version --json`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	// The command tree, wired here and nowhere else.
	admin := &cobra.Command{Use: "admin", Short: "Administer a running Outpost server (users, tokens, sites, offline bundles)",
		Long: `Administrative commands. Those that talk to a server find it with --server URL
(or $OUTPOST_SERVER), authenticate with --token-file FILE (or $OUTPOST_TOKEN),
and trust its CA with --cacert FILE.`, Example: "  outpost admin --help"}
	admin.AddCommand(e.adminUserCmd(), e.adminTokenCmd(), e.adminAPIClientCmd(), e.adminVerifyCmd(), e.adminAuditCmd(),
		e.adminOfflineCmd(), e.adminSiteCmd(), e.adminDeviceCmd(), e.adminDeliveryCmd(), e.adminImportSyncCmd(),
		e.adminOutboxCmd(), e.adminWebhookCmd(), e.adminRosterCmd())
	admin.AddCommand(e.adminOnboardedCmd(), e.adminCertCmd()) // device onboarding: ca.go
	bench := &cobra.Command{Use: "bench", Short: "Measure Outpost on this machine and print a table",
		Long: `Benchmarks that compare Outpost side by side with a baseline measured in the
same run (a no-op handler, raw argon2id, the raw OTP engine) and report ratios,
because shared machines are noisy. Record results in docs/BENCHMARKS.md.`, Example: "  outpost bench --help"}
	bench.AddCommand(e.benchOnlineCmd(), e.benchOfflineCmd(), e.benchSyncCmd(), e.benchSiteCmd(), e.benchDeliveriesCmd())
	bench.AddCommand(e.benchNotifyCmd())
	bench.AddCommand(e.benchReplicasCmd())   // serve replicas on one PostgreSQL: bench_replicas.go
	bench.AddCommand(e.benchOnboardingCmd()) // device onboarding, vouch ingest included: bench_onboarding.go
	root.AddCommand(e.versionCmd(), e.initCmd(), e.keysCmd(), e.otpCmd(), e.serveCmd(), e.auditCmd(),
		e.offlineCmd(), e.fieldCmd(), e.siteCmd(), newDeviceCmd(), admin, bench, e.courierCmd(), e.deliveryCmd())
	root.AddCommand(e.caCmd())     // device onboarding: ca.go
	root.AddCommand(e.workerCmd()) // bundle jobs beside the servers: worker.go
	usageArgs(root)
	groupExamples(root)
	unknownSubcommands(root)
	return root
}

// unknownSubcommands makes a group (a command that only holds others) print
// its help when called alone, and refuse an unknown subcommand with exit 2,
// as the root does (cobra would print the help and exit 0).
func unknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		unknownSubcommands(sub)
	}
	if c.Runnable() || !c.HasSubCommands() || !c.HasParent() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q for %q (see '%s --help')", args[0], cmd.CommandPath(), cmd.CommandPath())}
		}
		return cmd.Help()
	}
}

// groupExamples gives a command that only groups others (and has no Example
// of its own) one example per child: the first line of the child's Example.
func groupExamples(c *cobra.Command) {
	for _, sub := range c.Commands() {
		groupExamples(sub)
	}
	if c.Runnable() || c.Example != "" {
		return
	}
	var lines []string
	for _, sub := range c.Commands() {
		if first, _, _ := strings.Cut(sub.Example, "\n"); strings.TrimSpace(first) != "" && sub.IsAvailableCommand() {
			lines = append(lines, first)
		}
	}
	c.Example = strings.Join(lines, "\n")
}

// usageArgs makes a wrong number of arguments a usage error (exit 2) on every
// command, as a bad flag already is.
func usageArgs(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
}

func (e *env) versionCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "version",
		Short:   "Print the Outpost version",
		Long:    "Print the Outpost version and the Go version it was built with.",
		Example: "  outpost version\n  outpost version --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			goVersion := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				goVersion = bi.GoVersion
			}
			if asJSON {
				return e.printJSON(map[string]string{"version": Version, "go": goVersion})
			}
			fmt.Fprintf(e.stdout, "outpost %s (%s)\n", Version, goVersion)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
