package cli

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"path/filepath"

	"github.com/outpost-auth/outpost/internal/apiclient"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keyexport"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/siteissue"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/site"
	"github.com/spf13/cobra"
)

// The one call `outpost admin site …` and `outpost keys export` make goes
// to a siteBackend: the server's API (the default), or, with --data DIR,
// the same services (internal/siteissue, internal/keyexport) on the data
// directory's store, for air-gapped issuing. Either way the rules, the
// state and the audit entries are the server's.

type siteBackend interface {
	Scope(ctx context.Context, scope string) (siteissue.Scope, error)
	UpdatePolicy(ctx context.Context, scope string, c siteissue.PolicyChange) (siteissue.Scope, error)
	Provision(ctx context.Context, scope, siteID string, passphrase []byte) (siteissue.Provisioned, error)
	Credential(ctx context.Context, req siteissue.CredentialRequest) (siteissue.CredentialInfo, error)
	Revoke(ctx context.Context, scope string, add, undo []string, reason string) (siteissue.RevocationResult, error)
	Roll(ctx context.Context, scope string) (siteissue.RollResult, error)
	ExportSubject(ctx context.Context, subject string, epoch uint32, passphrase []byte) (keyexport.File, error)
	Close() error
}

// siteFlags choose the backend: --server/--token-file/--cacert (and their
// environment variables) for the API, or --data DIR [--database DSN] and a
// master key passphrase for the local mode.
type siteFlags struct {
	api            serverFlags
	data, database string
	masterPassFile string
}

// register adds the flags; masterFlag names the local mode's master key
// passphrase flag (passphrase-file, or master-passphrase-file where
// --passphrase-file is another passphrase).
func (f *siteFlags) register(c *cobra.Command, masterFlag string) {
	f.api.register(c)
	fl := c.Flags()
	fl.StringVar(&f.data, "data", "", "work on this server data directory instead of through the API (air-gapped issuing; same service, same audit log)")
	fl.StringVar(&f.database, "database", "", "with --data: the server's database, a SQLite path or postgres://... (default DIR/outpost.db)")
	fl.StringVar(&f.masterPassFile, masterFlag, "", "with --data: file holding the master key passphrase (else $"+PassphraseEnv+", else a prompt)")
}

// local reports whether the command works on a data directory.
func (f *siteFlags) local() bool { return f.data != "" }

// siteBackend opens the backend f chooses.
func (e *env) siteBackend(ctx context.Context, c *cobra.Command, f *siteFlags, masterFlag string) (siteBackend, error) {
	if !f.local() {
		for _, name := range []string{"database", masterFlag} {
			if c.Flags().Changed(name) {
				return nil, usageError{fmt.Errorf("--%s goes with --data DIR (without it, the command calls the server's API)", name)}
			}
		}
		cl, err := e.client(f.api)
		if err != nil {
			var u usageError
			if errors.As(err, &u) {
				return nil, usageError{fmt.Errorf("%w, or give --data DIR to work on a data directory", err)}
			}
			return nil, err
		}
		return remoteSites{cl}, nil
	}
	if f.api.server != "" || f.api.tokenFile != "" || f.api.cacert != "" {
		return nil, usageError{errors.New("--data works on a data directory, --server/--token-file/--cacert on a server's API: give one or the other")}
	}
	m, pass, err := e.openMasterPass(dataFlags{dir: f.data, passphraseFile: f.masterPassFile})
	if err != nil {
		return nil, err
	}
	st, err := e.openLocalStore(ctx, f.data, f.database)
	if err != nil {
		return nil, err
	}
	ss, ok := st.(store.SiteStore)
	if !ok {
		st.Close()
		return nil, errors.New("this store does not hold site state")
	}
	by := localActor()
	if err := e.migrateSites(ctx, ss, by, f.data); err != nil {
		st.Close()
		return nil, err
	}
	is := siteissue.New(ss, m)
	is.Now, is.MasterPassphrase = e.now, pass
	x := &keyexport.Exporter{Master: m, Audit: &audit.Log{Store: st, Now: e.now}, MasterPassphrase: pass, Now: e.now}
	return &localSites{is: is, x: x, by: by, st: st}, nil
}

// openLocalStore opens the server's database: dsn, or DIR/outpost.db.
func (e *env) openLocalStore(ctx context.Context, dir, dsn string) (store.Store, error) {
	if !datadir.Initialised(dir) {
		return nil, fmt.Errorf("%s is not an Outpost data directory (no %s): give the server's --data DIR", dir, datadir.MasterKeyFile)
	}
	if dsn == "" {
		dsn = filepath.Join(dir, datadir.DatabaseFile)
	}
	st, err := store.Open(ctx, dsn, store.WithClock(e.now))
	if err != nil {
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	return st, nil
}

// migrateSites imports DIR/sites.db of an earlier version, if there is one,
// and says so: the local mode must carry on where that file stopped.
func (e *env) migrateSites(ctx context.Context, ss store.SiteStore, by siteissue.Actor, dir string) error {
	m, found, err := siteissue.MigrateLegacy(ctx, ss, by, dir, e.now())
	if err != nil || !found {
		return err
	}
	fmt.Fprintf(e.stderr, "Imported %s into the database: scopes %v (%d new); renamed it %s\n", m.File, m.Scopes, len(m.Imported), m.RenamedTo)
	return nil
}

// localActor names the local mode's user in audit entries.
func localActor() siteissue.Actor {
	name := "local"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = "local:" + u.Username
	}
	return siteissue.Actor{Realm: server.DefaultRealm, Name: name}
}

// localSites is the local mode: the services on the data directory's store.
type localSites struct {
	is *siteissue.Issuer
	x  *keyexport.Exporter
	by siteissue.Actor
	st store.Store
}

func (l *localSites) Close() error { return l.st.Close() }

func (l *localSites) Scope(ctx context.Context, scope string) (siteissue.Scope, error) {
	return l.is.Scope(ctx, l.by, scope)
}

func (l *localSites) UpdatePolicy(ctx context.Context, scope string, c siteissue.PolicyChange) (siteissue.Scope, error) {
	return l.is.UpdatePolicy(ctx, l.by, scope, c)
}

func (l *localSites) Provision(ctx context.Context, scope, siteID string, passphrase []byte) (siteissue.Provisioned, error) {
	return l.is.Provision(ctx, l.by, scope, siteID, passphrase)
}

func (l *localSites) Credential(ctx context.Context, req siteissue.CredentialRequest) (siteissue.CredentialInfo, error) {
	c, err := l.is.Credential(ctx, l.by, req)
	if err != nil {
		return siteissue.CredentialInfo{}, err
	}
	return c.Info(), nil
}

func (l *localSites) Revoke(ctx context.Context, scope string, add, undo []string, reason string) (siteissue.RevocationResult, error) {
	return l.is.Revoke(ctx, l.by, scope, add, undo, reason)
}

func (l *localSites) Roll(ctx context.Context, scope string) (siteissue.RollResult, error) {
	return l.is.Roll(ctx, l.by, scope)
}

func (l *localSites) ExportSubject(ctx context.Context, subject string, epoch uint32, passphrase []byte) (keyexport.File, error) {
	return l.x.ExportSubject(ctx, l.by.Name, subject, epoch, passphrase)
}

// remoteSites is the API.
type remoteSites struct{ cl *apiclient.Client }

func (r remoteSites) Close() error { return nil }

func scopePath(scope string) string { return "/v1/sites/scopes/" + esc(scope) }

func (r remoteSites) Scope(ctx context.Context, scope string) (out siteissue.Scope, err error) {
	return out, r.cl.Do(ctx, "GET", scopePath(scope), nil, &out)
}

func (r remoteSites) UpdatePolicy(ctx context.Context, scope string, c siteissue.PolicyChange) (out siteissue.Scope, err error) {
	return out, r.cl.Do(ctx, "PUT", scopePath(scope), c, &out)
}

func (r remoteSites) Provision(ctx context.Context, scope, siteID string, passphrase []byte) (out siteissue.Provisioned, err error) {
	body := map[string]string{"site": siteID, "passphrase": string(passphrase)}
	return out, r.cl.Do(ctx, "POST", scopePath(scope)+"/provision", body, &out)
}

func (r remoteSites) Credential(ctx context.Context, req siteissue.CredentialRequest) (out siteissue.CredentialInfo, err error) {
	body := map[string]any{"tech": req.Tech, "reinstate": req.Reinstate}
	switch req.Epoch {
	case siteissue.Current:
		body["epoch"] = "current"
	case siteissue.Next:
		body["epoch"] = "next"
	default:
		body["epoch"] = int64(req.Epoch)
	}
	if req.Passphrase != nil {
		body["passphrase"] = string(req.Passphrase)
	}
	return out, r.cl.Do(ctx, "POST", scopePath(req.Scope)+"/credential", body, &out)
}

func (r remoteSites) Revoke(ctx context.Context, scope string, add, undo []string, reason string) (out siteissue.RevocationResult, err error) {
	body := map[string]any{"tech": add, "undo": undo, "reason": reason}
	return out, r.cl.Do(ctx, "POST", scopePath(scope)+"/revoke", body, &out)
}

func (r remoteSites) Roll(ctx context.Context, scope string) (out siteissue.RollResult, err error) {
	return out, r.cl.Do(ctx, "POST", scopePath(scope)+"/roll", struct{}{}, &out)
}

func (r remoteSites) ExportSubject(ctx context.Context, subject string, epoch uint32, passphrase []byte) (out keyexport.File, err error) {
	body := map[string]any{"subject": subject, "epoch": epoch, "passphrase": string(passphrase)}
	return out, r.cl.Do(ctx, "POST", "/v1/keys/subject-export", body, &out)
}

// siteFailure gives a backend's error its exit code: an invalid id, a weak
// passphrase or the master key's passphrase is a usage error (2), as bad
// flags are; with --json, a server's refusal is also printed on standard
// output (as for every API command).
func (e *env) siteFailure(f *siteFlags, err error) error {
	var ae *apiclient.Error
	switch {
	case errors.As(err, &ae) && (ae.Code == "invalid_id" || ae.Code == "weak_passphrase"):
		_ = e.apiFailure(f.api, err)
		return usageError{err}
	case errors.As(err, &ae):
		return e.apiFailure(f.api, err)
	case errors.Is(err, site.ErrBadID), errors.Is(err, keys.ErrWeakPassphrase), errors.Is(err, keyexport.ErrMasterPassphrase):
		return usageError{err}
	}
	return err
}

// withSiteBackend opens the backend f chooses for one command, runs fn on it
// and closes it.
func (e *env) withSiteBackend(c *cobra.Command, f *siteFlags, masterFlag string, fn func(b siteBackend) error) error {
	b, err := e.siteBackend(c.Context(), c, f, masterFlag)
	if err != nil {
		return err
	}
	defer b.Close()
	return fn(b)
}

// withSecretOut is withSiteBackend for a command that writes a new
// passphrase-sealed file to out: out must not exist yet, and fn gets the
// file's passphrase from newPass (asked twice at a prompt).
func (e *env) withSecretOut(c *cobra.Command, f *siteFlags, masterFlag, out string, newPass passphraseSource, fn func(b siteBackend, pass []byte) error) error {
	if err := notThere(out); err != nil {
		return err
	}
	return e.withSiteBackend(c, f, masterFlag, func(b siteBackend) error {
		pass, err := newPass.read(true)
		if err != nil {
			return err
		}
		return fn(b, pass)
	})
}
