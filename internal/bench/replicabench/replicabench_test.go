package replicabench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// bin is the outpost binary the replicas run, built by TestMain when
// PostgreSQL is configured (every test here needs both).
var bin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	if os.Getenv(storetest.PostgresEnv) != "" {
		dir, err := os.MkdirTemp("", "outpost-replicabench-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if bin, err = proctest.BuildOutpost(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// pgDSN is the PostgreSQL database of the tests; the benchmark makes and
// drops its own scratch schema in it.
func pgDSN(t *testing.T) string {
	dsn := os.Getenv(storetest.PostgresEnv)
	if dsn == "" {
		t.Skip(storetest.SkipMessage + " (this test starts outpost serve replicas on it)")
	}
	return dsn
}

// TestRunQuick runs one and two replicas briefly: every request accepted,
// figures filled in, and the once-only check computed and clean.
func TestRunQuick(t *testing.T) {
	cfg := Config{DSN: pgDSN(t), Replicas: []int{1, 2}, Users: 40, Concurrency: 4, Duration: 500 * time.Millisecond, RaceUsers: 10, Exe: bin}
	rs, err := Run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatalf("%v\nresults: %+v", err, rs)
	}
	if len(rs) != 2 {
		t.Fatalf("%d results, want 2: %+v", len(rs), rs)
	}
	for i, r := range rs {
		n := cfg.Replicas[i]
		if r.Replicas != n || r.Clients != 4 || r.Requests == 0 || r.Errors != 0 || r.Rate <= 0 || r.P99 < r.P50 || r.VsOne <= 0 {
			t.Errorf("%d replicas: %+v", n, r)
		}
		if r.ReplicaCPU <= 0 || r.ClientCPU <= 0 || r.CommitsPerVerify <= 0 || r.WALSyncsPerVerify <= 0 || r.Load == "" {
			t.Errorf("%d replicas: no cost figures: %+v", n, r)
		}
		o := r.OnceOnly
		if !o.Clean() || o.Raced != 10 || o.Replayed != 10*n || o.RaceViolations != 0 || o.ReplayAccepted != 0 || len(o.Problems) != 0 {
			t.Errorf("%d replicas: once-only check: %+v", n, o)
		}
		if !o.ClientExact || o.Audited == 0 || o.Audited != o.ClientAccepted || !o.Chain.OK || o.Chain.Entries < uint64(o.Audited) {
			t.Errorf("%d replicas: database check: %+v", n, o)
		}
	}
	if rs[1].OnceOnly.Audited <= rs[0].OnceOnly.Audited {
		t.Errorf("the second run's check did not see the first run's entries too: %d then %d", rs[0].OnceOnly.Audited, rs[1].OnceOnly.Audited)
	}
}

// TestReplayAcrossReplicas is the attacker: a code accepted by one replica
// is replayed to every replica, including one that has just verified the
// same user (and so may hold its rows in memory); none accepts it, nor an
// older code of the same token.
func TestReplayAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	h, done, err := newHarness(ctx, Config{DSN: pgDSN(t), Users: 2, Concurrency: 1, Duration: time.Second, Exe: bin}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	rs, err := h.start(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stopReplicas(rs); err != nil {
			t.Error(err)
		}
	}()
	a, b := h.d.URLs[0], h.d.URLs[1]
	u := &h.d.Users[0]
	post := func(url, code string) (int, string) {
		t.Helper()
		status, body, err := h.d.Post(ctx, url, u.ID, code)
		if err != nil {
			t.Fatal(err)
		}
		return status, string(body)
	}
	old := u.Next(h.d.Params) // counter 1, never sent
	first := u.Next(h.d.Params)
	if s, body := post(a, first); s != http.StatusOK {
		t.Fatalf("replica A refused a fresh code: %d %s", s, body)
	}
	second := u.Next(h.d.Params)
	if s, body := post(b, second); s != http.StatusOK {
		t.Fatalf("replica B refused a fresh code: %d %s", s, body)
	}
	for _, tc := range []struct{ name, code string }{
		{"the code B accepted", second},
		{"the code A accepted", first},
		{"a code older than both", old},
	} {
		for name, url := range map[string]string{"A": a, "B": b} {
			if s, body := post(url, tc.code); s == http.StatusOK {
				t.Errorf("replica %s accepted %s again: %s", name, tc.name, body)
			} else if s != http.StatusUnauthorized && s != http.StatusTooManyRequests {
				t.Errorf("replica %s answered %s with %d %s, want 401 (or 429 once the failures add up)", name, tc.name, s, body)
			}
		}
	}
	st, err := store.Open(ctx, h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var c Check
	if err := checkStore(ctx, st, h.d.Users, &c); err != nil {
		t.Fatal(err)
	}
	if c.Audited != 2 || c.Duplicates != 0 || c.CounterMismatches != 0 || !c.Chain.OK {
		t.Fatalf("database after the replays: %+v", c)
	}

	// The check itself is not vacuous: a second entry for counter 3 is a
	// duplicate, and one for counter 99 leaves the token's counter (3)
	// below the highest accepted.
	_, toks, err := st.GetUserTokens(ctx, server.DefaultRealm, u.ID)
	if err != nil || len(toks) != 1 {
		t.Fatal(toks, err)
	}
	for _, matched := range []int{3, 99} {
		e := eventlog.Entry{Time: time.Now(), Kind: audit.VerifyOK, Actor: "test", Subject: u.ID,
			Data: []byte(fmt.Sprintf(`{"token":%q,"matched":%d}`, toks[0].ID, matched))}
		if _, err := st.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	c = Check{}
	if err := checkStore(ctx, st, h.d.Users, &c); err != nil {
		t.Fatal(err)
	}
	if c.Duplicates != 1 || c.CounterMismatches != 1 || len(c.Problems) != 2 || c.Clean() {
		t.Fatalf("forged entries not caught: %+v", c)
	}
}

// TestKeepLogs: a failed run's replica logs are copied out of the
// directories that are removed (which hold the master key), one file per
// replica, readable by the user only.
func TestKeepLogs(t *testing.T) {
	var rs []*replica
	for i := range 2 {
		p := filepath.Join(t.TempDir(), "serve.log")
		if err := os.WriteFile(p, []byte(fmt.Sprintf(`{"level":"ERROR","msg":"replica %d"}`+"\n", i)), 0o600); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, &replica{logs: p})
	}
	dir, err := keepLogs(rs)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for i := range rs {
		p := filepath.Join(dir, fmt.Sprintf("replica-%d.log", i))
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), fmt.Sprintf("replica %d", i)) {
			t.Fatalf("%s: %q, %v", p, b, err)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", p, fi.Mode())
		}
	}
	if _, err := keepLogs([]*replica{{logs: filepath.Join(t.TempDir(), "missing")}}); err == nil {
		t.Error("a missing log copied without error")
	}
}
