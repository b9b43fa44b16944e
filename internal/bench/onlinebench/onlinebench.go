// Package onlinebench measures online verification over loopback HTTP
// ('outpost bench online'): many distinct users with HOTP tokens (so every
// request is a fresh, valid code and every acceptance is a durable
// conditional write), next to a baseline that costs the server everything a
// verification costs except the store, in the same run; it reports rates,
// latency percentiles and the ratio.
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

// Config of one benchmark run.
type Config struct {
	// DSN of the store; empty uses a SQLite file in a temporary directory.
	// A PostgreSQL DSN gets a scratch schema, dropped afterwards.
	DSN         string
	Users       int
	Concurrency int
	Duration    time.Duration
	// DuringBundle adds verify runs beside bundle work (contention.go):
	// a bundle of BundleEntries (0: DayEntries) on every core, through a
	// pool of BundleWorkers (0: workpool.DefaultWorkers()), and, with
	// ChildArgs (this binary's arguments that run BundleWork niced, given
	// the entries as a last argument), in a separate process.
	DuringBundle  bool
	BundleEntries int
	BundleWorkers int
	ChildArgs     []string
}

// Result of one handler's run.
type Result struct {
	Engine string `json:"engine"`
	// Handler is "noop" (the baseline) or "verify".
	Handler string `json:"handler"`
	Rates
	// Beside is the bundle work running meanwhile (Place*; "" for none),
	// BundleEntries how many of its entries were computed during the run
	// (0 when not seen: the separate process), VsAlone the rate over
	// verify's alone, Load the 1-minute load average after the run.
	Beside        string  `json:"beside_bundle,omitempty"`
	BundleEntries int64   `json:"bundle_entries,omitempty"`
	VsAlone       float64 `json:"vs_alone,omitempty"`
	Load          string  `json:"load,omitempty"`
}

// Rates are what a load run measured.
type Rates struct {
	Requests int64 `json:"requests"`
	// Errors are answers other than the expected one (200 for verify, 400
	// malformed_code for the baseline) and failed requests.
	Errors int64         `json:"errors"`
	Rate   float64       `json:"per_second"`
	P50    time.Duration `json:"p50_ns"`
	P99    time.Duration `json:"p99_ns"`
	// FirstError is the first unexpected answer, for diagnosis.
	FirstError string `json:"first_error,omitempty"`
}

// BaselineCode is the baseline's code: six characters, as many as the
// tokens' codes, but not digits, so the server refuses its form before any
// lookup (see the package comment).
const BaselineCode = "abcdef"

// target is one measured handler: the body of user u's next request and
// whether an answer is the expected one.
type target struct {
	name string
	body func(u *User, p otp.Params) []byte
	ok   func(status int, body []byte) bool
}

var targets = []target{
	{name: "noop",
		body: func(u *User, _ otp.Params) []byte { return verifyBody(u.ID, BaselineCode) },
		ok: func(status int, body []byte) bool {
			return status == http.StatusBadRequest && bytes.Contains(body, []byte(`"malformed_code"`))
		}},
	{name: "verify",
		body: func(u *User, p otp.Params) []byte { return verifyBody(u.ID, u.Next(p)) },
		ok:   func(status int, _ []byte) bool { return status == http.StatusOK }},
}

func verifyBody(user, code string) []byte {
	return []byte(`{"user":"` + user + `","code":"` + code + `"}`)
}

// Run measures the baseline and /v1/verify on one store and returns both.
func Run(ctx context.Context, cfg Config, progress io.Writer) ([]Result, error) {
	st, done, err := bench.OpenStore(ctx, cfg.DSN, "outpost_bench")
	if err != nil {
		return nil, err
	}
	defer done()
	return run(ctx, st, cfg, progress)
}

// run measures the targets on st: the baseline first, then verify.
func run(ctx context.Context, st store.Store, cfg Config, progress io.Writer) ([]Result, error) {
	f, err := newFixture(ctx, st, cfg.Users, cfg.Concurrency, progress)
	if err != nil {
		return nil, err
	}
	defer f.close()
	var out []Result
	for _, t := range targets {
		before, err := auditHead(ctx, st)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "running %s for %s with %d clients...\n", t.name, cfg.Duration, cfg.Concurrency)
		r := f.load(ctx, t, cfg.Concurrency, cfg.Duration)
		r.Engine, r.Handler = st.Engine(), t.name
		out = append(out, r)
		if t.name != "noop" {
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
	if cfg.DuringBundle {
		if cfg.BundleEntries <= 0 {
			cfg.BundleEntries = DayEntries
		}
		rs, err := contention(ctx, f, cfg, out[len(out)-1], progress)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

// fixture is a server on loopback with enrolled users and a verifier client.
type fixture struct {
	hs *http.Server
	Driver
}

// TokenParams are the parameters of the users' tokens: HOTP, so that every
// request can carry a fresh valid code.
var TokenParams = otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}

// User is an enrolled user of the benchmark: its token's seed and the last
// counter a code was made for.
type User struct {
	ID      string
	Seed    []byte
	Counter uint64
}

// Next advances u's counter and returns the code for it.
func (u *User) Next(p otp.Params) string {
	u.Counter++
	code, _ := p.CodeAt(u.Seed, u.Counter)
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
// and creates a verifier API client.
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
	f := &fixture{hs: &http.Server{Handler: srv.Handler()}}
	go f.hs.Serve(ln)
	base := "http://" + ln.Addr().String()
	f.Driver = Driver{Client: NewClient(concurrency), URLs: []string{base + "/v1/verify"}, Users: users, Params: TokenParams}
	if f.Token, err = CreateVerifier(ctx, f.Client, base, admin); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

func (f *fixture) close() { f.hs.Close() }

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
	return d.post(ctx, url, verifyBody(user, code))
}

func (d *Driver) post(ctx context.Context, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.Token)
	req.Header.Set("Content-Type", "application/json")
	res, err := d.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	rb, err := io.ReadAll(res.Body)
	return res.StatusCode, rb, err
}

// Verify drives verifications of fresh valid codes with concurrency
// workers for d; the answer expected is 200.
func (d *Driver) Verify(ctx context.Context, concurrency int, dur time.Duration) Rates {
	return d.load(ctx, targets[1], concurrency, dur).Rates
}

// load runs concurrency workers against t for dur; worker w owns users w,
// w+C, w+2C, ... so that no two workers race on one token.
func (d *Driver) load(ctx context.Context, t target, concurrency int, dur time.Duration) Result {
	var n, errs atomic.Int64
	var firstErr atomic.Value
	fail := func(msg string) {
		if errs.Add(1) == 1 {
			firstErr.Store(msg)
		}
	}
	lat := make([][]time.Duration, concurrency)
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < min(concurrency, len(d.Users)); w++ {
		wg.Go(func() {
			for i, k := w, w; time.Now().Before(deadline) && ctx.Err() == nil; i, k = i+concurrency, k+1 {
				if i >= len(d.Users) {
					i = w
				}
				t0 := time.Now()
				status, rb, err := d.post(ctx, d.URLs[k%len(d.URLs)], t.body(&d.Users[i], d.Params))
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
	r := Result{Rates: Rates{Requests: n.Load(), Errors: errs.Load(), Rate: float64(n.Load()) / el.Seconds()}}
	if fe, ok := firstErr.Load().(string); ok {
		r.FirstError = fe
	}
	r.P50, r.P99 = bench.Percentiles(all)
	return r
}
