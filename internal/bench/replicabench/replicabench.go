// Package replicabench measures online verification scaled out over
// several `outpost serve` processes on one PostgreSQL database
// ('outpost bench replicas', issue 13 part 5), and checks after each run
// that no code was accepted twice.
//
// Run prepares one scratch schema (dropped at the end), enrols users with
// HOTP tokens there (onlinebench.Prepare: every request a fresh valid code,
// every acceptance a durable conditional write), and for each replica
// count N in Config.Replicas:
//
//  1. starts N real `outpost serve` processes of this binary on loopback
//     ports (ServeArgs), each with its own data directory holding a copy of
//     one master key, all on the scratch schema, and waits for their
//     --ready-file;
//  2. drives them for Config.Duration with Config.Concurrency workers of
//     one round-robin client (onlinebench.Driver: worker w's k-th request
//     goes to replica (w+k) mod N; workers own disjoint users), the same
//     client count for every N, and measures verify/s, p50, p99 and
//     errors; meanwhile it samples the CPU time of the replicas, of the
//     PostgreSQL server's processes and of itself (the client), and
//     PostgreSQL's committed transactions, to say where the cores went;
//  3. checks the once-only guarantee (Check): a fresh code of each of
//     Config.RaceUsers users sent to every replica at once must be accepted
//     by exactly one, and sent again to every replica by none; then the
//     whole database: no (user, token, counter) in two verify.ok entries,
//     each token's last used counter the highest accepted, as many entries
//     as 200s seen, and the audit chain intact (auditcheck.VerifyStore);
//  4. stops the replicas with SIGTERM.
//
// A violation ends Run with ErrNotOnceOnly, after the results so far.
package replicabench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/outpost-auth/outpost/internal/apiclient"
	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/bench/onlinebench"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/store"
)

// Config of a benchmark.
type Config struct {
	// DSN names the PostgreSQL database; the benchmark works in a scratch
	// schema of it, dropped afterwards.
	DSN string
	// Replicas are the replica counts measured, in order (default 1, 2, 3).
	Replicas    []int
	Users       int
	Concurrency int
	Duration    time.Duration
	// RaceUsers is how many users the once-only race takes after each run
	// (default DefaultRaceUsers, at most Users).
	RaceUsers int
	// Exe is the outpost binary the replicas run (default this one).
	Exe string
}

// DefaultRaceUsers is Config.RaceUsers's default.
const DefaultRaceUsers = 200

// ErrNotOnceOnly: a check found a code accepted twice, a counter out of
// step with the audit log, or a broken audit chain.
var ErrNotOnceOnly = errors.New("the once-only guarantee was violated")

// ErrConfig: the Config cannot be run (wrapped with what to change).
var ErrConfig = errors.New("replicabench: bad configuration")

// Result of one replica count.
type Result struct {
	Replicas int `json:"replicas"`
	Clients  int `json:"clients"`
	// Rates are the client's: requests, errors (answers other than 200
	// and failed requests), verify/s, p50 and p99.
	onlinebench.Rates
	// VsOne is Rate over the one-replica run's (0 when none ran).
	VsOne float64 `json:"vs_one_replica,omitempty"`
	// CPU seconds per 1,000 requests during the run: of all replica
	// processes together, of the PostgreSQL server's processes (when it
	// runs on this machine: PostgresLocal), and of the load generator.
	ReplicaCPU    float64 `json:"replica_cpu_s_per_1k"`
	PostgresCPU   float64 `json:"postgres_cpu_s_per_1k"`
	PostgresLocal bool    `json:"postgres_local"`
	ClientCPU     float64 `json:"client_cpu_s_per_1k"`
	// Per request, PostgreSQL's counters during the run (pgStats):
	// transactions committed in the database (read statements' included)
	// and rolled back (a replica's batch of acceptances that lost the audit
	// sequence number to another replica's rolls back and is retried; a
	// replayed code's failure is recorded in its own), and the server's WAL
	// flushes to disk (below 1 when commits are grouped) and WAL bytes.
	CommitsPerVerify   float64 `json:"commits_per_verify"`
	RollbacksPerVerify float64 `json:"rollbacks_per_verify"`
	WALSyncsPerVerify  float64 `json:"wal_syncs_per_verify"`
	WALBytesPerVerify  float64 `json:"wal_bytes_per_verify"`
	// Load is the 1-minute load average after the run.
	Load string `json:"load"`
	// OnceOnly is the check after the run.
	OnceOnly Check `json:"once_only"`
}

// harness is the prepared database, its users and the client.
type harness struct {
	cfg      Config
	progress io.Writer
	dsn      string    // of the scratch schema, for the replicas and the checks
	app      string    // the application_name of every connection on dsn
	conn     *pgx.Conn // for pg_stat_database and pg_stat_activity
	dir      string    // the replicas' data directories
	key      []byte    // master.key, copied into each
	admin    string    // the bootstrap admin API token
	d        *onlinebench.Driver
	accepted int64 // 200s the client saw, all runs so far
	exact    bool  // every request of every run got an answer
}

// Run measures each replica count of cfg in turn; see the package comment.
func Run(ctx context.Context, cfg Config, progress io.Writer) ([]Result, error) {
	h, done, err := newHarness(ctx, cfg, progress)
	if err != nil {
		return nil, err
	}
	defer done()
	var out []Result
	for _, n := range h.cfg.Replicas {
		r, err := h.run(ctx, n)
		if err != nil {
			return out, fmt.Errorf("%d replicas: %w", n, err)
		}
		out = append(out, r)
		if !r.OnceOnly.Clean() {
			return out, fmt.Errorf("%w with %d replicas: %d races not won by exactly one replica, %d replays accepted, %d counters accepted twice in the audit log, %d tokens out of step with it, %d of %d acceptances audited, audit chain ok: %v",
				ErrNotOnceOnly, n, r.OnceOnly.RaceViolations, r.OnceOnly.ReplayAccepted, r.OnceOnly.Duplicates, r.OnceOnly.CounterMismatches,
				r.OnceOnly.Audited, r.OnceOnly.ClientAccepted, r.OnceOnly.Chain.OK)
		}
	}
	for i := range out {
		for _, one := range out {
			if one.Replicas == 1 && one.Rate > 0 {
				out[i].VsOne = out[i].Rate / one.Rate
			}
		}
	}
	return out, nil
}

// newHarness validates cfg, makes the scratch schema and the master key,
// and enrols the users.
func newHarness(ctx context.Context, cfg Config, progress io.Writer) (h *harness, done func(), err error) {
	if !bench.IsPostgres(cfg.DSN) {
		return nil, nil, fmt.Errorf("%w: replicas share one PostgreSQL database: give --postgres postgres://... (or $OUTPOST_BENCH_POSTGRES_DSN)", ErrConfig)
	}
	if len(cfg.Replicas) == 0 {
		cfg.Replicas = []int{1, 2, 3}
	}
	for _, n := range cfg.Replicas {
		if n < 1 {
			return nil, nil, fmt.Errorf("%w: replica count %d: give 1 or more", ErrConfig, n)
		}
	}
	if cfg.Users < 1 || cfg.Concurrency < 1 || cfg.Duration <= 0 {
		return nil, nil, fmt.Errorf("%w: users, concurrency and duration must be positive", ErrConfig)
	}
	if cfg.RaceUsers <= 0 {
		cfg.RaceUsers = DefaultRaceUsers
	}
	cfg.RaceUsers = min(cfg.RaceUsers, cfg.Users)
	if cfg.Exe == "" {
		if cfg.Exe, err = os.Executable(); err != nil {
			return nil, nil, fmt.Errorf("finding the outpost binary the replicas run: %w", err)
		}
	}
	var undo bench.Undo
	defer func() {
		if err != nil {
			undo.Run()
		}
	}()
	h = &harness{cfg: cfg, progress: progress, exact: true}
	// Every connection of the replicas and of the harness's store carries
	// one application_name, by which pgStats finds them.
	h.app = "outpost-replicabench-" + rand.Text()[:12]
	dsn, err := store.WithDSNParam(cfg.DSN, "application_name", h.app)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	scratch, drop, err := store.ScratchSchema(ctx, dsn, "outpost_replicas")
	if err != nil {
		return nil, nil, err
	}
	undo.Add(func() { _ = drop() })
	h.dsn = scratch
	if h.dir, err = os.MkdirTemp("", "outpost-replicas-"); err != nil {
		return nil, nil, err
	}
	undo.Add(func() { os.RemoveAll(h.dir) })
	// One master key for every replica; unsealed, so that no replica spends
	// an argon2id unsealing it (the directory is removed at the end).
	keyDir := filepath.Join(h.dir, "key")
	m, err := datadir.Init(keyDir, nil, true, time.Now())
	if err != nil {
		return nil, nil, err
	}
	if h.key, err = os.ReadFile(filepath.Join(keyDir, datadir.MasterKeyFile)); err != nil {
		return nil, nil, err
	}
	var admin string
	var users []onlinebench.User
	err = h.withStore(ctx, func(st store.Store) (err error) {
		_, admin, users, err = onlinebench.Prepare(ctx, st, m, cfg.Users, progress)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	h.admin = admin
	h.d = &onlinebench.Driver{Client: onlinebench.NewClient(cfg.Concurrency), Users: users, Params: onlinebench.TokenParams}
	if h.conn, err = pgx.Connect(ctx, h.dsn); err != nil {
		return nil, nil, fmt.Errorf("connecting to PostgreSQL for its statistics: %w", err)
	}
	undo.Add(func() { h.conn.Close(context.Background()) })
	return h, undo.Run, nil
}

// start starts n replicas and points the client at them; the first start
// creates the client's verifier API token.
func (h *harness) start(ctx context.Context, n int) ([]*replica, error) {
	fmt.Fprintf(h.progress, "starting %d replicas of %s...\n", n, h.cfg.Exe)
	rs, err := startReplicas(ctx, h.cfg.Exe, h.dir, h.dsn, h.key, n)
	if err != nil {
		return nil, err
	}
	h.d.URLs = nil
	for _, r := range rs {
		h.d.URLs = append(h.d.URLs, r.url+"/v1/verify")
	}
	if h.d.Token == "" {
		if h.d.Token, err = onlinebench.CreateVerifier(ctx, h.d.Client, rs[0].url, h.admin); err != nil {
			_ = stopReplicas(rs)
			return nil, err
		}
	}
	return rs, nil
}

// run measures n replicas, checks the once-only guarantee and stops them.
//
// PostgreSQL's counters are read while no connection of the benchmark is
// open (pgStats): a backend reports its statistics at most once a second
// and, once idle, only after 10 s (PGSTAT_IDLE_INTERVAL), but always when
// it exits. So the counted window holds the replicas' start and stop with
// the drive, and the check runs on the replicas started again.
func (h *harness) run(ctx context.Context, n int) (res Result, err error) {
	pg0, err := h.pgStats(ctx)
	if err != nil {
		return Result{}, err
	}
	rs, err := h.start(ctx, n)
	if err != nil {
		return Result{}, err
	}
	fmt.Fprintf(h.progress, "driving %d replicas round-robin with %d clients for %s...\n", n, h.cfg.Concurrency, h.cfg.Duration)
	cpu0 := sampleCPU(rs)
	r := h.d.Verify(ctx, h.cfg.Concurrency, h.cfg.Duration)
	cpu1 := sampleCPU(rs)
	if err := h.stop(rs); err != nil {
		return Result{}, err
	}
	pg1, err := h.pgStats(ctx)
	if err != nil {
		return Result{}, err
	}
	if rs, err = h.start(ctx, n); err != nil {
		return Result{}, err
	}
	defer func() {
		if serr := h.stop(rs); err == nil && serr != nil {
			err = serr
		}
	}()
	res = Result{Replicas: n, Clients: h.cfg.Concurrency, Rates: r, Load: bench.LoadAvg()}
	if r.Requests > 0 {
		per1k := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(r.Requests) }
		perVerify := func(a, b int64) float64 { return float64(b-a) / float64(r.Requests) }
		rep, pg, cl, local := cpuUsed(cpu0, cpu1)
		res.ReplicaCPU, res.PostgresCPU, res.ClientCPU, res.PostgresLocal = per1k(rep), per1k(pg), per1k(cl), local
		res.CommitsPerVerify, res.RollbacksPerVerify = perVerify(pg0.commits, pg1.commits), perVerify(pg0.rollbacks, pg1.rollbacks)
		res.WALSyncsPerVerify, res.WALBytesPerVerify = perVerify(pg0.walSyncs, pg1.walSyncs), perVerify(pg0.walBytes, pg1.walBytes)
	}
	if r.Errors == 0 {
		h.accepted += r.Requests
	} else {
		h.exact = false
	}
	res.OnceOnly, err = h.check(ctx, rs)
	if r.Errors > 0 || !res.OnceOnly.Clean() {
		for _, rp := range rs { // before stop: the logs go with the replicas' directories
			fmt.Fprintf(h.progress, "replica %s: server errors in its log:\n%s", rp.url, serverErrors(rp.logs, 10))
		}
		if dir, kerr := keepLogs(rs); kerr != nil {
			fmt.Fprintf(h.progress, "keeping the replicas' logs: %v\n", kerr)
		} else {
			fmt.Fprintf(h.progress, "the replicas' whole logs are kept in %s\n", dir)
		}
	}
	return res, err
}

// check runs the once-only race and replay on rs and checks the database.
func (h *harness) check(ctx context.Context, rs []*replica) (Check, error) {
	c := Check{}
	admin, err := apiclient.New(rs[0].url, h.admin, "")
	if err != nil {
		return c, err
	}
	users := h.d.Users[:h.cfg.RaceUsers]
	fmt.Fprintf(h.progress, "once-only: racing a fresh code of %d users on all %d replicas, then replaying it...\n", len(users), len(rs))
	won, err := race(ctx, h.d, users, h.d.URLs, admin, &c)
	h.accepted += won
	if err != nil {
		return c, err
	}
	fmt.Fprintf(h.progress, "once-only: checking the audit log and %d tokens...\n", len(h.d.Users))
	if err := h.withStore(ctx, func(st store.Store) error { return checkStore(ctx, st, h.d.Users, &c) }); err != nil {
		return c, err
	}
	c.ClientAccepted, c.ClientExact = h.accepted, h.exact
	if c.ClientExact && c.ClientAccepted != c.Audited {
		c.problem("the client saw %d codes accepted, the audit log holds %d verify.ok entries", c.ClientAccepted, c.Audited)
	}
	return c, nil
}

// stop stops the replicas rs.
func (h *harness) stop(rs []*replica) error {
	fmt.Fprintf(h.progress, "stopping %d replicas...\n", len(rs))
	return stopReplicas(rs)
}

// withStore opens the scratch schema for f and closes it after, so that no
// connection of the harness stays open between runs holding statistics it
// has not reported.
func (h *harness) withStore(ctx context.Context, f func(store.Store) error) error {
	st, err := store.Open(ctx, h.dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	return f(st)
}

// pgStats waits until every connection of the benchmark but h.conn has
// closed (its backend reports its statistics as it exits) and reads
// PostgreSQL's counters.
func (h *harness) pgStats(ctx context.Context) (pgStats, error) {
	for deadline := time.Now().Add(quiesceWait); ; time.Sleep(20 * time.Millisecond) {
		var open int
		err := h.conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`, h.app).Scan(&open)
		if err != nil {
			return pgStats{}, fmt.Errorf("reading pg_stat_activity: %w", err)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			return pgStats{}, fmt.Errorf("%d PostgreSQL connections of the benchmark (application_name %s) still open %s after its processes stopped", open, h.app, quiesceWait)
		}
	}
	return readPGStats(ctx, h.conn)
}

// quiesceWait bounds pgStats's wait for the backends to exit.
const quiesceWait = 30 * time.Second
