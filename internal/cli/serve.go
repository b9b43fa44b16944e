package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/delivery"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/enrol"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/roster"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/siteissue"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/tlsboot"
	"github.com/spf13/cobra"
)

type serveFlags struct {
	manifestMaxAge      time.Duration
	deliveryAttempts    int
	data                dataFlags
	listen, database    string
	plaintext, insecure bool
	tlsCert, tlsKey     string
	sans                []string
	issuer, logLevel    string
	accessLog           string
	maxFailures         int
	shutdownGrace       time.Duration
	vouchExpiry         time.Duration
	readyFile           string
	checkpoints         checkpointExportFlags
	retention           retentionFlags
	notify              notifyFlags
	bundles             bundlePoolFlags
	// The device listener (docs/onboarding.md).
	deviceAddr, deviceReadyFile string
	deviceValidity, deviceGrace time.Duration
}

func (e *env) serveCmd() *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "serve --data DIR [--listen ADDR] [--database DSN]",
		Short: "Run the online authority (HTTPS API); initialises an empty data directory",
		Long: `Run the Outpost server. With an empty DIR it initialises itself first: a master
key sealed with a passphrase (from --passphrase-file, $OUTPOST_PASSPHRASE or a
prompt), the SQLite database DIR/outpost.db, a self-signed CA and server
certificate in DIR/tls, and a bootstrap admin API token in DIR/admin.token
(mode 0600, path printed).

HTTPS is the default; clients trust DIR/tls/ca.pem. --plaintext serves HTTP and
is accepted only on a loopback address. --database postgres://... uses
PostgreSQL instead of SQLite; several servers sharing one PostgreSQL database
(each with a copy of master.key) never accept one code twice.
Every --audit-checkpoint-every it signs the audit log's head into
DIR/audit-checkpoints (see 'outpost audit verify --checkpoint').
With --audit-retain 30d --audit-segment-dir DIR2 it exports audit entries
older than 30 days to signed segment files in DIR2, reads them back, and
prunes them from the database (docs/storage.md; run it on one replica).
With --smtp-addr (email) or --sms-url (phones), delivery codes go to their
recipients through the outbox, with retries and dead letters ('outpost admin
outbox'), and the API no longer returns them; shipper webhooks ('outpost admin
webhook set') receive every delivery state change, signed.
SIGTERM or SIGINT stops it gracefully. Logs are JSON lines on standard error.`,
		Example: "  outpost serve --data ./outpost-data --listen 127.0.0.1:8443",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return e.serve(c.Context(), f)
		},
	}
	f.data.register(c)
	fl := c.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8443", "address to listen on")
	fl.StringVar(&f.database, "database", "", "database DSN: a SQLite path or postgres://... (default DIR/outpost.db)")
	fl.BoolVar(&f.plaintext, "plaintext", false, "serve plain HTTP (only on a loopback address)")
	fl.BoolVar(&f.insecure, "dev-insecure-unsealed", false, "when initialising, store the master key WITHOUT a passphrase (demos only)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate chain to serve instead of the self-signed one")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key for --tls-cert")
	fl.StringSliceVar(&f.sans, "tls-san", nil, "extra DNS name or IP for the self-signed server certificate (repeatable)")
	fl.StringVar(&f.issuer, "issuer", "Outpost", "issuer name shown in authenticator apps")
	fl.DurationVar(&f.vouchExpiry, "vouch-expiry", roster.DefaultExpiry, "how long a device's vouch waits for the device to enrol")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fl.StringVar(&f.accessLog, "access-log", "all", "which requests the access log records: all, errors, none, or 1/N (one successful request in N, every failure)")
	fl.IntVar(&f.maxFailures, "max-failures", online.DefaultPolicy.MaxFailures, "consecutive failures before a user is locked (1 to 100)")
	fl.DurationVar(&f.shutdownGrace, "shutdown-grace", 15*time.Second, "how long to let requests finish on SIGTERM")
	fl.DurationVar(&f.manifestMaxAge, "manifest-max-age", delivery.DefaultManifestMaxAge, "how long a courier device may check codes offline after the sync that gave it its route manifest (1s to 168h)")
	fl.IntVar(&f.deliveryAttempts, "delivery-attempts", courierproto.DefaultAttempts, "attempts per delivery on a courier device (1 to 100)")
	fl.StringVar(&f.readyFile, "ready-file", "", "write the listening URL to FILE once serving (for scripts and tests)")
	f.checkpoints.register(c)
	f.retention.register(c)
	f.notify.register(c)
	f.bundles.register(c)
	fl.StringVar(&f.deviceAddr, "device-addr", "", "also serve onboarded devices (enrolment, EST, mutual TLS) on ADDR, TLS 1.3 with the device CA")
	fl.StringVar(&f.deviceReadyFile, "device-ready-file", "", "write the device listener's URL to FILE once serving")
	fl.DurationVar(&f.deviceValidity, "device-cert-validity", enrol.DefaultValidity, "lifetime of a device certificate")
	fl.DurationVar(&f.deviceGrace, "device-grace", enrol.DefaultGrace, "how long after expiry a device certificate may still renew itself")
	return c
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (e *env) serve(ctx context.Context, f serveFlags) error {
	if f.plaintext && !isLoopback(f.listen) {
		return usageError{fmt.Errorf("--plaintext is only allowed on a loopback address (127.0.0.1:PORT or [::1]:PORT), not %q: remove --plaintext to serve HTTPS", f.listen)}
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return usageError{errors.New("--tls-cert and --tls-key go together")}
	}
	if err := f.checkpoints.validate(); err != nil {
		return err
	}
	if err := f.retention.validate(); err != nil {
		return err
	}
	channels, err := f.notify.config()
	if err != nil {
		return err
	}
	pool, err := f.bundles.pool()
	if err != nil {
		return err
	}
	if pool != nil {
		defer pool.Close()
	}
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level: %w", err)}
	}
	logger := slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	access, err := server.ParseAccessLog(f.accessLog)
	if err != nil {
		return usageError{fmt.Errorf("--access-log: %w", err)}
	}

	m, err := e.initOrOpenMaster(f, logger)
	if err != nil {
		return err
	}
	st, err := openDatabase(ctx, f.data.dir, f.database)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := e.migrateSitesOnStart(ctx, st, f.data.dir, logger); err != nil {
		return err
	}
	pol := online.DefaultPolicy
	pol.MaxFailures = f.maxFailures
	if f.manifestMaxAge < time.Second || f.manifestMaxAge > courierproto.MaxMaxAge || f.deliveryAttempts < 1 || f.deliveryAttempts > courierproto.MaxAttempts {
		return usageError{fmt.Errorf("--manifest-max-age must be 1s to %v and --delivery-attempts 1 to %d", courierproto.MaxMaxAge, courierproto.MaxAttempts)}
	}
	srv, err := server.New(server.Config{Store: st, Master: m, Policy: pol, Logger: logger, Issuer: f.issuer,
		AccessLog: access, AuditSegmentDir: f.retention.dir, AuditCheckpointDir: f.checkpoints.checkpointDir(f.data.dir),
		Notify: channels, Outbox: f.notify.policy, WebhookTimeout: f.notify.webhookTimeout,
		VouchExpiry: f.vouchExpiry, DeviceValidity: f.deviceValidity, DeviceGrace: f.deviceGrace,
		ManifestMaxAge: f.manifestMaxAge, DeliveryAttempts: f.deliveryAttempts,
		BundlePool: pool, DurableJobs: true, EnqueueOnly: pool == nil})
	if err != nil {
		return usageError{err}
	}
	if err := e.bootstrapToken(ctx, srv, f.data.dir); err != nil {
		return err
	}
	stopCheckpoints := f.checkpoints.start(ctx, f.data.dir, srv, logger)
	defer stopCheckpoints()
	stopRetention := f.retention.start(ctx, srv, logger)
	defer stopRetention()
	if pool != nil {
		stopJobs := workBundles(ctx, srv, workerOwner(), logger)
		defer stopJobs()
	}

	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	ln, scheme, err := e.listen(f, m, hs)
	if err != nil {
		return err
	}
	url := scheme + "://" + ln.Addr().String()
	logger.Info("serving", "url", url, "engine", st.Engine(), "signing_key", srv.Signer().KeyID)
	if f.readyFile != "" {
		if err := datadir.WriteFileAtomic(f.readyFile, []byte(url+"\n"), 0o644); err != nil {
			return err
		}
	}

	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(ln) }()
	if f.deviceAddr != "" {
		ds, err := e.serveDevices(f, srv, logger, errc)
		if err != nil {
			return err
		}
		defer ds.Close()
	}
	go srv.Housekeep(sigCtx, 5*time.Second)
	stopOutbox := f.notify.start(sigCtx, srv, channels, logger)
	defer stopOutbox()
	select {
	case err := <-errc:
		return err
	case <-sigCtx.Done():
	}
	logger.Info("shutting down", "grace", f.shutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	if err := srv.FlushUnknown(sctx); err != nil {
		logger.Warn("writing the unknown-user tally to the audit log", "error", err.Error())
	}
	logger.Info("stopped")
	return nil
}

// initOrOpenMaster unseals the master key of f's data directory; a first
// start initialises the directory and keeps the new master key, so the
// passphrase is asked for once (and repeated), not again to unseal.
func (e *env) initOrOpenMaster(f serveFlags, logger *slog.Logger) (*keys.Master, error) {
	if datadir.Initialised(f.data.dir) {
		return e.openMaster(f.data)
	}
	var pass []byte
	if !f.insecure {
		var err error
		if pass, err = (passphraseSource{file: f.data.passphraseFile, envVar: PassphraseEnv, prompt: "New master key passphrase"}).read(true); err != nil {
			return nil, err
		}
	}
	m, err := datadir.Init(f.data.dir, pass, f.insecure, e.now())
	if err != nil {
		return nil, err
	}
	clear(pass)
	if f.insecure {
		e.warnUnsealed()
	}
	logger.Info("initialised data directory", "data", f.data.dir)
	return m, nil
}

// listen opens f's listening socket for hs: plain HTTP with --plaintext,
// else TLS with the certificate serverCert chooses (set in hs.TLSConfig).
func (e *env) listen(f serveFlags, m *keys.Master, hs *http.Server) (net.Listener, string, error) {
	if f.plaintext {
		ln, err := net.Listen("tcp", f.listen)
		if err != nil {
			return nil, "", fmt.Errorf("listening on %s: %w", f.listen, err)
		}
		return ln, "http", nil
	}
	// The certificate (and DIR/tls/ca.pem) exists before the port opens,
	// so that a client that sees the port open finds the CA file. The
	// names depend on the host, which --listen gives, not on the port.
	cert, err := e.serverCert(f, m, f.listen)
	if err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, "", fmt.Errorf("listening on %s: %w", f.listen, err)
	}
	hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	return tls.NewListener(ln, hs.TLSConfig), "https", nil
}

// migrateSitesOnStart imports DIR/sites.db of an earlier version into the
// database (siteissue.MigrateLegacy), once.
func (e *env) migrateSitesOnStart(ctx context.Context, st store.Store, dir string, logger *slog.Logger) error {
	ss, ok := st.(store.SiteStore)
	if !ok {
		return nil
	}
	m, found, err := siteissue.MigrateLegacy(ctx, ss, siteissue.Actor{Realm: server.DefaultRealm, Name: "serve"}, dir, e.now())
	if err != nil {
		return fmt.Errorf("importing %s: %w", filepath.Join(dir, siteissue.LegacyFile), err)
	}
	if found {
		logger.Info("imported site state", "file", m.File, "scopes", len(m.Scopes), "new", len(m.Imported), "renamed_to", m.RenamedTo)
	}
	return nil
}

// bootstrapToken writes the first admin API token to DIR/admin.token.
func (e *env) bootstrapToken(ctx context.Context, srv *server.Server, dir string) error {
	tok, err := srv.Bootstrap(ctx)
	if err != nil {
		return fmt.Errorf("bootstrapping: %w", err)
	}
	path := filepath.Join(dir, datadir.AdminTokenFile)
	if tok == "" {
		if _, err := os.Stat(path); err != nil {
			fmt.Fprintf(e.stderr, "This database was bootstrapped before; use an existing admin API token (none at %s).\n", path)
		}
		return nil
	}
	if err := datadir.WriteFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the admin token: %w", err)
	}
	fmt.Fprintf(e.stderr, "Bootstrap admin API token written to %s (mode 0600). Keep it secret.\n", path)
	return nil
}

func (e *env) serverCert(f serveFlags, m *keys.Master, addr string) (tls.Certificate, error) {
	if f.tlsCert != "" {
		return tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	}
	cert, err := tlsboot.Load(filepath.Join(f.data.dir, datadir.TLSDir), m, serverNames(f, addr), e.now())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate: %w", err)
	}
	return cert, nil
}

// serverNames are the names a listener on addr is reached by: loopback,
// its host, this machine's name and --tls-san.
func serverNames(f serveFlags, addr string) []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if host, _, err := net.SplitHostPort(addr); err == nil && host != "" && !net.ParseIP(host).IsUnspecified() {
		names = append(names, host)
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
	}
	return dedupe(append(names, f.sans...))
}

func dedupe(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// serveDevices opens the device listener (--device-addr): TLS 1.3 with a
// certificate from the device CA for the same names as the API's, client
// certificates requested and checked at every handshake. Its errors go to errc.
func (e *env) serveDevices(f serveFlags, srv *server.Server, logger *slog.Logger, errc chan<- error) (*http.Server, error) {
	ln, err := net.Listen("tcp", f.deviceAddr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", f.deviceAddr, err)
	}
	tc, err := srv.DeviceTLSConfig(serverNames(f, ln.Addr().String()))
	if err != nil {
		ln.Close()
		return nil, err
	}
	ds := &http.Server{Handler: srv.DeviceHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	url := "https://" + ln.Addr().String()
	logger.Info("serving devices", "url", url)
	if f.deviceReadyFile != "" {
		if err := datadir.WriteFileAtomic(f.deviceReadyFile, []byte(url+"\n"), 0o644); err != nil {
			ln.Close()
			return nil, err
		}
	}
	go func() { errc <- ds.Serve(tls.NewListener(ln, tc)) }()
	return ds, nil
}
