package cli

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keyexport"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/qr"
	"github.com/outpost-auth/outpost/otp"
	"github.com/spf13/cobra"
)

// dataFlags are the flags every command that opens a server data directory shares.
type dataFlags struct {
	dir            string
	passphraseFile string
}

func (d *dataFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&d.dir, "data", "", "server data directory (required)")
	c.Flags().StringVar(&d.passphraseFile, "passphrase-file", "", "file holding the master key passphrase (else $"+PassphraseEnv+", else a prompt)")
	_ = c.MarkFlagRequired("data")
}

// openMaster opens the master key, warning loudly when it is stored unsealed.
// A wrong passphrase exits with ExitRefused, a damaged key file with ExitTampered.
func (e *env) openMaster(d dataFlags) (*keys.Master, error) {
	m, _, err := e.openMasterPass(d)
	return m, err
}

// openMasterPass is openMaster that also returns the passphrase it used (nil
// for an unsealed key), for commands that must compare another passphrase with it.
func (e *env) openMasterPass(d dataFlags) (*keys.Master, []byte, error) {
	var pass []byte
	if datadir.Initialised(d.dir) {
		// An unsealed key needs no passphrase; an empty one fails a sealed
		// key at once (no argon2id), so this costs nothing and never prompts.
		if m, s, err := datadir.LoadMaster(d.dir, nil); err == nil && s.Unsealed {
			e.warnUnsealed()
			return m, nil, nil
		}
		var err error
		pass, err = passphraseSource{file: d.passphraseFile, envVar: PassphraseEnv, prompt: "Master key passphrase"}.read(false)
		if err != nil {
			return nil, nil, err
		}
	}
	m, _, err := datadir.LoadMaster(d.dir, pass)
	switch {
	case errors.Is(err, keys.ErrWrongPassphrase):
		return nil, nil, withCode(ExitRefused, fmt.Errorf("%w: check --passphrase-file or $%s", err, PassphraseEnv))
	case errors.Is(err, keys.ErrMalformedFile):
		return nil, nil, withCode(ExitTampered, err)
	case err != nil:
		return nil, nil, err
	}
	return m, pass, nil
}

func (e *env) warnUnsealed() {
	fmt.Fprint(e.stderr, `WARNING: ********************************************************************
WARNING: the master key is stored UNSEALED (--dev-insecure-unsealed).
WARNING: Anyone who can read the data directory owns every credential.
WARNING: Never use this outside a demo: for real use, run 'outpost init' with a passphrase.
WARNING: ********************************************************************
`)
}

func (e *env) initCmd() *cobra.Command {
	var d dataFlags
	var insecure, asJSON bool
	c := &cobra.Command{
		Use:   "init --data DIR",
		Short: "Create a data directory with a new master key sealed under a passphrase",
		Long: `Create DIR (mode 0700) and a new 256-bit master key from crypto/rand, sealed
with argon2id and AES-256-GCM under a passphrase. The passphrase comes from
--passphrase-file, then $OUTPOST_PASSPHRASE, then a prompt (asked twice), and
must be at least 8 characters. An existing key is never overwritten.
Every other key is derived from the master key; losing the passphrase loses
them all: back up DIR/master.key and keep the passphrase somewhere else.
--dev-insecure-unsealed stores the key in the clear, for demos only, and every
command that opens it prints a warning. See docs/keys.md.`,
		Example: `  outpost init --data ./outpost-data --passphrase-file ./passphrase.txt
  OUTPOST_PASSPHRASE='a long passphrase' outpost init --data ./outpost-data
  outpost init --data ./demo-data --dev-insecure-unsealed   # demos only`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			// Refuse before asking for a passphrase that could not be used.
			if datadir.Initialised(d.dir) {
				return fmt.Errorf("%w: %s exists; refusing to overwrite a master key (every key derived from it would be lost): choose another --data directory",
					datadir.ErrAlreadyInitialised, filepath.Join(d.dir, datadir.MasterKeyFile))
			}
			if insecure && d.passphraseFile != "" {
				return usageError{errors.New("--dev-insecure-unsealed stores no passphrase: drop --passphrase-file, or drop --dev-insecure-unsealed to seal the key")}
			}
			var pass []byte
			if !insecure {
				var err error
				if pass, err = (passphraseSource{file: d.passphraseFile, envVar: PassphraseEnv, prompt: "New master key passphrase"}).read(true); err != nil {
					return err
				}
			}
			m, err := datadir.Init(d.dir, pass, insecure, e.now())
			if err != nil {
				return err
			}
			if insecure {
				e.warnUnsealed()
			}
			s := m.Signer(0)
			if asJSON {
				return e.printJSON(map[string]any{"data": d.dir, "signing_key_id": s.KeyID, "sealed": !insecure})
			}
			fmt.Fprintf(e.stdout, "Initialised %s\nSigning key: %s\nExport it for field devices with: outpost keys export-public --data %s\n", d.dir, s.KeyID, d.dir)
			return nil
		},
	}
	d.register(c)
	c.Flags().BoolVar(&insecure, "dev-insecure-unsealed", false, "store the master key WITHOUT a passphrase (demos only; prints a warning every time)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}

func (e *env) keysCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "keys",
		Short: "Export and inspect keys derived from the master key",
		Long: `Keys derived from the master key: the artifact signing public key that field
devices pin, and per-subject keys exported as passphrase-encrypted files.
See docs/keys.md for the key hierarchy.`,
		Example: `  outpost keys export-public --data ./outpost-data --out server.pub
  outpost keys export --subject tech-042 --out tech-042.key
  outpost keys inspect tech-042.key`,
	}
	c.AddCommand(e.keysExportPublicCmd(), e.keysExportCmd(), e.keysInspectCmd())
	return c
}

func (e *env) keysExportPublicCmd() *cobra.Command {
	var d dataFlags
	var out string
	var epoch uint32
	var asJSON bool
	c := &cobra.Command{
		Use:   "export-public --data DIR [--out FILE]",
		Short: "Write the artifact signing public key (PEM) for field devices to pin",
		Long: `Write the Ed25519 public key that signs bundles, packages and revocation lists,
as a PKIX PEM block (openssl pkey -pubin reads it) preceded by a line naming
its key id. Each --epoch has its own signing key; export the next epoch's key
and pin it before rotating to it.`,
		Example: `  outpost keys export-public --data ./outpost-data --out server.pub
  openssl pkey -pubin -in server.pub -noout -text`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			m, err := e.openMaster(d)
			if err != nil {
				return err
			}
			s := m.Signer(epoch)
			p := keys.MarshalPublicPEM(s.Public)
			if out != "" {
				if err := datadir.WriteFileAtomic(out, p, 0o644); err != nil {
					return fmt.Errorf("writing public key: %w", err)
				}
			}
			switch {
			case asJSON:
				return e.printJSON(map[string]any{"kid": s.KeyID, "epoch": epoch, "pem": string(p[bytes.Index(p, []byte("-----BEGIN")):]), "file": out})
			case out == "":
				_, err = e.stdout.Write(p)
				return err
			}
			fmt.Fprintf(e.stderr, "Wrote %s (key id %s, epoch %d)\n", out, s.KeyID, epoch)
			return nil
		},
	}
	d.register(c)
	c.Flags().StringVar(&out, "out", "", "write to FILE instead of standard output")
	c.Flags().Uint32Var(&epoch, "epoch", 0, "signing key epoch")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON (key id, epoch, PEM) for scripts")
	return c
}

func (e *env) keysExportCmd() *cobra.Command {
	var f siteFlags
	var subject, out, exportPassFile string
	var epoch uint32
	c := &cobra.Command{
		Use:   "export --subject S --out FILE",
		Short: "Write a subject's derived key as a passphrase-encrypted file (for a USB drive)",
		Long: `Derive subject S's key (HKDF of the master key, label subject-key, the epoch,
and S) and write it to FILE sealed under a new passphrase, known only to the
subject and an administrator (seed 000's encrypted key file). The key is the
subject's TOTP seed (SHA1, 6 digits, 30 s). The file's passphrase comes from
--export-passphrase-file or a prompt.

The server derives and seals the key (POST /v1/keys/subject-export, admin
scope: --server, --token-file, --cacert) and records key.export in its audit
log; the passphrase travels only inside the TLS request. With --data DIR the
same service runs on the data directory (air-gapped), with the same audit
log, and the passphrase must differ from the master key's (--passphrase-file,
else $` + PassphraseEnv + `, else a prompt).`,
		Example: `  outpost keys export --subject tech-042 --out tech-042.key --export-passphrase-file tech-042.pass
  outpost keys export --data ./outpost-data --subject tech-042 --out tech-042.key \
      --passphrase-file master.pass --export-passphrase-file tech-042.pass`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := keyexport.CheckSubject(subject); err != nil {
				return usageError{fmt.Errorf("--subject: %w", err)}
			}
			newPass := passphraseSource{file: exportPassFile, prompt: "Passphrase for " + out}
			return e.withSecretOut(c, &f, "passphrase-file", out, newPass, func(b siteBackend, pass []byte) error {
				k, err := b.ExportSubject(c.Context(), subject, epoch, pass)
				if err != nil {
					return e.siteFailure(&f, err)
				}
				if err := writeNewAs(out, k.Data, "key file", "out"); err != nil {
					return err
				}
				if f.api.asJSON {
					return e.printJSON(map[string]any{"file": out, "subject": subject, "epoch": epoch, "fingerprint": k.Fingerprint})
				}
				fmt.Fprintf(e.stderr, "Wrote %s for %s (epoch %d, fingerprint %s)\n", out, subject, epoch, k.Fingerprint)
				return nil
			})
		},
	}
	f.register(c, "passphrase-file")
	c.Flags().StringVar(&subject, "subject", "", "subject (technician, device) id (required)")
	c.Flags().StringVar(&out, "out", "", "key file to write (required; never overwritten)")
	c.Flags().StringVar(&exportPassFile, "export-passphrase-file", "", "file holding the key file's passphrase (else a prompt)")
	c.Flags().Uint32Var(&epoch, "epoch", 0, "key epoch")
	_ = c.MarkFlagRequired("subject")
	_ = c.MarkFlagRequired("out")
	return c
}

func (e *env) keysInspectCmd() *cobra.Command {
	var passFile string
	var showSecret, showQR, asJSON bool
	c := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Decrypt a key file and show what it holds",
		Long: `Open a key file written by 'outpost keys export' (or 'outpost admin site credential')
with its passphrase (--passphrase-file or a prompt) and print its subject,
epoch, creation time and fingerprint. The secret itself is printed only with
--show-secret (as an otpauth URI) or --qr (as a QR code for an authenticator app).`,
		Example: `  outpost keys inspect tech-042.key
  outpost keys inspect tech-042.key --passphrase-file tech-042.pass --json
  outpost keys inspect tech-042.key --qr`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			data, err := readInput(args[0], keys.MaxSealedFileSize)
			if err != nil {
				return err
			}
			// An empty passphrase costs nothing: it tells an unsealed or
			// malformed file apart before asking for the real one.
			s, secret, err := keys.Open(nil, data)
			if errors.Is(err, keys.ErrWrongPassphrase) {
				pass, perr := passphraseSource{file: passFile, prompt: "Passphrase for " + args[0]}.read(false)
				if perr != nil {
					return perr
				}
				s, secret, err = keys.Open(pass, data)
			}
			if errors.Is(err, keys.ErrWrongPassphrase) {
				return withCode(ExitRefused, fmt.Errorf("%s: %w: check the passphrase; if it is right, the file was damaged or tampered with", args[0], err))
			}
			if errors.Is(err, keys.ErrMalformedFile) {
				return withCode(ExitTampered, fmt.Errorf("%s: %w", args[0], err))
			}
			if err != nil {
				return err
			}
			if s.Unsealed {
				fmt.Fprintf(e.stderr, "WARNING: %s is UNSEALED: its key is stored in the clear and no passphrase protects it.\n", args[0])
			}
			info := map[string]any{"purpose": s.Purpose, "subject": s.Subject, "epoch": s.Epoch,
				"created": s.Created, "fingerprint": keyexport.Fingerprint(secret), "meta": s.Meta}
			var uri string
			if p, err := keyexport.TOTPFromMeta(s.Meta); err == nil {
				k := otp.Key{Params: p, Secret: secret, Issuer: s.Meta["issuer"], Account: s.Subject}
				uri = k.URI()
			}
			if (showSecret || showQR) && uri == "" {
				return errors.New("this key file carries no OTP parameters, so there is no otpauth URI to show")
			}
			if showSecret {
				info["otpauth_uri"] = uri
			}
			if asJSON {
				return e.printJSON(info)
			}
			fmt.Fprintf(e.stdout, "purpose:     %s\nsubject:     %s\nepoch:       %d\ncreated:     %s\nfingerprint: %s\n",
				s.Purpose, s.Subject, s.Epoch, s.Created.Format("2006-01-02T15:04:05Z07:00"), keyexport.Fingerprint(secret))
			if showSecret {
				fmt.Fprintf(e.stdout, "otpauth URI: %s\n", uri)
			}
			if showQR {
				t, err := qr.Terminal(uri)
				if err != nil {
					return err
				}
				fmt.Fprint(e.stdout, t)
			}
			return nil
		},
	}
	c.Flags().StringVar(&passFile, "passphrase-file", "", "file holding the key file's passphrase (else a prompt)")
	c.Flags().BoolVar(&showSecret, "show-secret", false, "print the secret as an otpauth URI")
	c.Flags().BoolVar(&showQR, "qr", false, "print the otpauth URI as a QR code for an authenticator app")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return c
}
