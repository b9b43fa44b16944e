// Package sitebench measures site verification ('outpost bench site'): the
// site's pure check next to the raw OTP engine on one core, the full site
// Verify, and the provisioning package's size for scopes of different sizes.
package sitebench

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
	"github.com/outpost-auth/outpost/internal/siteissue"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/otp"
	"github.com/outpost-auth/outpost/site"
)

// Target is issue 6's goal for derive + verify (site.CheckCode) per second
// on one core.
const Target = 200000

// Config is what Run measures.
type Config struct {
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

// Report is the result of Run.
type Report struct {
	GOMAXPROCS int           `json:"gomaxprocs"`
	Digits     int           `json:"digits"`
	Window     int           `json:"window"`
	Rows       []Throughput  `json:"throughput"`
	Sizes      []PackageSize `json:"package_sizes"`
}

// Run measures site verification next to the raw OTP engine in the same
// run, and the provisioning package's size for scopes of different sizes.
// Progress goes to log.
func Run(ctx context.Context, cfg Config, log io.Writer) (Report, error) {
	pol := site.DefaultPolicy()
	rep := Report{GOMAXPROCS: runtime.GOMAXPROCS(0), Digits: pol.Digits, Window: pol.Window}
	dir, err := os.MkdirTemp("", "outpost-bench-site")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	b := &run{cfg: cfg, pol: pol, dir: dir, log: log, now: time.Now().UTC().Truncate(time.Second)}
	if b.master, err = keys.GenerateMaster(); err != nil {
		return rep, err
	}
	if err := b.setUp(ctx); err != nil {
		return rep, err
	}
	if rep.Rows, err = b.pure(); err != nil {
		return rep, err
	}
	fullSite, sizes, err := b.packageSizes(ctx)
	if fullSite != nil {
		defer fullSite.Close()
	}
	if err != nil {
		return rep, err
	}
	rep.Sizes = sizes
	full, err := b.full(ctx, fullSite)
	if err != nil {
		return rep, err
	}
	rep.Rows = append(rep.Rows, full)
	raw := rep.Rows[0]
	for i := range rep.Rows {
		rep.Rows[i].VsRaw = rep.Rows[i].PerSec / raw.PerSec
	}
	return rep, nil
}

// techs is how many technicians the throughput measurements cycle through.
const techs = 4096

// run is one run's scope key, technicians and their current codes.
type run struct {
	cfg      Config
	pol      site.Policy
	dir      string
	log      io.Writer
	now      time.Time
	master   *keys.Master
	scopeKey []byte
	techs    []string
	codes    []string // techs' codes at now
}

// setUp derives the scope key of the bench scope's current epoch (as a
// scratch issuer's schedule gives it) and the technicians' codes.
func (b *run) setUp(ctx context.Context) error {
	is, done, err := b.issuer(ctx, "issuer-epoch")
	if err != nil {
		return err
	}
	sc, err := is.SetPolicy(ctx, by, "bench", b.pol)
	done()
	if err != nil {
		return err
	}
	b.scopeKey = siteissue.ScopeKey(b.master, "bench", sc.Current.N)
	b.techs, b.codes = make([]string, techs), make([]string, techs)
	for i := range b.techs {
		b.techs[i] = fmt.Sprintf("tech-%06d", i)
		if b.codes[i], err = b.pol.OTP().Generate(site.TechnicianSeed(b.scopeKey, b.techs[i]), 0, b.now); err != nil {
			return err
		}
	}
	return nil
}

// by is the actor of the bench's issuer calls.
var by = siteissue.Actor{Realm: "bench", Name: "bench"}

// issuer opens a scratch issuer on a store in b.dir/name whose clock stands
// at b.now; done closes its store.
func (b *run) issuer(ctx context.Context, name string) (is *siteissue.Issuer, done func(), err error) {
	idir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(idir, 0o700); err != nil {
		return nil, nil, err
	}
	st, err := store.Open(ctx, filepath.Join(idir, "outpost.db"))
	if err != nil {
		return nil, nil, err
	}
	ss, ok := st.(store.SiteStore)
	if !ok {
		st.Close()
		return nil, nil, fmt.Errorf("sitebench: the %s store keeps no sites", st.Engine())
	}
	is = siteissue.New(ss, b.master)
	is.Now, is.KDF = func() time.Time { return b.now }, b.cfg.KDF
	return is, func() { st.Close() }, nil
}

// pure measures the three pure operations, interleaved: a block of 256 of
// each in turn, so that all of them see the same load on a shared machine
// and their ratios mean something.
func (b *run) pure() ([]Throughput, error) {
	pol, now := b.pol, b.now
	fixedSeed := site.TechnicianSeed(b.scopeKey, "fixed")
	fixedCode, _ := pol.OTP().Generate(fixedSeed, 0, now)
	win := otp.Window{Back: pol.Window, Forward: pol.Window}
	var failed error
	ops := []struct {
		name string
		op   func(i int)
	}{
		{"raw otp.Params.Verify, fixed seed", func(int) {
			if _, err := pol.OTP().Verify(fixedSeed, fixedCode, now, win); err != nil {
				failed = err
			}
		}},
		{"derive only (site.TechnicianSeed)", func(i int) { site.TechnicianSeed(b.scopeKey, b.techs[i%techs]) }},
		{"derive + verify (site.CheckCode)", func(i int) {
			if _, err := site.CheckCode(b.scopeKey, pol, b.techs[i%techs], b.codes[i%techs], now); err != nil {
				failed = err
			}
		}},
	}
	fmt.Fprintf(b.log, "measuring %d operations interleaved for %v...\n", len(ops), time.Duration(len(ops))*b.cfg.Duration)
	counts, spent := make([]int64, len(ops)), make([]time.Duration, len(ops))
	runtime.GC()
	for begin := time.Now(); time.Since(begin) < time.Duration(len(ops))*b.cfg.Duration && failed == nil; {
		for k, o := range ops {
			t := time.Now()
			for range 256 {
				o.op(int(counts[k]))
				counts[k]++
			}
			spent[k] += time.Since(t)
		}
	}
	if failed != nil {
		return nil, fmt.Errorf("sitebench: a valid code was refused: %w", failed)
	}
	var rows []Throughput
	for k, o := range ops {
		rows = append(rows, Throughput{Name: o.name, Ops: counts[k], Seconds: spent[k].Seconds(),
			PerSec: float64(counts[k]) / spent[k].Seconds(), NsPerOp: float64(spent[k].Nanoseconds()) / float64(counts[k])})
	}
	return rows, nil
}

// packageSizes provisions a package for each scope size (and the last size
// again with cfg.Revoked technicians revoked), installs each in a scratch
// site and checks the last technician's code. It returns the first size's
// site, still open (the caller closes it), for the full Verify.
func (b *run) packageSizes(ctx context.Context) (*site.Site, []PackageSize, error) {
	sizes := append([]int(nil), b.cfg.Technicians...)
	if b.cfg.Revoked > 0 { // the same scope size again, with a revocation list
		sizes = append(sizes, sizes[len(sizes)-1])
	}
	var first *site.Site
	var out []PackageSize
	for i, count := range sizes {
		revoked := 0
		if b.cfg.Revoked > 0 && i == len(sizes)-1 {
			revoked = b.cfg.Revoked
		}
		s, ps, err := b.packageSize(ctx, i, count, revoked)
		if err != nil {
			return first, out, err
		}
		out = append(out, ps)
		if i == 0 {
			first = s
		} else {
			s.Close()
		}
	}
	return first, out, nil
}

// packageSize is one row of packageSizes, with a fresh issuer and site
// numbered i; it returns the site, open.
func (b *run) packageSize(ctx context.Context, i, count, revoked int) (*site.Site, PackageSize, error) {
	is, done, err := b.issuer(ctx, fmt.Sprint("issuer-", i))
	if err != nil {
		return nil, PackageSize{}, err
	}
	defer done()
	fmt.Fprintf(b.log, "deriving %d technicians' seeds, then provisioning (%d revoked)...\n", count, revoked)
	start := time.Now()
	var last []byte
	for t := range count {
		last = site.TechnicianSeed(b.scopeKey, fmt.Sprintf("tech-%07d", t))
	}
	derive := time.Since(start)
	if revoked > 0 {
		rv := make([]string, revoked)
		for r := range rv {
			rv[r] = fmt.Sprintf("gone-%07d", r)
		}
		if _, err := is.SetPolicy(ctx, by, "bench", b.pol); err != nil {
			return nil, PackageSize{}, err
		}
		if _, err := is.Revoke(ctx, by, "bench", rv, nil, ""); err != nil {
			return nil, PackageSize{}, err
		}
	}
	pass := []byte("benchmark package passphrase")
	p, err := is.Provision(ctx, by, "bench", "bench-site", pass)
	if err != nil {
		return nil, PackageSize{}, err
	}
	ps := PackageSize{Technicians: count, Revoked: revoked, DeriveSeconds: derive.Seconds(), Bytes: len(p.Package)}
	// Install it and check the last technician, whom the package never heard of.
	s, err := site.Init(ctx, filepath.Join(b.dir, fmt.Sprint("site-", i)), site.InitConfig{SiteID: "bench-site",
		ServerKey: b.master.Signer(0).Public, Package: p.Package, Passphrase: pass, Now: func() time.Time { return b.now }})
	if err != nil {
		return nil, PackageSize{}, err
	}
	code, _ := b.pol.OTP().Generate(last, 0, b.now)
	_, err = s.Verify(ctx, fmt.Sprintf("tech-%07d", count-1), code)
	ps.Checked = err == nil
	return s, ps, nil
}

// full measures the whole decision on s: SQLite transaction with fsync,
// state and signed log entry.
func (b *run) full(ctx context.Context, s *site.Site) (Throughput, error) {
	fmt.Fprintf(b.log, "measuring the full site Verify (SQLite, fsync, log) for %v...\n", b.cfg.Duration)
	clockNow := b.now
	s.Now = func() time.Time { return clockNow }
	full := Throughput{Name: "full site Verify (SQLite txn + fsync + signed log)"}
	var refused int64
	start := time.Now()
	for time.Since(start) < b.cfg.Duration {
		i := int(full.Ops) % techs
		if _, err := s.Verify(ctx, b.techs[i], b.codes[i]); err != nil {
			// A 6-digit code collides with one of its neighbours' in the
			// window about once in 500,000 checks; that refusal is correct.
			if !errors.Is(err, site.ErrRefused) || full.Ops > 0 && refused*1000 > full.Ops {
				return full, fmt.Errorf("sitebench: full verify: %w", err)
			}
			refused++
		}
		full.Ops++
		if full.Ops%techs == 0 { // every technician used this step: move on one step
			clockNow = clockNow.Add(b.pol.Period)
			for j := range b.techs {
				b.codes[j], _ = b.pol.OTP().Generate(site.TechnicianSeed(b.scopeKey, b.techs[j]), 0, clockNow)
			}
		}
	}
	el := time.Since(start)
	full.Seconds, full.PerSec, full.NsPerOp = el.Seconds(), float64(full.Ops)/el.Seconds(), float64(el.Nanoseconds())/float64(full.Ops)
	return full, nil
}
