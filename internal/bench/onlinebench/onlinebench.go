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
	// arguments that run BundleWork niced, given the entries as a last
	// argument), in a separate process.
	DuringBundle  bool
	BundleEntries int
	BundleWorkers int
	ChildArgs     []string
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
	Clients  int   `json:"clients"`
	Requests int64 `json:"requests"`
	// Errors are answers other than the expected one (200 for verify and
	// plain, 400 malformed_code for the baseline) and failed requests.
	Errors int64         `json:"errors"`
	Rate   float64       `json:"per_second"`
	P50    time.Duration `json:"p50_ns"`
	P99    time.Duration `json:"p99_ns"`
	// FirstError is the first unexpected answer, for diagnosis.
	FirstError string `json:"first_error,omitempty"`
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
	// (0 when not seen: the separate process), VsAlone the rate over
	// verify's alone at the same client count, Load the 1-minute load
	// average after the run.
	Beside        string  `json:"beside_bundle,omitempty"`
	BundleEntries int64   `json:"bundle_entries,omitempty"`
	VsAlone       float64 `json:"vs_alone,omitempty"`
	Load          string  `json:"load,omitempty"`
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

// target is one measured handler: where requests go with which key, the
// body of user u's next request and whether an answer is the expected one.
type target struct {
	name     string
	url, key string
	body     func(u *benchUser, p otp.Params) []byte
	ok       func(status int, body []byte) bool
}

func okStatus(status int, _ []byte) bool { return status == http.StatusOK }

// noop is the baseline: Outpost's verify with a malformed code.
func (f *fixture) noop() target {
	return target{name: HandlerNoop, url: f.url, key: f.token,
		body: func(u *benchUser, _ otp.Params) []byte { return verifyBody(u.id, BaselineCode) },
		ok: func(status int, body []byte) bool {
			return status == http.StatusBadRequest && bytes.Contains(body, []byte(`"malformed_code"`))
		}}
}

// verify is Outpost's verify with each user's next code.
func (f *fixture) verify() target {
	return target{name: HandlerVerify, url: f.url, key: f.token, ok: okStatus,
		body: func(u *benchUser, p otp.Params) []byte {
			u.counter++
			code, _ := p.CodeAt(u.seed, u.counter)
			return verifyBody(u.id, code)
		}}
}

// plain is the plain verifier with each user's next code of its own
// counter.
func (f *fixture) plain() target {
	return target{name: HandlerPlain, url: f.pv.url, key: f.pv.key, ok: okStatus,
		body: func(u *benchUser, p otp.Params) []byte {
			u.plainCounter++
			code, _ := p.CodeAt(u.seed, u.plainCounter)
			return verifyBody(u.id, code)
		}}
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
	r := load(ctx, f, t, clients, d)
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
	client *http.Client
	url    string // of POST /v1/verify
	token  string // the verifier's API token
	users  []benchUser
	params otp.Params
	pv     *plainVerifier
}

// benchUser is a user as the load generator sees it: its seed and the last
// counter it sent to Outpost and to the plain verifier.
type benchUser struct {
	id           string
	seed         []byte
	counter      uint64
	plainCounter uint64
}

// newFixture starts a server on st, enrols n users with an HOTP token each
// and creates a verifier API client, for up to concurrency clients.
func newFixture(ctx context.Context, st store.Store, n, concurrency int, progress io.Writer) (*fixture, error) {
	m, err := keys.GenerateMaster()
	if err != nil {
		return nil, err
	}
	pol := online.DefaultPolicy
	srv, err := server.New(server.Config{Store: st, Master: m, Policy: pol, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	admin, err := srv.Bootstrap(ctx)
	if err != nil {
		return nil, err
	}
	if admin == "" {
		return nil, fmt.Errorf("the benchmark needs an empty database; %s was bootstrapped before", st.Engine())
	}
	f := &fixture{engine: st.Engine(), params: otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}}
	// Tokens are enrolled by a service of the bench's own on the same store
	// and master key: the server derives the same seeds when it verifies.
	svc := &online.Service{Store: st, Seeds: online.NewSeeds(m), Policy: pol, Audit: &audit.Log{Store: st}}
	fmt.Fprintf(progress, "enrolling %d users on %s...\n", n, st.Engine())
	if f.users, err = enrol(ctx, st, svc, n, f.params); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.hs = &http.Server{Handler: srv.Handler()}
	go f.hs.Serve(ln)
	base := "http://" + ln.Addr().String()
	f.url = base + "/v1/verify"
	f.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency * 2, MaxConnsPerHost: 0}}
	if f.token, err = createVerifier(ctx, f.client, base, admin); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// startPlain starts the plain verifier on the database dsn names (the
// store's) for the fixture's users, with Outpost's look-ahead.
func (f *fixture) startPlain(ctx context.Context, dsn string) error {
	pv, err := startPlain(ctx, dsn, f.users, online.DefaultPolicy.HOTPLookahead)
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

// enrol creates n users with an active HOTP token each.
func enrol(ctx context.Context, st store.Store, svc *online.Service, n int, p otp.Params) ([]benchUser, error) {
	run := fmt.Sprintf("b%d", time.Now().UnixNano()%1e6)
	users := make([]benchUser, n)
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
		users[i] = benchUser{id: id, seed: seed}
	}
	return users, nil
}

func createVerifier(ctx context.Context, c *http.Client, base, admin string) (string, error) {
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

// load runs clients workers against t for d; worker w owns users w, w+C,
// w+2C, ... so that no two workers race on one token.
func load(ctx context.Context, f *fixture, t target, clients int, d time.Duration) Result {
	var n, errs atomic.Int64
	var firstErr atomic.Value
	fail := func(msg string) {
		if errs.Add(1) == 1 {
			firstErr.Store(msg)
		}
	}
	lat := make([][]time.Duration, clients)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < min(clients, len(f.users)); w++ {
		wg.Go(func() {
			for i := w; time.Now().Before(deadline) && ctx.Err() == nil; i += clients {
				if i >= len(f.users) {
					i = w
				}
				req, _ := http.NewRequestWithContext(ctx, "POST", t.url, bytes.NewReader(t.body(&f.users[i], f.params)))
				req.Header.Set("Authorization", "Bearer "+t.key)
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				res, err := f.client.Do(req)
				if err != nil {
					fail(err.Error())
					continue
				}
				rb, _ := io.ReadAll(res.Body)
				res.Body.Close()
				lat[w] = append(lat[w], time.Since(t0))
				if !t.ok(res.StatusCode, rb) {
					fail(fmt.Sprintf("%d %s", res.StatusCode, bytes.TrimSpace(rb)))
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
	r := Result{Requests: n.Load(), Errors: errs.Load(), Rate: float64(n.Load()) / el.Seconds()}
	if fe, ok := firstErr.Load().(string); ok {
		r.FirstError = fe
	}
	r.P50, r.P99 = bench.Percentiles(all)
	return r
}
