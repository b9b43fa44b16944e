package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/apiclient"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/offline"
	"github.com/spf13/cobra"
)

// Sync commands of a field device (docs/sync.md): children of 'outpost field'.

// syncExit maps sync errors to exit codes: 5 when a log or store does not
// match (tampering or a restored store), 3 when the server refuses this
// device or upload, the field codes otherwise.
func syncExit(err error) error {
	var se *offline.ServerError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		switch se.Code {
		case "log_rewritten", "log_truncated", "broken_chain", "state_backwards":
			return withCode(ExitTampered, err)
		case "device_revoked", "unknown_device", "replayed_upload", "upload_expired", "upload_not_yet_valid", "sync_gap":
			return withCode(ExitRefused, err)
		}
		return err
	case errors.Is(err, offline.ErrSyncMismatch):
		return withCode(ExitTampered, err)
	case errors.Is(err, offline.ErrStaleResponse):
		return withCode(ExitRefused, err)
	}
	return fieldExit(err)
}

// syncTarget finds the server: --server, else the one the store remembers,
// else $OUTPOST_SERVER; the CA file likewise.
type syncTarget struct{ server, cacert string }

func (f *syncTarget) register(c *cobra.Command) {
	c.Flags().StringVar(&f.server, "server", "", "server URL (else the one used last, else $"+ServerEnv+"); remembered for next time")
	c.Flags().StringVar(&f.cacert, "cacert", "", "PEM CA certificate to trust, the server's DIR/tls/ca.pem (else remembered, else $"+CACertEnv+")")
}

func (f syncTarget) client(ctx context.Context, s *offline.Store) (*offline.SyncClient, error) {
	st, err := s.SyncState(ctx)
	if err != nil {
		return nil, fieldExit(err)
	}
	srv, ca := f.server, f.cacert
	if srv == "" {
		srv, ca = st.Server, firstOf(ca, st.CACert)
	}
	if srv == "" {
		srv = os.Getenv(ServerEnv)
	}
	if ca == "" {
		ca = os.Getenv(CACertEnv)
	}
	if srv == "" {
		return nil, usageError{errors.New("no server: pass --server URL (it is remembered) or set " + ServerEnv)}
	}
	c, err := offline.NewSyncClient(srv, ca)
	if err != nil {
		return nil, usageError{err}
	}
	if srv != st.Server || ca != st.CACert {
		if err := s.RememberServer(ctx, srv, ca); err != nil {
			return nil, fieldExit(err)
		}
	}
	return c, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (e *env) fieldSyncCmd() *cobra.Command {
	var dir string
	var tg syncTarget
	var asJSON bool
	var waitRefill time.Duration
	c := &cobra.Command{
		Use:   "sync --data FDIR [--server URL] [--cacert FILE]",
		Short: "Send this device's state and log to the server, get the server's state back",
		Long: `Sync with the server, in both directions. The device sends, signed with its
own key, the state of every token (last used code, failures, wipe) and the
entries of its log the server has not acknowledged; the server records every
offline event in its audit log once, raises each token's online counter to
the maximum of both sides (codes used offline are refused online from now
on), and answers, signed with its key, with its own state: codes used online
are refused here from now on, and bundles of disabled or deleted tokens are
deleted. Tokens running low on entries may get a refill bundle. A code
accepted both here and online (or on another device) is reported as a
conflict: the server recorded it as a replay incident. A refill the server
is still computing is collected by syncing again (for up to --wait-refill;
any later sync also collects it). The server applies this device's claims
only for bundles it issued to this device: others are reported as ignored
(and recorded as incidents on the server).

Run it again after any failure: nothing is applied twice. The device must be
registered first ('outpost admin device register' with FDIR/device.pub, or
'outpost field enrol' with a one-time code). Exit 5 when the server's copy of
this device's log does not match it (the store was altered or restored),
3 when the server refuses this device.`,
		Example: "  outpost field sync --data ./field --server https://outpost.example:8443 --cacert ca.pem",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return e.withField(dir, func(s *offline.Store) error {
				cl, err := tg.client(c.Context(), s)
				if err != nil {
					return err
				}
				cl.RefillWait = waitRefill
				rep, err := s.Sync(c.Context(), cl)
				if err != nil {
					return syncExit(err)
				}
				if asJSON {
					return e.printJSON(rep)
				}
				e.printSyncReport(rep)
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	tg.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	c.Flags().DurationVar(&waitRefill, "wait-refill", 2*time.Minute, "how long to keep syncing for refills the server is still computing (0: do not wait)")
	_ = c.MarkFlagRequired("data")
	return c
}

func (e *env) printSyncReport(rep offline.SyncReport) {
	w := e.stdout
	if rep.Uploads > 0 {
		fmt.Fprintf(w, "Synced: %d upload(s), %d log entries sent; the server holds this log up to entry %d.\n", rep.Uploads, rep.Sent, rep.Acked)
	} else {
		fmt.Fprintf(w, "Applied the server's answer; it holds this log up to entry %d.\n", rep.Acked)
	}
	for _, k := range rep.Advanced {
		fmt.Fprintf(w, "  %s: codes used online are now refused here\n", k)
	}
	for _, k := range rep.Revoked {
		fmt.Fprintf(w, "  %s: the server disabled or deleted this token; its bundle was deleted\n", k)
	}
	for _, r := range rep.Imported {
		fmt.Fprintf(w, "  %s: refill imported, %s %d..%d (%d entries), serial %d\n", r.TokenKey, counterWord(r.Type), r.First, r.Last, r.Entries, r.Serial)
	}
	for _, n := range rep.NoRefill {
		fmt.Fprintf(w, "  no refill for %s\n", n)
	}
	for _, p := range rep.Pending {
		fmt.Fprintf(w, "  %s: refill %s still being computed by the server: run 'outpost field sync' again in a while to collect it\n", p.TokenKey, p.ID)
	}
	if m := rep.Manifest; m != nil && !m.Unchanged {
		fmt.Fprintf(w, "  route manifest %d installed: %d deliveries ('outpost courier route' lists them)\n", m.Serial, m.Deliveries)
	}
	for _, a := range rep.Receipts {
		if a.Status == offline.ReceiptRefused {
			fmt.Fprintf(w, "WARNING: receipt of delivery %s refused by the server (%s)\n", a.Delivery, a.Reason)
		} else {
			fmt.Fprintf(w, "  delivery %s: receipt %s\n", a.Delivery, a.Status)
		}
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  PROBLEM: %s\n", p)
	}
	for _, i := range rep.Ignored {
		fmt.Fprintf(w, "WARNING: %s\n", i)
	}
	for _, c := range rep.Conflicts {
		fmt.Fprintf(w, "WARNING: %s counter %d was accepted here (log entry %d) and also %s: the server recorded a replay incident\n",
			c.TokenKey, c.Counter, c.DeviceSeq, strings.Replace(c.Other, "device:", "on device ", 1))
	}
}

func (e *env) fieldExportSyncCmd() *cobra.Command {
	var dir string
	var valid time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:   "export-sync --data FDIR FILE",
		Short: "Write the signed sync upload to FILE, for a server with no network path (USB stick)",
		Long: `Write what 'outpost field sync' would send — this device's signed state and the
log entries the server has not acknowledged — to FILE, for an administrator
to import with 'outpost admin import-sync FILE --out ANSWER'. Carry ANSWER
back and apply it with 'outpost field apply-sync'. The server applies the
file with exactly the same checks as an online sync; a file is accepted for
--valid-for (default 14 days), and only if no newer upload of this device was
applied first. When more entries remain than one file carries, apply the
answer and export again. FILE is never overwritten.`,
		Example: "  outpost field export-sync --data ./field /media/usb/van-7.sync",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return e.withField(dir, func(s *offline.Store) error {
				data, info, err := s.PrepareUpload(c.Context(), offline.UploadOptions{Validity: valid})
				if err != nil {
					return fieldExit(err)
				}
				if err := writeNew(args[0], data); err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(map[string]any{"file": args[0], "bytes": len(data), "upload": info})
				}
				fmt.Fprintf(e.stdout, "Wrote %s: upload %d, log entries %d..%d of %d, %d token states, valid until %s.\n",
					args[0], info.Serial, info.From, info.To, info.Head, info.Tokens, info.NotAfter.Format(time.RFC3339))
				if info.More {
					fmt.Fprintln(e.stdout, "More entries remain: apply the server's answer, then export again.")
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().DurationVar(&valid, "valid-for", syncproto.FileValidity, "how long the server accepts the file (at most 2160h)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("data")
	return c
}

func (e *env) fieldApplySyncCmd() *cobra.Command {
	var dir string
	var asJSON bool
	c := &cobra.Command{
		Use:   "apply-sync --data FDIR ANSWER",
		Short: "Apply the server's answer to an exported sync file",
		Long: `Apply ANSWER, written by 'outpost admin import-sync', after checking it is
signed by the pinned server key, answers an upload of this device, is not
older than an answer already applied, and acknowledges this device's own log.
Exactly what 'outpost field sync' does with the server's answer.`,
		Example: "  outpost field apply-sync --data ./field /media/usb/van-7.answer",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			data, err := readInput(args[0], syncproto.MaxResponseSize)
			if err != nil {
				return err
			}
			return e.withField(dir, func(s *offline.Store) error {
				rep, err := s.ApplyResponse(c.Context(), data)
				if err != nil {
					if errors.Is(err, offline.ErrStaleResponse) || errors.Is(err, offline.ErrSyncMismatch) {
						return syncExit(err)
					}
					return withCode(ExitTampered, fmt.Errorf("%s refused: %w", args[0], err))
				}
				if asJSON {
					return e.printJSON(rep)
				}
				e.printSyncReport(rep)
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	_ = c.MarkFlagRequired("data")
	return c
}

func (e *env) fieldEnrolCmd() *cobra.Command {
	var dir, code string
	var asJSON bool
	var tg syncTarget
	c := &cobra.Command{
		Use:   "enrol --data FDIR --server URL --code CODE",
		Short: "Register this device's key with the server using a one-time enrolment code",
		Long: `Register this device with the server without carrying its public key to an
administrator: the administrator creates a one-time code for this device id
('outpost admin device enrol-code --id ID'); this command sends the device's
public key with the code, signed with the device key. A code works once and
expires (default 24 hours).`,
		Example: "  outpost field enrol --data ./field --server https://outpost.example:8443 --cacert ca.pem --code ABCD-EFGH-...",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return e.withField(dir, func(s *offline.Store) error {
				cl, err := tg.client(c.Context(), s)
				if err != nil {
					return err
				}
				if err := s.Enrol(c.Context(), cl, code); err != nil {
					var se *offline.ServerError
					if errors.As(err, &se) && se.Code == "invalid_enrolment" {
						return withCode(ExitRefused, err)
					}
					return err
				}
				if asJSON {
					return e.printJSON(map[string]any{"device": s.DeviceID(), "key_id": keys.KeyID(s.DevicePublicKey()), "enrolled": true})
				}
				fmt.Fprintf(e.stdout, "Device %s enrolled with key %s; sync with 'outpost field sync --data %s'.\n", s.DeviceID(), keys.KeyID(s.DevicePublicKey()), dir)
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().StringVar(&code, "code", "", "the one-time enrolment code (required)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	tg.register(c)
	_ = c.MarkFlagRequired("data")
	_ = c.MarkFlagRequired("code")
	return c
}

func (e *env) fieldLoginCmd() *cobra.Command {
	var dir, user, code, pin, pinFile, tokenFile, forDur string
	var count int
	var tg syncTarget
	var asJSON bool
	c := &cobra.Command{
		Use:   "login --data FDIR --server URL --user U --code C --pin P",
		Short: "Online PIN + OTP login that brings a PIN bundle to this device",
		Long: `Authenticate the user online with their PIN and a current code; on success the
server returns a bundle with the PIN mixed into every entry (the server holds
the PIN only during this login), which is imported here. This is how a
device gets, or renews, a PIN bundle: the server cannot refill one at sync.
By default the bundle covers the next 2 hours (TOTP) or 20 counters (HOTP);
--for and --count choose. The call needs an API token with the verifier
scope (--token-file, else $` + TokenEnv + `). When the device is registered, a sync
follows, so that the server's state arrives with the bundle.`,
		Example: "  outpost field login --data ./field --server https://outpost.example:8443 --user alice --code 123456 --pin-file pin.txt --token-file verifier.token",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := pinFromFile(&pin, pinFile); err != nil {
				return err
			}
			if pin == "" {
				return usageError{errors.New("a login needs the user's PIN (--pin or --pin-file): it is mixed into the bundle")}
			}
			return e.withField(dir, func(s *offline.Store) error {
				sc, err := tg.client(c.Context(), s)
				if err != nil {
					return err
				}
				tok, err := apiToken(tokenFile)
				if err != nil {
					return err
				}
				if tok == "" {
					return usageError{errors.New("no API token: pass --token-file FILE (verifier scope) or set " + TokenEnv)}
				}
				st, _ := s.SyncState(c.Context())
				cl, err := apiclient.New(sc.URL, tok, firstOf(tg.cacert, firstOf(st.CACert, os.Getenv(CACertEnv))))
				if err != nil {
					return usageError{err}
				}
				body := map[string]any{"user": user, "code": code, "pin": pin, "device": s.DeviceID()}
				if count > 0 {
					body["count"] = count
				}
				if forDur != "" {
					d, err := time.ParseDuration(forDur)
					if err != nil || d <= 0 {
						return usageError{fmt.Errorf("--for %q: give a duration such as 8h", forDur)}
					}
					now := e.now().UTC()
					body["from"], body["until"] = now, now.Add(d)
				}
				data, err := cl.Raw(c.Context(), "POST", "/v1/offline/login", body)
				if err != nil {
					return apiErr(err)
				}
				res, err := s.Import(c.Context(), data)
				if err != nil {
					return fieldExit(fmt.Errorf("the login bundle was refused: %w", err))
				}
				out := map[string]any{"imported": res}
				rep, serr := s.Sync(c.Context(), sc)
				if serr == nil {
					out["sync"] = rep
				} else {
					out["sync_error"] = serr.Error()
				}
				if asJSON {
					return e.printJSON(out)
				}
				fmt.Fprintf(e.stdout, "Logged in online; imported %s: %s %s %d..%d (%d entries), PIN bundle, valid until %s\n",
					res.TokenKey, res.Type, counterWord(res.Type), res.First, res.Last, res.Entries, res.NotAfter.UTC().Format(time.RFC3339))
				if serr != nil {
					fmt.Fprintf(e.stdout, "(no sync: %v)\n", serr)
				} else {
					e.printSyncReport(rep)
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&dir, "data", "", "field data directory (required)")
	c.Flags().StringVar(&user, "user", "", "user id (required)")
	c.Flags().StringVar(&code, "code", "", "a current one-time code (required)")
	c.Flags().StringVar(&pin, "pin", "", "the user's PIN (visible to other local users; prefer --pin-file)")
	c.Flags().StringVar(&pinFile, "pin-file", "", "read the PIN from FILE")
	c.Flags().StringVar(&tokenFile, "token-file", "", "file holding an API token with the verifier scope (else $"+TokenEnv+")")
	c.Flags().IntVar(&count, "count", 0, "HOTP: counters in the bundle (server default 20)")
	c.Flags().StringVar(&forDur, "for", "", "TOTP: how long the bundle covers, e.g. 8h (server default 2h)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	tg.register(c)
	for _, f := range []string{"data", "user", "code"} {
		_ = c.MarkFlagRequired(f)
	}
	return c
}
