// Package onlinebench measures online verification over loopback HTTP
// ('outpost bench online'): many distinct users with HOTP tokens (so every
// request is a fresh, valid code and every acceptance is a durable
// conditional write), beside a baseline that costs the server everything a
// verification costs except the store and beside a plain hand-written
// verifier, in the same run, at each of a list of client counts; it reports
// rates, latency percentiles, bytes written per request and the ratios.
//
// Run opens a fresh store (bench.OpenStoreDSN), and for each client count
// in Config.Concurrency drives, in this order, the baseline ("noop"), the
// plain verifier ("plain") and Outpost's POST /v1/verify ("verify"), each
// for Config.Duration. Worker w of C owns users w, w+C, w+2C, ..., so no
// two workers race on one token. With Config.DuringBundle it then drives
// verify beside bundle work (contention.go) at the highest client count,
// against verify alone at that count.
//
// The load generator is shared with replicabench ('outpost bench
// replicas'): Prepare enrols the users, CreateVerifier makes the API
// token, and a Driver sends the codes, round-robin when it has several
// servers' URLs (Driver.Verify); Run's handlers go through the same
// Driver.load.
//
// # The baseline ("noop")
//
// The server has no route for benchmarks. The baseline is a request to
// POST /v1/verify itself, from the same client with the same API token and
// the same JSON body shape, whose code has the right length but is not
// digits (BaselineCode). The server authenticates the client (from its
// cache after the first request, as for verifications), decodes and checks
// the body, and calls online.Service.Verify, which refuses the code's form
// before it takes the user's lock or reads the store; the answer is 400
// malformed_code. So the baseline measures HTTP, authentication, decoding
// and the error answer, and nothing of the store: no read, no acceptance,
// no audit entry. Run checks this while it runs: every baseline answer must
// be that 400 (anything else counts as an error), and the audit log must
// not grow during the baseline (else Run fails: the ratio would be
// meaningless). TestBaselineTouchesNoStore checks that the store is not
// called at all.
//
// # The plain verifier ("plain", plain.go)
//
// What a careful engineer would hand-write without Outpost, for the same
// requests: an http.Handler on a loopback listener of its own that takes
// POST with "Authorization: Bearer KEY" (one fixed random key, compared
// with subtle.ConstantTimeCompare), a JSON body {"user","code"} of at most
// 4 KiB, checks the code with github.com/pquerna/otp's hotp.ValidateCustom
// (SHA-1, 6 digits) at each counter of the look-ahead window above the
// user's last counter (online.DefaultPolicy.HOTPLookahead, Outpost's), and
// on a match runs ONE conditional UPDATE
//
//	UPDATE plain_tokens SET counter = $1 WHERE user_id = $2 AND counter < $1
//
// answering 200 when it changed a row and 401 otherwise (401 too for an
// unknown user or no match, 400 for a code of the wrong length). The table
// is its own, in the store's SQLite file or scratch schema, with the same
// users and seeds as Outpost's (so the codes cost the same) and counters of
// its own. Seeds and the last counter seen are held in memory, loaded at
// start; the UPDATE alone decides once-only, so a replayed code, even two
// at once, is accepted once. Same engine, driver and durability as the
// store: SQLite through sqlitedb.Open (WAL, synchronous=FULL) on one
// connection; PostgreSQL through a pgx pool on the same DSN, as large as
// the store's.
//
// What it does not do, and Outpost's verify does: no audit entry (nor hash
// chain), no lockout or backoff after failures, no per-user serialisation
// of attempts, no PIN, no TOTP, no token states (disabled, pending), no
// realms or per-client scopes and API keys in a database, no resync, no
// access log or metrics, no replay bookkeeping beyond the counter, no
// multi-replica caches. The comparison prices those.
//
// # Bytes written per request
//
// Each run reads the engine's count of bytes written before and after and
// divides the difference by the run's requests. SQLite: write_bytes of
// /proc/self/io (bench.WriteBytes): the server, the plain verifier and
// the load generator run in this one process and only the first two write
// to storage (SQLite's WAL, its checkpoints into the database file, the
// -shm index). WAL growth alone is not reported: the WAL is rewritten
// from its start after each checkpoint, so its size does not count what
// was written. PostgreSQL: the WAL position difference (pg_current_wal_lsn,
// pg_wal_lsn_diff): the server's whole WAL, other databases' writes
// meanwhile included, and not the data files' later writes (checkpoints),
// whose full-page images in the WAL it does count. Where the counter cannot
// be read (no /proc), BytesPerRequest is nil.
package onlinebench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/outpost-auth/outpost/otp"
)

// DefaultConcurrency are the client counts of a run when Config gives none.
var DefaultConcurrency = []int{1, 16, 128}

// Config of one benchmark run.
type Config struct {
	// DSN of the store; empty uses a SQLite file in a temporary directory.
	// A PostgreSQL DSN gets a scratch schema, dropped afterwards.
	DSN   string
	Users int
	// Concurrency lists the client counts each handler runs at, in order
	// (nil: DefaultConcurrency).
	Concurrency []int
	Duration    time.Duration
	// DuringBundle adds verify runs beside bundle work (contention.go) at
	// the highest client count: a bundle of BundleEntries (0: DayEntries)
	// on every core, through a pool of BundleWorkers (0:
	// workpool.DefaultWorkers()), and, with ChildArgs (this binary's
	// arguments that run BundleWork niced, for a number of entries and a
	// share), in a separate process. BundleShare (0: 1) is the pool's and
	// the process's workpool.Config.Share.
	DuringBundle  bool
	BundleEntries int
	BundleWorkers int
	BundleShare   float64
	ChildArgs     func(entries int, share float64) []string
}

// Check reports a Config that cannot run: a client count below one, fewer
// users than the highest client count (each client owns its users, so
// fewer would leave clients idle), or no duration.
func (c Config) Check() error {
	counts := c.Concurrency
	if len(counts) == 0 {
		counts = DefaultConcurrency
	}
	for _, n := range counts {
		if n < 1 {
			return fmt.Errorf("onlinebench: client count %d: give counts of at least 1, such as --concurrency 1,16,128", n)
		}
	}
	if m := slices.Max(counts); c.Users < m {
		return fmt.Errorf("onlinebench: %d users for %d clients: give --users at least the highest client count", c.Users, m)
	}
	if c.Duration <= 0 {
		return fmt.Errorf("onlinebench: give a positive --duration")
	}
	if c.BundleShare != 0 {
		if err := workpool.CheckShare(c.BundleShare); err != nil {
			return fmt.Errorf("onlinebench: --bundle-share: %w", err)
		}
	}
	return nil
}

// Handlers of a Result.
const (
	HandlerNoop   = "noop"
	HandlerPlain  = "plain"
	HandlerVerify = "verify"
)

// Result of one handler's run.
type Result struct {
	Engine string `json:"engine"`
	// Handler is HandlerNoop (the baseline), HandlerPlain (the plain
	// verifier) or HandlerVerify (Outpost's).
	Handler string `json:"handler"`
	// Clients is the number of concurrent clients.
	Clients int `json:"clients"`
	Rates
	// BytesPerRequest is what the engine wrote during the run divided by
	// its requests (see the package comment), nil when not measurable;
	// BytesSource says how it was counted (BytesProcIO, BytesPGWAL).
	BytesPerRequest *float64 `json:"bytes_per_request"`
	BytesSource     string   `json:"bytes_source,omitempty"`
	// VsNoop is the rate over the baseline's at the same client count
	// (plain and verify); VsPlain the rate and BytesVsPlain the bytes per
	// request over the plain verifier's (verify; 0 when not measured).
	VsNoop       float64 `json:"vs_noop,omitempty"`
	VsPlain      float64 `json:"vs_plain,omitempty"`
	BytesVsPlain float64 `json:"bytes_vs_plain,omitempty"`
	// Beside is the bundle work running meanwhile (Place*; "" for none),
	// BundleEntries how many of its entries were computed during the run
	// (0 when not seen: the separate process), AloneRate verify's rate in
	// the run alone just before and VsAlone the rate over it, Load the
	// 1-minute load average after the run.
	// BundleShare is the pool's or the process's Config.Share (1: no rest).
	Beside        string  `json:"beside_bundle,omitempty"`
	BundleShare   float64 `json:"bundle_share,omitempty"`
	BundleEntries int64   `json:"bundle_entries,omitempty"`
	AloneRate     float64 `json:"alone_per_second,omitempty"`
	VsAlone       float64 `json:"vs_alone,omitempty"`
	Load          string  `json:"load,omitempty"`
}

// Rates are what a load run measured.
type Rates struct {
	Requests int64 `json:"requests"`
	// Errors are answers other than the expected one (200 for verify and
	// plain, 400 malformed_code for the baseline) and failed requests.
	Errors int64         `json:"errors"`
	Rate   float64       `json:"per_second"`
	P50    time.Duration `json:"p50_ns"`
	P99    time.Duration `json:"p99_ns"`
	// FirstError is the first unexpected answer, for diagnosis.
	FirstError string `json:"first_error,omitempty"`
}

// Result.BytesSource values.
const (
	// BytesProcIO is write_bytes of /proc/self/io (SQLite).
	BytesProcIO = "proc_io_write_bytes"
	// BytesPGWAL is the difference of pg_current_wal_lsn() (PostgreSQL).
	BytesPGWAL = "pg_wal_lsn"
)

// BaselineCode is the baseline's code: six characters, as many as the
// tokens' codes, but not digits, so the server refuses its form before any
// lookup (see the package comment).
const BaselineCode = "abcdef"

// target is one measured handler: where requests go (worker w's k-th
// request to urls[(w+k) mod len(urls)]) with which key, the body of user
// u's next request and whether an answer is the expected one.
type target struct {
	name string
	urls []string
	key  string
	body func(u *User, p otp.Params) []byte
	ok   func(status int, body []byte) bool
}

func okStatus(status int, _ []byte) bool { return status == http.StatusOK }

// noop is the baseline: Outpost's verify with a malformed code.
func (d *Driver) noop() target {
	return target{name: HandlerNoop, urls: d.URLs, key: d.Token,
		body: func(u *User, _ otp.Params) []byte { return verifyBody(u.ID, BaselineCode) },
		ok: func(status int, body []byte) bool {
			return status == http.StatusBadRequest && bytes.Contains(body, []byte(`"malformed_code"`))
		}}
}

// verify is Outpost's verify with each user's next code.
func (d *Driver) verify() target {
	return target{name: HandlerVerify, urls: d.URLs, key: d.Token, ok: okStatus,
		body: func(u *User, p otp.Params) []byte { return verifyBody(u.ID, u.Next(p)) }}
}

// plain is the plain verifier with each user's next code of its own
// counter.
func (f *fixture) plain() target {
	return target{name: HandlerPlain, urls: []string{f.pv.url}, key: f.pv.key, ok: okStatus,
		body: func(u *User, p otp.Params) []byte { return verifyBody(u.ID, u.next(p, &u.plainCounter)) }}
}

func verifyBody(user, code string) []byte {
	return []byte(`{"user":"` + user + `","code":"` + code + `"}`)
}

// Run measures the baseline, the plain verifier and /v1/verify on one
// store at each client count and returns the results in that order.
func Run(ctx context.Context, cfg Config, progress io.Writer) ([]Result, error) {
	st, dsn, done, err := bench.OpenStoreDSN(ctx, cfg.DSN, "outpost_bench")
	if err != nil {
		return nil, err
	}
	defer done()
	return run(ctx, st, dsn, cfg, progress)
}

// run measures the targets on st, opened on dsn: at each client count the
// baseline, the plain verifier, then verify.
func run(ctx context.Context, st store.Store, dsn string, cfg Config, progress io.Writer) ([]Result, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if len(cfg.Concurrency) == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	f, err := newFixture(ctx, st, cfg.Users, slices.Max(cfg.Concurrency), progress)
	if err != nil {
		return nil, err
	}
	defer f.close()
	if err := f.startPlain(ctx, dsn); err != nil {
		return nil, err
	}
	var out []Result
	var alone Result // verify at the highest client count
	for _, c := range cfg.Concurrency {
		var row []Result
		for _, t := range []target{f.noop(), f.plain(), f.verify()} {
			before, err := auditHead(ctx, st)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(progress, "running %s for %s with %d clients...\n", t.name, cfg.Duration, c)
			row = append(row, f.measure(ctx, t, c, cfg.Duration))
			if t.name != HandlerNoop {
				continue
			}
			after, err := auditHead(ctx, st)
			if err != nil {
				return nil, err
			}
			if after != before {
				return nil, fmt.Errorf("the baseline wrote %d audit entries: /v1/verify no longer refuses a malformed code before the store, so it is no baseline (see internal/bench/onlinebench)", after-before)
			}
		}
		compare(row[0], &row[1], &row[2])
		if c >= alone.Clients {
			alone = row[2]
		}
		out = append(out, row...)
	}
	if cfg.DuringBundle {
		if cfg.BundleEntries <= 0 {
			cfg.BundleEntries = DayEntries
		}
		rs, err := contention(ctx, f, cfg, alone, progress)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

// compare sets the ratios of plain and verify to the baseline, and of
// verify to plain, at one client count.
func compare(noop Result, plain, verify *Result) {
	if noop.Rate > 0 {
		plain.VsNoop = plain.Rate / noop.Rate
		verify.VsNoop = verify.Rate / noop.Rate
	}
	if plain.Rate > 0 {
		verify.VsPlain = verify.Rate / plain.Rate
	}
	if plain.BytesPerRequest != nil && verify.BytesPerRequest != nil && *plain.BytesPerRequest > 0 {
		verify.BytesVsPlain = *verify.BytesPerRequest / *plain.BytesPerRequest
	}
}

// measure runs t with clients workers for d and returns its result with
// the bytes written per request.
func (f *fixture) measure(ctx context.Context, t target, clients int, d time.Duration) Result {
	w0, ok0 := f.pv.db.written(ctx)
	r := Result{Rates: f.load(ctx, t, clients, d)}
	w1, ok1 := f.pv.db.written(ctx)
	if ok0 && ok1 && r.Requests > 0 {
		b := float64(w1-w0) / float64(r.Requests)
		r.BytesPerRequest = &b
		r.BytesSource = BytesProcIO
		if f.engine == "postgres" {
			r.BytesSource = BytesPGWAL
		}
	}
	r.Engine, r.Handler, r.Clients = f.engine, t.name, clients
	return r
}

// fixture is a server on loopback with enrolled users and a verifier
// client, and the plain verifier once started.
type fixture struct {
	engine string
	hs     *http.Server
	Driver
	pv *plainVerifier
}

// TokenParams are the parameters of the users' tokens: HOTP, so that every
// request can carry a fresh valid code.
var TokenParams = otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}

// User is an enrolled user of the benchmark: its token's seed and the last
// counter a code was made for, for Outpost and (bench online) for the
// plain verifier, which keeps counters of its own.
type User struct {
	ID           string
	Seed         []byte
	Counter      uint64
	plainCounter uint64
}

// Next advances u's counter and returns the code for it.
func (u *User) Next(p otp.Params) string { return u.next(p, &u.Counter) }

// next advances counter, one of u's, and returns u's code for it.
func (u *User) next(p otp.Params, counter *uint64) string {
	*counter++
	code, _ := p.CodeAt(u.Seed, *counter)
	return code
}

// Driver is a verifier client with users: it sends their codes to
// POST /v1/verify of one server or several (a round robin).
type Driver struct {
	Client *http.Client
	// URLs are the servers' POST /v1/verify; worker w's k-th request goes
	// to URLs[(w+k) mod len(URLs)].
	URLs   []string
	Token  string // the verifier's API token
	Users  []User
	Params otp.Params
}

// NewClient is the HTTP client of a Driver with concurrency workers.
func NewClient(concurrency int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency * 2, MaxConnsPerHost: 0}}
}

// newFixture starts a server on st, enrols n users with an HOTP token each
// and creates a verifier API client, for up to concurrency clients.
func newFixture(ctx context.Context, st store.Store, n, concurrency int, progress io.Writer) (*fixture, error) {
	m, err := keys.GenerateMaster()
	if err != nil {
		return nil, err
	}
	srv, admin, users, err := Prepare(ctx, st, m, n, progress)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &fixture{engine: st.Engine(), hs: &http.Server{Handler: srv.Handler()}}
	go f.hs.Serve(ln)
	base := "http://" + ln.Addr().String()
	f.Driver = Driver{Client: NewClient(concurrency), URLs: []string{base + "/v1/verify"}, Users: users, Params: TokenParams}
	if f.Token, err = CreateVerifier(ctx, f.Client, base, admin); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// startPlain starts the plain verifier on the database dsn names (the
// store's) for the fixture's users, with Outpost's look-ahead.
func (f *fixture) startPlain(ctx context.Context, dsn string) error {
	pv, err := startPlain(ctx, dsn, f.Users, online.DefaultPolicy.HOTPLookahead)
	if err != nil {
		return err
	}
	f.pv = pv
	return nil
}

func (f *fixture) close() {
	f.hs.Close()
	if f.pv != nil {
		f.pv.close()
	}
}

// Prepare bootstraps st, which must be empty, with master key m and enrols
// n users with an active TokenParams token each, through a service of the
// benchmark's own on the same store and key (a server with m derives the
// same seeds when it verifies). It returns a server on st (not serving),
// the bootstrap admin API token and the users.
func Prepare(ctx context.Context, st store.Store, m *keys.Master, n int, progress io.Writer) (*server.Server, string, []User, error) {
	pol := online.DefaultPolicy
	srv, err := server.New(server.Config{Store: st, Master: m, Policy: pol, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		return nil, "", nil, err
	}
	admin, err := srv.Bootstrap(ctx)
	if err != nil {
		return nil, "", nil, err
	}
	if admin == "" {
		return nil, "", nil, fmt.Errorf("the benchmark needs an empty database; %s was bootstrapped before", st.Engine())
	}
	svc := &online.Service{Store: st, Seeds: online.NewSeeds(m), Policy: pol, Audit: &audit.Log{Store: st}}
	fmt.Fprintf(progress, "enrolling %d users on %s...\n", n, st.Engine())
	users, err := enrol(ctx, st, svc, n, TokenParams)
	if err != nil {
		return nil, "", nil, err
	}
	return srv, admin, users, nil
}

// enrol creates n users with an active HOTP token each.
func enrol(ctx context.Context, st store.Store, svc *online.Service, n int, p otp.Params) ([]User, error) {
	run := fmt.Sprintf("b%d", time.Now().UnixNano()%1e6)
	users := make([]User, n)
	for i := range users {
		id := fmt.Sprintf("%s-u%06d", run, i)
		if err := st.CreateUser(ctx, store.User{Realm: server.DefaultRealm, ID: id, CreatedAt: time.Now()}); err != nil {
			return nil, err
		}
		t, seed, err := svc.Enrol(ctx, server.DefaultRealm, id, p, store.SeedDerived, "bench")
		if err != nil {
			return nil, err
		}
		if err := st.SetTokenStatus(ctx, server.DefaultRealm, id, t.ID, store.TokenActive); err != nil {
			return nil, err
		}
		users[i] = User{ID: id, Seed: seed}
	}
	return users, nil
}

// CreateVerifier creates an API client with the verifier scope through the
// server at base, with the admin API token admin, and returns its token.
func CreateVerifier(ctx context.Context, c *http.Client, base, admin string) (string, error) {
	body, _ := json.Marshal(map[string]any{"name": "bench-verifier", "scopes": []string{"verifier"}})
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/api-clients", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var out struct{ Token string }
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.Token == "" {
		return "", fmt.Errorf("creating the verifier client: status %d", res.StatusCode)
	}
	return out.Token, nil
}

// auditHead returns the sequence number of the newest audit entry (0 for
// an empty log).
func auditHead(ctx context.Context, st store.Store) (uint64, error) {
	var head uint64
	for {
		es, err := st.ListAudit(ctx, head, store.MaxListLimit)
		if err != nil {
			return 0, err
		}
		if len(es) == 0 {
			return head, nil
		}
		head = es[len(es)-1].Seq
	}
}

// Post sends one verification of code for user to url and returns the
// answer's status and body.
func (d *Driver) Post(ctx context.Context, url, user, code string) (int, []byte, error) {
	return post(ctx, d.Client, url, d.Token, verifyBody(user, code))
}

// post sends body to url with API key key and returns the answer's status
// and body.
func post(ctx context.Context, c *http.Client, url, key string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	rb, err := io.ReadAll(res.Body)
	return res.StatusCode, rb, err
}

// Verify drives verifications of fresh valid codes with clients workers
// for dur; the answer expected is 200.
func (d *Driver) Verify(ctx context.Context, clients int, dur time.Duration) Rates {
	return d.load(ctx, d.verify(), clients, dur)
}

// load runs clients workers against t for dur; worker w owns users w,
// w+C, w+2C, ... so that no two workers race on one token, and sends its
// k-th request to t.urls[(w+k) mod len(t.urls)].
func (d *Driver) load(ctx context.Context, t target, clients int, dur time.Duration) Rates {
	var n, errs atomic.Int64
	var firstErr atomic.Value
	fail := func(msg string) {
		if errs.Add(1) == 1 {
			firstErr.Store(msg)
		}
	}
	lat := make([][]time.Duration, clients)
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < min(clients, len(d.Users)); w++ {
		wg.Go(func() {
			for i, k := w, w; time.Now().Before(deadline) && ctx.Err() == nil; i, k = i+clients, k+1 {
				if i >= len(d.Users) {
					i = w
				}
				t0 := time.Now()
				status, rb, err := post(ctx, d.Client, t.urls[k%len(t.urls)], t.key, t.body(&d.Users[i], d.Params))
				if err != nil {
					fail(err.Error())
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
				if !t.ok(status, rb) {
					fail(fmt.Sprintf("%d %s", status, bytes.TrimSpace(rb)))
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	r := Rates{Requests: n.Load(), Errors: errs.Load(), Rate: float64(n.Load()) / el.Seconds()}
	if fe, ok := firstErr.Load().(string); ok {
		r.FirstError = fe
	}
	r.P50, r.P99 = bench.Percentiles(all)
	return r
}
