// Package benchonline measures online verification over loopback HTTP: many
// distinct users with HOTP tokens (so every request is a fresh, valid code
// and every acceptance is a durable conditional write), next to the server's
// no-op handler (same authentication and decoding, no store work) in the
// same run, and reports rates, latency percentiles and the ratio.
package benchonline

import (
	"bytes"
	"context"
	"strings"

	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/online"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/otp"
)

// Config of one benchmark run.
type Config struct {
	// DSN of the store; empty uses a SQLite file in a temporary directory.
	DSN         string
	Users       int
	Concurrency int
	Duration    time.Duration
}

// Result of one handler's run.
type Result struct {
	Engine   string        `json:"engine"`
	Handler  string        `json:"handler"`
	Requests int64         `json:"requests"`
	Errors   int64         `json:"errors"`
	Rate     float64       `json:"per_second"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	// FirstError is the first non-200 answer, for diagnosis.
	FirstError string `json:"first_error,omitempty"`
}

// Run measures the no-op handler and /v1/verify on one store and returns both.
func Run(ctx context.Context, cfg Config, progress io.Writer) ([]Result, error) {
	dsn := cfg.DSN
	if dsn == "" {
		dir, err := os.MkdirTemp("", "outpost-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		dsn = filepath.Join(dir, "outpost.db")
	}
	if isPostgres(dsn) {
		scratch, drop, err := store.ScratchSchema(ctx, dsn, "outpost_bench")
		if err != nil {
			return nil, err
		}
		defer func() { _ = drop() }()
		dsn = scratch
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	m, err := keys.GenerateMaster()
	if err != nil {
		return nil, err
	}
	pol := online.DefaultPolicy
	srv, err := server.New(server.Config{Store: st, Master: m, Policy: pol, EnableNoop: true,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	admin, err := srv.Bootstrap(ctx)
	if err != nil {
		return nil, err
	}
	if admin == "" {
		return nil, fmt.Errorf("the benchmark needs an empty database; %s was bootstrapped before", redact(dsn))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	defer hs.Close()
	base := "http://" + ln.Addr().String()

	fmt.Fprintf(progress, "enrolling %d users on %s...\n", cfg.Users, st.Engine())
	run := fmt.Sprintf("b%d", time.Now().UnixNano()%1e6)
	users := make([]benchUser, cfg.Users)
	svc := srv.Service()
	p := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
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
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency * 2, MaxConnsPerHost: 0}}
	verifierTok, err := createVerifier(ctx, client, base, admin)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, h := range []string{"noop", "verify"} {
		fmt.Fprintf(progress, "running %s for %s with %d clients...\n", h, cfg.Duration, cfg.Concurrency)
		for i := range users {
			users[i].counter = 0 // the no-op run consumed no counters on the server
		}
		r := load(ctx, client, base+"/v1/"+h, verifierTok, users, p, cfg)
		r.Engine, r.Handler = st.Engine(), h
		out = append(out, r)
	}
	return out, nil
}

type benchUser struct {
	id      string
	seed    []byte
	counter uint64
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

// load runs cfg.Concurrency workers for cfg.Duration; worker w owns users
// w, w+C, w+2C, ... so that no two workers race on one token.
func load(ctx context.Context, c *http.Client, url, tok string, users []benchUser, p otp.Params, cfg Config) Result {
	var n, errs atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, cfg.Concurrency)
	deadline := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if w >= len(users) {
				return
			}
			for i := w; time.Now().Before(deadline) && ctx.Err() == nil; i += cfg.Concurrency {
				if i >= len(users) {
					i = w
				}
				u := &users[i]
				u.counter++
				code, _ := p.CodeAt(u.seed, u.counter)
				body := []byte(`{"user":"` + u.id + `","code":"` + code + `"}`)
				req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				res, err := c.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				rb, _ := io.ReadAll(res.Body)
				res.Body.Close()
				lat[w] = append(lat[w], time.Since(t0))
				if res.StatusCode != 200 {
					if errs.Add(1) == 1 {
						firstErr.Store(fmt.Sprintf("%d %s", res.StatusCode, bytes.TrimSpace(rb)))
					}
				}
				n.Add(1)
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := Result{Requests: n.Load(), Errors: errs.Load(), Rate: float64(n.Load()) / el.Seconds()}
	if fe, ok := firstErr.Load().(string); ok {
		r.FirstError = fe
	}
	if len(all) > 0 {
		r.P50 = all[len(all)/2]
		r.P99 = all[len(all)*99/100]
	}
	return r
}

func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

func redact(dsn string) string {
	if len(dsn) > 11 && dsn[:11] == "postgres://" {
		return "the PostgreSQL database"
	}
	return dsn
}
