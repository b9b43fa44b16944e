// Package deliverybench measures the courier's side of deliveries ('outpost
// bench deliveries', docs/BENCHMARKS.md):
//
//   - issue: the mode data of Config.Deliveries deliveries in hash and in
//     fingerprint mode (what Create and Reassign compute, the slow part of
//     a route manifest), on all cores, beside raw argon2id at the same
//     parameters and core count measured in the same run; and the time to
//     build and sign one device's manifest of those deliveries;
//   - verify: a courier device's offline check at the door (field store,
//     signed log, attempt counted, receipt signed), its latency per mode;
//   - token: delivery tokens verified per second on one core;
//   - ingest: receipts turned into "delivered" per second through the
//     server's sync path over loopback HTTP (Config.Devices devices syncing
//     at once), on the store Config.DSN names.
package deliverybench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/codecheck"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"github.com/outpost-auth/outpost/internal/delivery"
	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/deliverytoken"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/offline"
	"golang.org/x/crypto/argon2"
)

// Config of one run.
type Config struct {
	// DSN of the store; empty uses a SQLite file in a temporary directory.
	DSN string
	// Deliveries per mode for the issue figures (the issue's: 200).
	Deliveries int
	// Hash and Fingerprint are the modes' argon2id costs (zero: codecheck's defaults).
	Hash, Fingerprint codecheck.Params
	// Checks per mode for the verify latency.
	Checks int
	// Receipts in all for the ingest rate, from Devices devices.
	Receipts, Devices int
	// SkipIssue skips the issue and verify figures (ingest only).
	SkipIssue bool
}

// cheapCosts are mode data costs for deliveries that set up a measure of
// something else (the manifest's assembly, the ingest of receipts).
var cheapCosts = courierproto.Costs{Hash: codecheck.Params{Time: 1, MemoryKiB: 64, Threads: 1}, Floor: &cost.Floor{}}

// Defaults: the issue's figures.
var Defaults = Config{Deliveries: 200, Checks: 5, Receipts: 2000, Devices: 4}

// Result of one run.
type Result struct {
	Engine     string `json:"engine"`
	GoMaxProcs int    `json:"gomaxprocs"`
	Deliveries int    `json:"deliveries"`
	// Issue: wall time for Deliveries mode data, and raw argon2id for as many.
	HashParams        string        `json:"hash_params"`
	HashIssue         time.Duration `json:"hash_issue_ns"`
	HashRaw           time.Duration `json:"hash_raw_argon2id_ns"`
	FingerprintParams string        `json:"fingerprint_params"`
	FingerprintIssue  time.Duration `json:"fingerprint_issue_ns"`
	FingerprintRaw    time.Duration `json:"fingerprint_raw_argon2id_ns"`
	// ManifestBuild: list, open the sealed mode data, record, sign one manifest of all of them.
	ManifestBuild time.Duration `json:"manifest_build_ns"`
	// Verify: p50 latency of an offline check at the door, per mode.
	VerifyHash        time.Duration `json:"verify_hash_ns"`
	VerifyFingerprint time.Duration `json:"verify_fingerprint_ns"`
	VerifyToken       time.Duration `json:"verify_token_ns"`
	// TokenRate: deliverytoken.Verify per second on one core.
	TokenRate float64 `json:"token_verifies_per_second"`
	// Ingest.
	Receipts    int           `json:"receipts"`
	IngestWall  time.Duration `json:"ingest_wall_ns"`
	IngestRate  float64       `json:"receipts_per_second"`
	IngestError string        `json:"ingest_error,omitempty"`
}

// Run measures on the store cfg.DSN names, writing progress to progress.
func Run(ctx context.Context, cfg Config, progress io.Writer) (Result, error) {
	if cfg.Hash == (codecheck.Params{}) {
		cfg.Hash = codecheck.DefaultHashParams
	}
	if cfg.Fingerprint == (codecheck.Params{}) {
		cfg.Fingerprint = codecheck.DefaultFingerprintParams
	}
	st, done, err := bench.OpenStore(ctx, cfg.DSN, "outpost_bench_deliveries")
	if err != nil {
		return Result{}, err
	}
	defer done()
	res := Result{Engine: st.Engine(), GoMaxProcs: runtime.GOMAXPROCS(0), Deliveries: cfg.Deliveries,
		HashParams: cfg.Hash.KDF().String(), FingerprintParams: cfg.Fingerprint.KDF().String()}
	say := func(format string, a ...any) {
		fmt.Fprintf(progress, "[%s] "+format+"\n", append([]any{res.Engine}, a...)...)
	}
	m, err := keys.GenerateMaster()
	if err != nil {
		return res, err
	}
	f, err := newFixture(ctx, st, m)
	if err != nil {
		return res, err
	}
	defer f.stop()
	if !cfg.SkipIssue {
		say("mode data for %d deliveries per mode, beside raw argon2id", cfg.Deliveries)
		if err := issue(ctx, cfg, &res); err != nil {
			return res, err
		}
		say("manifest of %d deliveries; offline checks, %d per mode", cfg.Deliveries, cfg.Checks)
		if err := manifestAndVerify(ctx, cfg, f, &res); err != nil {
			return res, err
		}
	}
	res.TokenRate = tokenRate(300 * time.Millisecond)
	say("%d receipts from %d devices through sync", cfg.Receipts, cfg.Devices)
	if err := ingest(ctx, cfg, f, &res); err != nil {
		res.IngestError = err.Error()
	}
	return res, nil
}

// issue times the mode data of cfg.Deliveries deliveries per mode, and raw
// argon2id for as many, on GOMAXPROCS goroutines each.
func issue(ctx context.Context, cfg Config, res *Result) error {
	code, err := deliverycode.New(deliverycode.DefaultDigits)
	if err != nil {
		return err
	}
	var failed error
	var mu sync.Mutex
	timeAll := func(fn func(i int) error) time.Duration {
		procs := runtime.GOMAXPROCS(0)
		start := time.Now()
		bench.Parallel(procs, func(w int) {
			for i := w; i < cfg.Deliveries; i += procs {
				if err := fn(i); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
			}
		})
		return time.Since(start)
	}
	binding := func(i int) courierproto.Binding {
		return courierproto.Binding{Realm: "bench", Delivery: fmt.Sprintf("p-%05d", i), Version: 1, Device: "van-1"}
	}
	costs := courierproto.Costs{Hash: cfg.Hash, Fingerprint: cfg.Fingerprint, Floor: &cost.Floor{}}
	raw := func(p codecheck.Params) func(int) error {
		return func(int) error {
			argon2.IDKey([]byte(code), make([]byte, 16), p.Time, p.MemoryKiB, p.Threads, 32)
			return nil
		}
	}
	res.HashIssue = timeAll(func(i int) error {
		_, err := courierproto.MakeCheck(courierproto.ModeHash, code, binding(i), costs)
		return err
	})
	res.HashRaw = timeAll(raw(cfg.Hash))
	res.FingerprintIssue = timeAll(func(i int) error {
		_, err := courierproto.MakeCheck(courierproto.ModeFingerprint, code, binding(i), costs)
		return err
	})
	res.FingerprintRaw = timeAll(raw(cfg.Fingerprint))
	return failed
}

// fixture is a server on loopback HTTP, a delivery service on its store,
// and courier devices (field stores) registered with it.
type fixture struct {
	st      store.Store
	m       *keys.Master
	srv     *server.Server
	base    string
	devices []*offline.Store
	dirs    []string
	hs      *http.Server
}

func newFixture(ctx context.Context, st store.Store, m *keys.Master) (*fixture, error) {
	srv, err := server.New(server.Config{Store: st, Master: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	if _, err := srv.Bootstrap(ctx); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &fixture{st: st, m: m, srv: srv, base: "http://" + ln.Addr().String(), hs: &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = f.hs.Serve(ln) }()
	return f, nil
}

func (f *fixture) stop() {
	f.hs.Close()
	for _, d := range f.devices {
		d.Close()
	}
	for _, dir := range f.dirs {
		os.RemoveAll(dir)
	}
}

// service is a delivery service on the fixture's store issuing mode data at costs.
func (f *fixture) service(costs courierproto.Costs) *delivery.Service {
	st := f.st
	return &delivery.Service{Store: st.(store.DeliveryStore), Master: f.m, Courier: &delivery.Courier{Store: st.(store.CourierStore),
		Devices: st.(store.SyncStore), Signer: f.srv.Signer(), Costs: costs,
		Audit: func(ctx context.Context, e eventlog.Entry) error { _, err := st.AppendAudit(ctx, e); return err }}}
}

// addDevices initialises n field stores and registers them; it returns their indices.
func (f *fixture) addDevices(ctx context.Context, prefix string, n int) ([]int, error) {
	var out []int
	for i := range n {
		dir, err := os.MkdirTemp("", "outpost-bench-courier-")
		if err != nil {
			return nil, err
		}
		f.dirs = append(f.dirs, dir)
		id := fmt.Sprintf("%s-van-%03d", prefix, i)
		s, err := offline.Init(ctx, dir, offline.Config{DeviceID: id, ServerKey: f.srv.Signer().Public}, offline.Options{})
		if err != nil {
			return nil, err
		}
		f.devices = append(f.devices, s)
		pub := s.DevicePublicKey()
		if err := f.st.(store.SyncStore).CreateDevice(ctx, store.Device{Realm: server.DefaultRealm, ID: id, Status: store.DeviceActive,
			PublicKey: pub, KeyID: keys.KeyID(pub)}); err != nil {
			return nil, err
		}
		out = append(out, len(f.devices)-1)
	}
	return out, nil
}

func (f *fixture) create(ctx context.Context, svc *delivery.Service, id string, dev int, mode delivery.Mode) (string, error) {
	_, code, err := svc.Create(ctx, server.DefaultRealm, delivery.Request{ID: id, Device: f.devices[dev].DeviceID(),
		Recipient: delivery.Recipient{Email: "bench@example.org"}, NotAfter: time.Now().Add(48 * time.Hour), Mode: mode}, "bench")
	return code, err
}

func (f *fixture) sync(ctx context.Context, dev int) (offline.SyncReport, error) {
	c, err := offline.NewSyncClient(f.base, "")
	if err != nil {
		return offline.SyncReport{}, err
	}
	return f.devices[dev].Sync(ctx, c)
}

// manifestAndVerify times one manifest of cfg.Deliveries hash-mode
// deliveries, then offline checks per mode on a device that synced.
func manifestAndVerify(ctx context.Context, cfg Config, f *fixture, res *Result) error {
	devs, err := f.addDevices(ctx, "v", 2)
	if err != nil {
		return err
	}
	svc := f.service(courierproto.Costs{Hash: cfg.Hash, Fingerprint: cfg.Fingerprint, Floor: &cost.Floor{}})
	// The manifest: deliveries on the second device, issued with cheap mode
	// data (the issue figures above are the slow part; this is the assembly).
	cheap := f.service(cheapCosts)
	for i := range cfg.Deliveries {
		if _, err := f.create(ctx, cheap, fmt.Sprintf("m-%05d", i), devs[1], delivery.ModeHash); err != nil {
			return err
		}
	}
	start := time.Now()
	if _, err := svc.Manifest(ctx, server.DefaultRealm, f.devices[devs[1]].DeviceID()); err != nil {
		return err
	}
	res.ManifestBuild = time.Since(start)
	// Offline checks at the door, on the first device.
	dev := devs[0]
	codes := map[string]string{}
	for _, mode := range []delivery.Mode{delivery.ModeHash, delivery.ModeFingerprint} {
		for i := range cfg.Checks {
			id := fmt.Sprintf("v-%s-%03d", mode, i)
			if codes[id], err = f.create(ctx, svc, id, dev, mode); err != nil {
				return err
			}
		}
	}
	if _, err := f.sync(ctx, dev); err != nil {
		return err
	}
	lat := func(mode delivery.Mode) (time.Duration, error) {
		var ls []time.Duration
		for i := range cfg.Checks {
			id := fmt.Sprintf("v-%s-%03d", mode, i)
			t0 := time.Now()
			if _, err := f.devices[dev].CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: id, Code: codes[id]}); err != nil {
				return 0, err
			}
			ls = append(ls, time.Since(t0))
		}
		p50, _ := bench.Percentiles(ls)
		return p50, nil
	}
	if res.VerifyHash, err = lat(delivery.ModeHash); err != nil {
		return err
	}
	if res.VerifyFingerprint, err = lat(delivery.ModeFingerprint); err != nil {
		return err
	}
	// A token check costs a signature verification beside the same
	// store work; measured alone here (the token is signed by a test key).
	res.VerifyToken = time.Duration(float64(time.Second) / max(1, tokenRate(100*time.Millisecond)))
	return nil
}

// tokenRate is deliverytoken.Verify per second on one goroutine for d.
func tokenRate(d time.Duration) float64 {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	tok, err := deliverytoken.Sign(priv, deliverytoken.Claims{Realm: "bench", Delivery: "p-00001", Version: 1, Device: "van-1", NotAfter: now.Add(time.Hour)})
	if err != nil {
		return 0
	}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := deliverytoken.Verify(pub, tok, now); err != nil {
			return 0
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// ingest times the syncs that carry cfg.Receipts receipts (cheap hash
// mode data, so that the store and the receipt rules are what is measured).
func ingest(ctx context.Context, cfg Config, f *fixture, res *Result) error {
	devs, err := f.addDevices(ctx, "i", cfg.Devices)
	if err != nil {
		return err
	}
	svc := f.service(cheapCosts)
	per := cfg.Receipts / cfg.Devices
	var mu sync.Mutex
	var failed error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if failed == nil {
			failed = err
		}
	}
	bench.Parallel(cfg.Devices, func(w int) {
		d := devs[w]
		codes := make([]string, per)
		for i := range per {
			var err error
			if codes[i], err = f.create(ctx, svc, fmt.Sprintf("r-%03d-%05d", d, i), d, delivery.ModeHash); err != nil {
				fail(err)
				return
			}
		}
		if _, err := f.sync(ctx, d); err != nil {
			fail(err)
			return
		}
		for i := range per {
			if _, err := f.devices[d].CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: fmt.Sprintf("r-%03d-%05d", d, i), Code: codes[i]}); err != nil {
				fail(err)
				return
			}
		}
	})
	if failed != nil {
		return failed
	}
	delivered := make([]int, cfg.Devices)
	start := time.Now()
	bench.Parallel(cfg.Devices, func(w int) {
		rep, err := f.sync(ctx, devs[w])
		if err != nil {
			fail(err)
			return
		}
		for _, a := range rep.Receipts {
			if a.Status == courierproto.AckDelivered {
				delivered[w]++
			}
		}
	})
	res.IngestWall = time.Since(start)
	for _, n := range delivered {
		res.Receipts += n
	}
	res.IngestRate = float64(res.Receipts) / res.IngestWall.Seconds()
	if failed == nil && res.Receipts != per*cfg.Devices {
		failed = fmt.Errorf("%d of %d receipts delivered", res.Receipts, per*cfg.Devices)
	}
	return failed
}
