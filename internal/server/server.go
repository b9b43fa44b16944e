// Package server is Outpost's HTTP front end. [New] builds an http.Handler
// from a [Config]; `outpost serve` (internal/cli) wraps it with TLS,
// signals and the data directory.
//
// It holds no rule. Each handler parses the request, authorises it (the
// scopes in routes.go's routeTable, the one list of every route), calls one
// method of a service and writes the answer:
//
//   - internal/apitoken: API clients and their tokens;
//   - internal/online: users, their PINs and lockout, tokens, online verification;
//   - internal/issuance: offline bundles, their jobs, the PIN bundle of an
//     online login (and, for sync, refills);
//   - internal/fieldsync: the device registry and field-device sync;
//   - internal/siteissue and internal/keyexport: site verifiers (scopes,
//     packages, credentials, revocation, key rolls) and subject key files;
//   - internal/audit and internal/auditcheck: the audit log and its checkpoints.
//
// New wires the services together (issuance and fieldsync call each other
// through one method each); docs/server.md ("Where the rules live") says
// which rule is in which.
//
// Request bodies are JSON, at most 1 MiB (413), with unknown fields and
// trailing data refused (400); a sync upload is the device's signed file,
// at most syncproto.MaxUploadSize. Answers are JSON, or a signed artifact
// (a bundle, a sync answer, a checkpoint) as it is. Errors are
// {"error":{"code":"…","message":"…"}} with the right status. Requests
// authenticate with "Authorization: Bearer <API token>"; each route needs
// one of the scopes admin, issuer or verifier (admin may do everything),
// except health, metrics and public keys, and sync and device enrolment,
// which the device's signature (and to enrol, its enrolment code)
// authenticates. Logs (Config.Logger; JSON lines under `outpost serve`)
// never contain a code, PIN, seed or token.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/outpost-auth/outpost/internal/apitoken"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/delivery"
	"github.com/outpost-auth/outpost/internal/enrol"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/issuance"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/notify"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/outbox"
	"github.com/outpost-auth/outpost/internal/roster"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/prometheus/client_golang/prometheus"
)

// MaxBody is the largest request body accepted.
const MaxBody = 1 << 20

// Config is what a server needs.
type Config struct {
	Store  store.Store
	Master *keys.Master
	Policy online.Policy
	Logger *slog.Logger
	// AccessLog says which requests the access log records (accesslog.go);
	// the zero value records every request.
	AccessLog AccessLog
	// Issuer is the name shown in authenticator apps (otpauth issuer).
	Issuer string
	// Registry receives the server's Prometheus metrics; nil makes a new one.
	Registry *prometheus.Registry
	// Now is the server's clock; nil is the system clock.
	Now func() time.Time
	// BundleKDF is the argon2id cost of offline bundle entries; the zero
	// value is cost.Default. BundleFloor is the attack-cost floor; nil is
	// cost.DefaultFloor. (Cheap values are for tests; the floor still applies.)
	BundleKDF   cost.KDF
	BundleFloor *cost.Floor
	// SiteKDF is the argon2id cost of site packages and exported key files;
	// the zero value is keys.DefaultKDF.
	SiteKDF keys.KDFParams
	// AuditSegmentDir is where the audit log is exported to signed segments
	// before it is pruned (docs/storage.md); "" disables export and prune.
	// AuditCheckpointDir is where scheduled checkpoints are exported
	// (searched for one to end an export at).
	AuditSegmentDir, AuditCheckpointDir string
	// Notify are the recipients' notifiers (internal/notify). With one,
	// delivery codes go to recipients through the outbox and the API no
	// longer returns them; with none, it does.
	Notify notify.Channels
	// Outbox is the outbox worker's retry policy (zero: outbox.DefaultPolicy);
	// WebhookTimeout bounds one shipper event POST (zero: 10 s).
	Outbox         outbox.Policy
	WebhookTimeout time.Duration
	// VouchExpiry is how long a device's vouch waits for it to enrol; 0
	// means roster.DefaultExpiry.
	VouchExpiry time.Duration
	// Vouches is the roster of vouched devices that onboarding asks; nil
	// means the server's own roster (the one sync fills), when its store
	// holds one, else every enrolment is refused with "no roster
	// configured".
	Vouches enrol.Vouches
	// DeviceValidity is a device certificate's lifetime (enrol.DefaultValidity
	// when zero); DeviceGrace how long after expiry it may still renew
	// (enrol.DefaultGrace when zero).
	DeviceValidity, DeviceGrace time.Duration
	// ManifestMaxAge is how long a courier device may check codes offline
	// after the sync that gave it its route manifest; 0 means
	// delivery.DefaultManifestMaxAge. DeliveryAttempts is the attempt limit
	// per delivery on the device; 0 means courierproto.DefaultAttempts.
	ManifestMaxAge   time.Duration
	DeliveryAttempts int
	// DeliveryCosts are the hash and fingerprint modes' argon2id costs and
	// floor; the zero value is internal/codecheck's defaults and
	// cost.DeliveryFloor. (Cheap values are for tests; the floor still applies.)
	DeliveryCosts courierproto.Costs
	// BundlePool bounds the cores, memory and queue of bundle and refill
	// generation (internal/workpool; `outpost serve --bundle-workers`); nil
	// computes one bundle at a time on every core. The caller closes it.
	BundlePool *workpool.Pool
	// DurableJobs keeps bundle jobs in the store (issuance.Service.Durable):
	// every replica reports every job, and a process running WorkBundles on
	// the database computes them. EnqueueOnly computes no bundle here
	// (`outpost serve --bundle-workers 0` beside `outpost worker`).
	DurableJobs, EnqueueOnly bool
	// BundleJobLease is a claimed job's lease (0: issuance.DefaultLease).
	BundleJobLease time.Duration
}

// Server is the HTTP API.
type Server struct {
	cfg      Config
	audit    *audit.Log
	tokens   *apitoken.Hasher
	signer   *keys.Signer
	log      *slog.Logger
	access   *sampler
	mux      *http.ServeMux
	metrics  *metrics
	registry *prometheus.Registry
	routes   []route
	auth     authCache
	// outage rate-limits the log of the database's refusals (http.go).
	outage outageLog

	// The services the handlers call (see New).
	clients *apitoken.Clients
	svc     *online.Service
	bundles *issuance.Service
	// field is the sync service (nil when the store cannot sync).
	field *fieldsync.Service
	// checkpoints signs the audit log's head (audit_checkpoint.go).
	checkpoints *auditcheck.Notary
	// archive exports and prunes the audit log (audit_segments.go); nil
	// without Config.AuditSegmentDir.
	archive *auditcheck.Archive
	// sync holds the sync handlers' metrics (sync.go).
	sync *syncAPI
	// sites holds the site and key export services (sites.go).
	sites *siteAPI
	// deliveries is the delivery service (deliveries.go); nil when the
	// store cannot hold deliveries.
	deliveries *delivery.Service
	// outbox is the outbox service and worker (outbox.go); nil when the
	// store cannot hold an outbox.
	outbox *outbox.Service
	// roster is the device roster (roster.go); nil when the store holds none.
	roster *roster.Service
	// onboard is the onboarding service and the device CA (onboarding.go);
	// deviceMux serves the device listener's routes.
	onboard   *onboardAPI
	deviceMux *http.ServeMux
}

// New returns a server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Policy == (online.Policy{}) {
		cfg.Policy = online.DefaultPolicy
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	if cfg.VouchExpiry < 0 || cfg.VouchExpiry > roster.MaxExpiry {
		return nil, fmt.Errorf("vouch expiry %v out of range (0 for the default of %v, at most %v)", cfg.VouchExpiry, roster.DefaultExpiry, roster.MaxExpiry)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "Outpost"
	}
	cfg.Now = clock.Or(cfg.Now)
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	al := &audit.Log{Store: cfg.Store, Now: cfg.Now}
	s := &Server{
		cfg:      cfg,
		audit:    al,
		tokens:   apitoken.NewHasher(cfg.Master),
		signer:   cfg.Master.Signer(0),
		log:      cfg.Logger,
		access:   &sampler{AccessLog: cfg.AccessLog},
		registry: cfg.Registry,
	}
	s.metrics = newMetrics(cfg.Registry)
	s.sync = newSyncAPI(s)
	// The services, below the handlers: every rule lives in one of them
	// (docs/server.md, "Where the rules live"). Issuance and sync call each
	// other through one method each: issuance records what it issued
	// (fieldsync.Service.RecordIssued), sync asks for refills
	// (issuance.Service.Refill).
	s.clients = &apitoken.Clients{Store: cfg.Store, Audit: al, Hasher: s.tokens, Now: cfg.Now}
	s.svc = &online.Service{Store: cfg.Store, Seeds: online.NewSeeds(cfg.Master), Policy: cfg.Policy,
		Audit: al, Now: cfg.Now, UnknownKey: cfg.Master.Derive(keys.Size, keys.PurposeAuditUserMAC, 0)}
	s.bundles = &issuance.Service{Store: cfg.Store, Online: s.svc, Audit: al, Signer: s.signer,
		KDF: cfg.BundleKDF, Floor: cfg.BundleFloor, Now: cfg.Now, Slots: make(chan struct{}, 1), Pool: cfg.BundlePool}
	if js, ok := cfg.Store.(store.BundleJobStore); ok && cfg.DurableJobs {
		s.bundles.Durable, s.bundles.Box = js, issuance.JobBox(cfg.Master)
	}
	s.bundles.EnqueueOnly, s.bundles.Lease = cfg.EnqueueOnly, cfg.BundleJobLease
	s.roster = newRoster(cfg, cfg.Registry)
	if ss, ok := cfg.Store.(store.SyncStore); ok {
		s.field = &fieldsync.Service{Store: cfg.Store, Sync: ss, Audit: al, Signer: s.signer, Now: cfg.Now,
			Incident: s.sync.incident, Refill: s.bundles.Refill, RefillWait: syncRefillWait,
			RefillTimeout: s.bundles.ForShare(fieldsync.DefaultRefillTimeout)}
		s.bundles.Record = s.field
		if s.roster != nil {
			s.field.Entries = s.roster // vouches in a sync go to the roster, in the sync's transaction
			s.roster.Device = s.field.DeviceIn
		}
	}
	s.checkpoints = &auditcheck.Notary{Store: cfg.Store, Signer: s.signer, Audit: al, Now: cfg.Now}
	if cfg.AuditSegmentDir != "" {
		s.archive = &auditcheck.Archive{Notary: s.checkpoints, Dir: cfg.AuditSegmentDir, CheckpointDir: cfg.AuditCheckpointDir}
	}
	s.sites = newSiteAPI(s)
	if ds, ok := cfg.Store.(store.DeliveryStore); ok {
		s.deliveries = &delivery.Service{Store: ds, Master: cfg.Master, Now: cfg.Now}
		s.wireCourier(cfg)
	}
	s.outbox = s.newOutbox(cfg)
	if s.cfg.Vouches == nil && s.roster != nil {
		s.cfg.Vouches = s.roster // enrolment asks the roster that sync fills
	}
	var err error
	if s.onboard, err = newOnboardAPI(s); err != nil {
		return nil, err
	}
	if s.roster != nil && s.onboard.svc != nil {
		// Withdrawing a vouch revokes the device at once (its next
		// handshake is refused); a device never onboarded has nothing to revoke.
		svc := s.onboard.svc
		s.roster.OnWithdraw = func(ctx context.Context, realm, serial string) error {
			if _, err := svc.Revoke(ctx, realm, serial, "vouch withdrawn", "roster"); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return nil
		}
	}
	s.mux, s.deviceMux = http.NewServeMux(), http.NewServeMux()
	s.routes = s.routeTable()
	for _, rt := range s.routes {
		if rt.on != onDevice {
			s.mux.Handle(rt.method+" "+rt.pattern, s.wrap(rt))
		}
		if rt.on != onAPI {
			s.deviceMux.Handle(rt.method+" "+rt.pattern, s.wrap(rt))
		}
	}
	return s, nil
}

// Handler returns the server's root handler.
func (s *Server) Handler() http.Handler { return s.root() }

// Signer returns the artifact signing key (for handlers of offline work).
func (s *Server) Signer() *keys.Signer { return s.signer }

// Housekeep runs the server's periodic work every tick until ctx ends:
// it writes the unknown-user tallies of verifications to the audit log
// whenever they are due (online.Service.FlushUnknownEvery), and logs how
// many of the database's refusals were left out of the log since its last
// such line (outageLog), so that the end of an outage is counted when it
// ends. `outpost serve` runs it so that an idle server does both.
func (s *Server) Housekeep(ctx context.Context, tick time.Duration) {
	go clock.Every(ctx, tick, func() { s.outage.flush(s.log, s.cfg.Now()) })
	s.svc.FlushUnknownEvery(ctx, tick)
}

// FlushUnknown writes the unknown-user tallies now, due or not: at shutdown.
func (s *Server) FlushUnknown(ctx context.Context) error { return s.svc.FlushUnknown(ctx, true) }

// Bootstrap makes sure the default realm exists and, the first time, creates
// an admin API client and returns its token (shown once). Later calls return "".
func (s *Server) Bootstrap(ctx context.Context) (string, error) {
	err := s.cfg.Store.CreateRealm(ctx, store.Realm{ID: DefaultRealm, Name: "Default", CreatedAt: s.cfg.Now()})
	if err == store.ErrExists || (err != nil && isExists(err)) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	tok, _, err := s.clients.Create(ctx, DefaultRealm, "bootstrap-admin", []string{store.ScopeAdmin}, "bootstrap")
	return tok, err
}

// DefaultRealm is the realm created at bootstrap.
const DefaultRealm = "default"

// WorkBundles claims durable bundle jobs as owner and computes them until
// ctx ends (issuance.Service.Work): `outpost worker`, and `outpost serve`
// with bundle workers. Needs Config.DurableJobs.
func (s *Server) WorkBundles(ctx context.Context, owner string) error {
	if s.bundles.Durable == nil {
		return errors.New("server: bundle jobs are not durable here (Config.DurableJobs)")
	}
	return s.bundles.Work(ctx, owner, 0)
}
