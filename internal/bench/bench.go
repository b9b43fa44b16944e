// Package bench holds what Outpost's benchmark harnesses share; the
// harnesses themselves live in its sub-packages, one per `outpost bench`
// command, so that no product package carries code or API that only a
// benchmark needs:
//
//   - onlinebench: online verification over loopback HTTP (`bench online`);
//   - replicabench: several `outpost serve` processes on one PostgreSQL
//     database, driven round-robin, once-only checked (`bench replicas`);
//   - syncbench: device log ingestion and a full sync round (`bench sync`);
//   - offlinebench: bundle generation and offline verification against raw
//     argon2id (`bench offline`);
//   - sitebench: site verification and provisioning package sizes
//     (`bench site`);
//   - notifybench: code mails to a real SMTP server, alone and through
//     the outbox (`bench notify`).
//   - vouchbench and onboardbench, both run by `bench onboarding`: vouches
//     ingested through sync into the roster beside plain log entries;
//     device enrolments and mutual-TLS handshakes beside server-only TLS.
//
// Each takes a Config, measures with the wall clock (timing is their job:
// internal/clock's wall-clock scan allows this directory as a whole) and
// returns a result the CLI prints as a table or as JSON. Figures and how
// they were taken are in docs/BENCHMARKS.md.
package bench

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/store"
)

// OpenStore opens the store a benchmark runs on: a SQLite file in a new
// temporary directory when dsn is empty, or a scratch schema named
// prefix_<random> of the PostgreSQL database dsn names (existing data is
// never touched). done closes the store and removes the file or drops the
// schema.
func OpenStore(ctx context.Context, dsn, prefix string) (st store.Store, done func(), err error) {
	st, _, done, err = OpenStoreDSN(ctx, dsn, prefix)
	return st, done, err
}

// OpenStoreDSN is OpenStore that also returns the DSN of the store it
// opened (the SQLite file's path, or dsn with the scratch schema as its
// search_path), for processes the benchmark starts on the same store and
// for a benchmark that puts tables of its own beside the store's.
func OpenStoreDSN(ctx context.Context, dsn, prefix string) (st store.Store, opened string, done func(), err error) {
	var undo Undo
	defer func() {
		if err != nil {
			undo.Run()
		}
	}()
	if dsn == "" {
		dir, err := os.MkdirTemp("", prefix+"-")
		if err != nil {
			return nil, "", nil, err
		}
		undo.Add(func() { os.RemoveAll(dir) })
		dsn = filepath.Join(dir, "outpost.db")
	} else if IsPostgres(dsn) {
		scratch, drop, err := store.ScratchSchema(ctx, dsn, prefix)
		if err != nil {
			return nil, "", nil, err
		}
		undo.Add(func() { _ = drop() })
		dsn = scratch
	}
	st, err = store.Open(ctx, dsn)
	if err != nil {
		return nil, "", nil, err
	}
	undo.Add(func() { st.Close() })
	return st, dsn, undo.Run, nil
}

// Undo is what a benchmark has set up so far, undone last first by Run:
// on an error half-way, or when the caller is done.
type Undo []func()

// Add appends the undoing of one step.
func (u *Undo) Add(f func()) { *u = append(*u, f) }

// Run undoes every step, the last added first.
func (u Undo) Run() {
	for _, f := range slices.Backward(u) {
		f()
	}
}

// IsPostgres reports whether dsn names a PostgreSQL database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Parallel runs fn(0) … fn(n-1) on n goroutines and waits for them.
func Parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}

// WriteBytes returns the bytes this process has caused to be written to
// storage so far (write_bytes of /proc/self/io: Linux, counted when a page
// of a file is first dirtied, so fsync'd rewrites count again), and false
// where the counter cannot be read.
func WriteBytes() (int64, bool) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// Percentiles sorts lat and returns its 50th and 99th percentiles (zero
// when lat is empty).
func Percentiles(lat []time.Duration) (p50, p99 time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
}

// LoadAvg returns the 1-minute load average (Linux), or "": benchmarks on
// a shared machine print it beside their figures.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}
