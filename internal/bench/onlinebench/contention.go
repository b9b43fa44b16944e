package onlinebench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/outpost-auth/outpost/otp"
)

// DayEntries is a 1-day TOTP bundle of 30 s steps: the bundle work
// --during-bundle generates by default.
const DayEntries = 24 * 60 * 2

// BundleWorkNice is the niceness of the separate bundle process.
const BundleWorkNice = 10

// Bundle work placements --during-bundle measures verification beside.
const (
	// PlaceAllCores is the server before the pool: one bundle on every core.
	PlaceAllCores = "all-cores"
	// PlacePool is the server's bounded pool (Config.BundleWorkers).
	PlacePool = "pool"
	// PlaceProcess is a separate process at niceness BundleWorkNice, as
	// `outpost worker` would run (Config.ChildArgs).
	PlaceProcess = "process"
)

// contention measures verify beside bundle work in each placement: after
// the ordinary targets, per placement at alone's client count, one verify
// run alone and right after it one while a bundle of cfg.BundleEntries
// computes, cancelled when the run ends. The ratio is over the run just
// before: verify's rate alone drifts by ±15 % from run to run on a shared
// 2-core machine (the database grows, the host's neighbours come and go),
// more than the effect of a fraction of a core of bundle work.
func contention(ctx context.Context, f *fixture, cfg Config, alone Result, progress io.Writer) ([]Result, error) {
	var out []Result
	for _, place := range []string{PlaceAllCores, PlacePool, PlaceProcess} {
		if place == PlaceProcess && cfg.ChildArgs == nil {
			continue
		}
		fmt.Fprintf(progress, "running verify alone for %s with %d clients, before the %s placement...\n", cfg.Duration, alone.Clients, place)
		before := f.measure(ctx, f.verify(), alone.Clients, cfg.Duration)
		fmt.Fprintf(progress, "running verify beside a %d-entry bundle (%s) for %s with %d clients...\n", cfg.BundleEntries, place, cfg.Duration, alone.Clients)
		wctx, cancel := context.WithCancel(ctx)
		var done atomic.Int64
		werr := make(chan error, 1)
		go func() { werr <- placeWork(wctx, place, cfg, &done) }()
		time.Sleep(500 * time.Millisecond) // let the work reach every worker first
		r := f.measure(ctx, f.verify(), alone.Clients, cfg.Duration)
		cancel()
		if err := <-werr; err != nil && !errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("bundle work (%s): %w", place, err)
		}
		r.Beside = place
		if place != PlaceAllCores {
			r.BundleShare = share(cfg)
		}
		r.BundleEntries = done.Load()
		r.AloneRate = before.Rate
		if before.Rate > 0 {
			r.VsAlone = r.Rate / before.Rate
		}
		r.Load = bench.LoadAvg()
		out = append(out, r)
	}
	return out, nil
}

// placeWork runs bundle work in place until ctx ends or the bundle is
// done, counting entries in done (for the process, done stays 0: its
// entries are not seen from here).
func placeWork(ctx context.Context, place string, cfg Config, done *atomic.Int64) error {
	switch place {
	case PlaceAllCores:
		return BundleWork(ctx, cfg.BundleEntries, runtime.NumCPU(), nil, done)
	case PlacePool:
		p := workpool.New(workpool.Config{Workers: cfg.BundleWorkers, Share: cfg.BundleShare})
		defer p.Close()
		return BundleWork(ctx, cfg.BundleEntries, p.Workers(), p, done)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, exe, cfg.ChildArgs(cfg.BundleEntries, share(cfg))...)
	if err := cmd.Run(); err != nil && ctx.Err() == nil {
		return err
	}
	return ctx.Err()
}

// share is cfg.BundleShare, 1 when unset.
func share(cfg Config) float64 {
	if cfg.BundleShare == 0 {
		return 1
	}
	return cfg.BundleShare
}

// BundleWork issues one bundle of entries 30 s TOTP steps at the default
// argon2id profile, with a fresh seed and key, on workers goroutines
// (through pool when not nil), counting entries done. The separate process
// of --during-bundle runs it after Nice, through a pool of every core at
// its share.
func BundleWork(ctx context.Context, entries, workers int, pool *workpool.Pool, done *atomic.Int64) error {
	seed := make([]byte, 20)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	m, err := keys.GenerateMaster()
	if err != nil {
		return err
	}
	now := time.Now()
	p := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	req := bundle.Request{Realm: "bench", User: "bench", TokenID: "tok", Params: p, Secret: seed, Device: "bench-dev",
		From: now, Until: now.Add(time.Duration(entries) * 30 * time.Second), Now: now, Workers: workers, Override: true}
	if pool != nil {
		req.Run = pool.Do
	}
	_, _, err = bundle.Issue(ctx, req, m.Signer(0), func(n, _ int) {
		if done != nil {
			done.Store(int64(n))
		}
	})
	return err
}
