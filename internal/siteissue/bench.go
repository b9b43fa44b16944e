package siteissue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/otp"
	"github.com/outpost-auth/outpost/site"
)

// BenchConfig is what Bench measures.
type BenchConfig struct {
	// Duration of each throughput measurement.
	Duration time.Duration
	// Technicians are the scope sizes whose package size is reported.
	Technicians []int
	// Revoked is the size of the revocation list of the last package-size row.
	Revoked int
	// KDF is the package passphrase's argon2id cost.
	KDF keys.KDFParams
}

// Throughput is one measured operation, run by one goroutine (one core).
type Throughput struct {
	Name    string  `json:"name"`
	Ops     int64   `json:"ops"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_sec"`
	NsPerOp float64 `json:"ns_per_op"`
	// VsRaw is PerSec divided by the raw OTP engine's.
	VsRaw float64 `json:"vs_raw"`
}

// PackageSize is the package of a scope with Technicians technicians (and
// Revoked of them revoked).
type PackageSize struct {
	Technicians int `json:"technicians"`
	Revoked     int `json:"revoked"`
	// DeriveSeconds is the time to derive every technician's seed (what
	// issuing all their credentials costs the server).
	DeriveSeconds float64 `json:"derive_seconds"`
	Bytes         int     `json:"package_bytes"`
	// Checked is true when a site installed the package and accepted a code
	// of the last technician.
	Checked bool `json:"checked"`
}

// BenchReport is the result of Bench.
type BenchReport struct {
	GOMAXPROCS int           `json:"gomaxprocs"`
	Digits     int           `json:"digits"`
	Window     int           `json:"window"`
	Rows       []Throughput  `json:"throughput"`
	Sizes      []PackageSize `json:"package_sizes"`
}

// Bench measures site verification next to the raw OTP engine in the same
// run, and the provisioning package's size for scopes of different sizes.
// Progress goes to log.
func Bench(ctx context.Context, cfg BenchConfig, log io.Writer) (BenchReport, error) {
	pol := site.DefaultPolicy()
	rep := BenchReport{GOMAXPROCS: runtime.GOMAXPROCS(0), Digits: pol.Digits, Window: pol.Window}
	now := time.Now().UTC().Truncate(time.Second)
	master, err := keys.GenerateMaster()
	if err != nil {
		return rep, err
	}
	cur, err := newSchedule().At(now)
	if err != nil {
		return rep, err
	}
	scopeKey := ScopeKey(master, "bench", cur.N)
	const n = 4096
	techs, codes := make([]string, n), make([]string, n)
	for i := range techs {
		techs[i] = fmt.Sprintf("tech-%06d", i)
		if codes[i], err = pol.OTP().Generate(site.TechnicianSeed(scopeKey, techs[i]), 0, now); err != nil {
			return rep, err
		}
	}
	fixedSeed := site.TechnicianSeed(scopeKey, "fixed")
	fixedCode, _ := pol.OTP().Generate(fixedSeed, 0, now)
	win := otp.Window{Back: pol.Window, Forward: pol.Window}
	var failed error
	// The three pure operations run interleaved, a block of 256 of each in
	// turn, so that all of them see the same load on a shared machine and
	// their ratios mean something.
	ops := []struct {
		name string
		op   func(i int)
	}{
		{"raw otp.Params.Verify, fixed seed", func(int) {
			if _, err := pol.OTP().Verify(fixedSeed, fixedCode, now, win); err != nil {
				failed = err
			}
		}},
		{"derive only (site.TechnicianSeed)", func(i int) { site.TechnicianSeed(scopeKey, techs[i%n]) }},
		{"derive + verify (site.CheckCode)", func(i int) {
			if _, err := site.CheckCode(scopeKey, pol, techs[i%n], codes[i%n], now); err != nil {
				failed = err
			}
		}},
	}
	fmt.Fprintf(log, "measuring %d operations interleaved for %v...\n", len(ops), time.Duration(len(ops))*cfg.Duration)
	counts, spent := make([]int64, len(ops)), make([]time.Duration, len(ops))
	runtime.GC()
	for begin := time.Now(); time.Since(begin) < time.Duration(len(ops))*cfg.Duration && failed == nil; {
		for k, o := range ops {
			t := time.Now()
			for range 256 {
				o.op(int(counts[k]))
				counts[k]++
			}
			spent[k] += time.Since(t)
		}
	}
	for k, o := range ops {
		rep.Rows = append(rep.Rows, Throughput{Name: o.name, Ops: counts[k], Seconds: spent[k].Seconds(),
			PerSec: float64(counts[k]) / spent[k].Seconds(), NsPerOp: float64(spent[k].Nanoseconds()) / float64(counts[k])})
	}
	raw := rep.Rows[0]
	if failed != nil {
		return rep, fmt.Errorf("siteissue: bench: a valid code was refused: %w", failed)
	}

	// Package sizes, and the full Verify on the largest package's site.
	dir, err := os.MkdirTemp("", "outpost-bench-site")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	pass := []byte("benchmark package passphrase")
	sizes := append([]int(nil), cfg.Technicians...)
	if cfg.Revoked > 0 { // the same scope size again, with a revocation list
		sizes = append(sizes, sizes[len(sizes)-1])
	}
	var fullSite *site.Site
	for i, count := range sizes {
		revoked := 0
		if cfg.Revoked > 0 && i == len(sizes)-1 {
			revoked = cfg.Revoked
		}
		idir := filepath.Join(dir, fmt.Sprint("issuer-", i))
		if err := os.MkdirAll(idir, 0o700); err != nil {
			return rep, err
		}
		st, err := store.Open(ctx, filepath.Join(idir, "outpost.db"))
		if err != nil {
			return rep, err
		}
		is := New(st.(store.SiteStore), master)
		is.Now, is.KDF = func() time.Time { return now }, cfg.KDF
		by := Actor{Realm: "bench", Name: "bench"}
		fmt.Fprintf(log, "deriving %d technicians' seeds, then provisioning (%d revoked)...\n", count, revoked)
		start := time.Now()
		var last []byte
		for t := range count {
			last = site.TechnicianSeed(scopeKey, fmt.Sprintf("tech-%07d", t))
		}
		derive := time.Since(start)
		if revoked > 0 {
			rv := make([]string, revoked)
			for r := range rv {
				rv[r] = fmt.Sprintf("gone-%07d", r)
			}
			if _, err := is.SetPolicy(ctx, by, "bench", pol); err != nil {
				st.Close()
				return rep, err
			}
			if _, err := is.Revoke(ctx, by, "bench", rv, nil, ""); err != nil {
				st.Close()
				return rep, err
			}
		}
		p, err := is.Provision(ctx, by, "bench", "bench-site", pass)
		st.Close()
		if err != nil {
			return rep, err
		}
		ps := PackageSize{Technicians: count, Revoked: revoked, DeriveSeconds: derive.Seconds(), Bytes: len(p.Package)}
		// Install it and check the last technician, whom the package never heard of.
		s, err := site.Init(ctx, filepath.Join(dir, fmt.Sprint("site-", i)), site.InitConfig{SiteID: "bench-site",
			ServerKey: master.Signer(0).Public, Package: p.Package, Passphrase: pass, Now: func() time.Time { return now }})
		if err != nil {
			return rep, err
		}
		code, _ := pol.OTP().Generate(last, 0, now)
		_, err = s.Verify(ctx, fmt.Sprintf("tech-%07d", count-1), code)
		ps.Checked = err == nil
		rep.Sizes = append(rep.Sizes, ps)
		if i == 0 {
			fullSite = s
			defer s.Close()
		} else {
			s.Close()
		}
	}

	// The whole decision: SQLite transaction with fsync, state and signed log entry.
	fmt.Fprintf(log, "measuring the full site Verify (SQLite, fsync, log) for %v...\n", cfg.Duration)
	clockNow := now
	fullSite.Now = func() time.Time { return clockNow }
	full := Throughput{Name: "full site Verify (SQLite txn + fsync + signed log)"}
	var refused int64
	start := time.Now()
	for time.Since(start) < cfg.Duration {
		i := int(full.Ops) % n
		if _, err := fullSite.Verify(ctx, techs[i], codes[i]); err != nil {
			// A 6-digit code collides with one of its neighbours' in the
			// window about once in 500,000 checks; that refusal is correct.
			if !errors.Is(err, site.ErrRefused) || full.Ops > 0 && refused*1000 > full.Ops {
				return rep, fmt.Errorf("siteissue: bench: full verify: %w", err)
			}
			refused++
		}
		full.Ops++
		if full.Ops%n == 0 { // every technician used this step: move on one step
			clockNow = clockNow.Add(pol.Period)
			for j := range techs {
				codes[j], _ = pol.OTP().Generate(site.TechnicianSeed(scopeKey, techs[j]), 0, clockNow)
			}
		}
	}
	el := time.Since(start)
	full.Seconds, full.PerSec, full.NsPerOp = el.Seconds(), float64(full.Ops)/el.Seconds(), float64(el.Nanoseconds())/float64(full.Ops)
	rep.Rows = append(rep.Rows, full)
	for i := range rep.Rows {
		rep.Rows[i].VsRaw = rep.Rows[i].PerSec / raw.PerSec
	}
	return rep, nil
}
