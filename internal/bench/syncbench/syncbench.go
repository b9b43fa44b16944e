// Package syncbench measures sync on one store ('outpost bench sync'):
//
//   - ingest: device log entries recorded per second by the server's sync
//     path (fieldsync.Service.Receive: signature and chain checks, one
//     transaction per upload with every event audited, state applied), in
//     uploads of Config.Batch entries from several devices at once, next to
//     the machine's Ed25519 verification rate measured in the same run (each
//     entry's signature must be checked, so that rate bounds ingestion);
//   - round: the wall time of a full sync round for Config.Devices devices
//     with Config.Events new entries each over loopback HTTP: each device
//     signs its upload, POSTs it to /v1/sync, and checks and decodes the
//     signed answer, Config.Concurrency devices at a time.
//
// Device logs are generated before timing, as a field device would have
// written them: hash-chained and signed entry by entry with the device's
// own key, an "import" of an HOTP bundle and then attempts and acceptances
// of increasing counters, with the token state matching them.
package syncbench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

// Config of one run.
type Config struct {
	// DSN of the store; empty uses a SQLite file in a temporary directory.
	// A PostgreSQL DSN gets a scratch schema, dropped afterwards.
	DSN string
	// IngestEvents entries in uploads of Batch, from IngestDevices devices at once.
	IngestEvents  int
	Batch         int
	IngestDevices int
	// Devices × Events for the full round, Concurrency devices at a time.
	Devices     int
	Events      int
	Concurrency int
}

// Defaults: the figures.
var Defaults = Config{IngestEvents: 40000, Batch: 5000, IngestDevices: 4, Devices: 1000, Events: 50, Concurrency: 16}

// Result of one run.
type Result struct {
	Engine string `json:"engine"`
	// Ingest.
	IngestEvents  int           `json:"ingest_events"`
	IngestBatch   int           `json:"ingest_batch"`
	IngestWall    time.Duration `json:"ingest_wall_ns"`
	IngestRate    float64       `json:"ingest_events_per_second"`
	Ed25519Rate   float64       `json:"ed25519_verifies_per_second"`
	SmallBatch    int           `json:"small_batch"`
	SmallRate     float64       `json:"small_batch_events_per_second"`
	RoundDevices  int           `json:"round_devices"`
	RoundEvents   int           `json:"round_events_per_device"`
	RoundWall     time.Duration `json:"round_wall_ns"`
	RoundP50      time.Duration `json:"round_sync_p50_ns"`
	RoundP99      time.Duration `json:"round_sync_p99_ns"`
	RoundRate     float64       `json:"round_events_per_second"`
	AuditEntries  uint64        `json:"audit_entries"`
	Errors        int           `json:"errors"`
	FirstError    string        `json:"first_error,omitempty"`
	GoMaxProcs    int           `json:"gomaxprocs"`
	IngestDevices int           `json:"ingest_devices"`
}

// Run measures one store.
func Run(ctx context.Context, cfg Config, progress io.Writer) (Result, error) {
	st, done, err := bench.OpenStore(ctx, cfg.DSN, "outpost_bench_sync")
	if err != nil {
		return Result{}, err
	}
	defer done()
	r := &runner{cfg: cfg, st: st, ss: st.(store.SyncStore), res: Result{Engine: st.Engine(), GoMaxProcs: runtime.GOMAXPROCS(0)}, progress: progress}
	m, err := keys.GenerateMaster()
	if err != nil {
		return r.res, err
	}
	r.srv, err = server.New(server.Config{Store: st, Master: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return r.res, err
	}
	if _, err := r.srv.Bootstrap(ctx); err != nil {
		return r.res, err
	}
	r.svc = &fieldsync.Service{Store: st, Sync: r.ss, Audit: &audit.Log{Store: st}, Signer: r.srv.Signer()}
	for _, step := range []func(context.Context) error{r.ingest, r.smallBatches, r.round} {
		if err := step(ctx); err != nil {
			return r.res, err
		}
	}
	if last, err := r.ss.FindAudit(ctx, fieldsync.KindSyncApply, "", 0, 1); err == nil && len(last) > 0 {
		r.res.AuditEntries = last[0].Seq // the newest sync's entry: about the audit log's length
	}
	return r.res, nil
}

// runner holds one run's store, server and sync service, and its result.
type runner struct {
	cfg      Config
	st       store.Store
	ss       store.SyncStore
	srv      *server.Server
	svc      *fieldsync.Service
	progress io.Writer

	mu  sync.Mutex // guards res.Errors and res.FirstError while syncs run
	res Result
}

func (r *runner) say(format string, a ...any) {
	fmt.Fprintf(r.progress, "[%s] "+format+"\n", append([]any{r.res.Engine}, a...)...)
}

// fail counts a failed sync, keeping the first error.
func (r *runner) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Errors++
	if r.res.FirstError == "" {
		r.res.FirstError = err.Error()
	}
}

// prepare makes n devices named prefix-… whose logs hold per entries each,
// cut into uploads of batch entries.
func (r *runner) prepare(ctx context.Context, prefix string, n, per, batch int) ([][][]byte, error) {
	ds, err := newDevices(ctx, r.st, r.ss, prefix, n)
	if err != nil {
		return nil, err
	}
	uploads := make([][][]byte, len(ds))
	bench.Parallel(len(ds), func(i int) {
		ds[i].write(per)
		for from := 0; from < per; from += batch {
			uploads[i] = append(uploads[i], ds[i].upload(from, min(per, from+batch)))
		}
	})
	return uploads, nil
}

// receive gives each device's uploads, in order, to the server's sync path,
// the devices at once, and returns the wall time.
func (r *runner) receive(ctx context.Context, uploads [][][]byte) time.Duration {
	start := time.Now()
	bench.Parallel(len(uploads), func(i int) {
		for _, up := range uploads[i] {
			if _, err := r.svc.Receive(ctx, up, "bench"); err != nil {
				r.fail(err)
				return
			}
		}
	})
	return time.Since(start)
}

// ingest: big uploads from a few devices at once, next to the machine's
// Ed25519 verification rate.
func (r *runner) ingest(ctx context.Context) error {
	cfg := r.cfg
	per := cfg.IngestEvents / cfg.IngestDevices
	r.say("preparing %d devices with %d log entries each", cfg.IngestDevices, per)
	uploads, err := r.prepare(ctx, "ingest", cfg.IngestDevices, per, cfg.Batch)
	if err != nil {
		return err
	}
	r.res.Ed25519Rate = ed25519Rate(300 * time.Millisecond)
	r.say("ingesting %d entries in uploads of %d", per*len(uploads), cfg.Batch)
	r.res.IngestWall = r.receive(ctx, uploads)
	r.res.IngestEvents, r.res.IngestBatch, r.res.IngestDevices = per*len(uploads), cfg.Batch, len(uploads)
	r.res.IngestRate = float64(r.res.IngestEvents) / r.res.IngestWall.Seconds()
	return nil
}

// smallBatches: the same with uploads of the round's size, for comparison.
func (r *runner) smallBatches(ctx context.Context) error {
	cfg := r.cfg
	per := min(cfg.IngestEvents/cfg.IngestDevices, 20*cfg.Events)
	uploads, err := r.prepare(ctx, "small", cfg.IngestDevices, per, cfg.Events)
	if err != nil {
		return err
	}
	wall := r.receive(ctx, uploads)
	r.res.SmallBatch = cfg.Events
	r.res.SmallRate = float64(per*len(uploads)) / wall.Seconds()
	return nil
}

// round: a full sync round of cfg.Devices devices over HTTP.
func (r *runner) round(ctx context.Context) error {
	cfg := r.cfg
	r.say("preparing %d devices with %d log entries each", cfg.Devices, cfg.Events)
	round, err := newDevices(ctx, r.st, r.ss, "dev", cfg.Devices)
	if err != nil {
		return err
	}
	procs := runtime.GOMAXPROCS(0)
	bench.Parallel(procs, func(w int) {
		for i := w; i < len(round); i += procs {
			round[i].write(cfg.Events)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: r.srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency}, Timeout: 2 * time.Minute}
	r.say("syncing %d devices, %d at a time, over HTTP", cfg.Devices, cfg.Concurrency)
	lat := make([]time.Duration, len(round))
	next := make(chan int, len(round))
	for i := range round {
		next <- i
	}
	close(next)
	start := time.Now()
	bench.Parallel(cfg.Concurrency, func(int) {
		for i := range next {
			t0 := time.Now()
			if err := round[i].roundTrip(ctx, client, base, r.srv.Signer().Public, cfg.Events); err != nil {
				r.fail(err)
			}
			lat[i] = time.Since(t0)
		}
	})
	r.res.RoundWall = time.Since(start)
	r.res.RoundDevices, r.res.RoundEvents = cfg.Devices, cfg.Events
	r.res.RoundRate = float64(cfg.Devices*cfg.Events) / r.res.RoundWall.Seconds()
	r.res.RoundP50, r.res.RoundP99 = bench.Percentiles(lat)
	return nil
}

// device is a synthetic field device: a key, one HOTP token, and its log.
type device struct {
	id    string
	priv  ed25519.PrivateKey
	pub   ed25519.PublicKey
	user  string
	token string
	log   []eventlog.Entry
	last  uint64 // highest counter accepted
}

// newDevices creates n users with an HOTP token each and registers n devices.
func newDevices(ctx context.Context, st store.Store, ss store.SyncStore, prefix string, n int) ([]*device, error) {
	ds := make([]*device, n)
	var mu sync.Mutex
	var first error
	bench.Parallel(min(n, 32), func(w int) {
		for i := w; i < n; i += min(n, 32) {
			d := &device{id: fmt.Sprintf("%s-%05d", prefix, i), user: fmt.Sprintf("%s-user-%05d", prefix, i), token: fmt.Sprintf("tok_%s%05d", prefix, i)}
			d.pub, d.priv, _ = ed25519.GenerateKey(rand.Reader)
			err := st.CreateUser(ctx, store.User{Realm: server.DefaultRealm, ID: d.user})
			if err == nil {
				err = st.CreateToken(ctx, store.Token{Realm: server.DefaultRealm, UserID: d.user, ID: d.token, Type: "hotp", Algorithm: "SHA1",
					Digits: 6, SeedMode: store.SeedDerived, Status: store.TokenActive})
			}
			if err == nil {
				err = ss.CreateDevice(ctx, store.Device{Realm: server.DefaultRealm, ID: d.id, Status: store.DeviceActive, PublicKey: d.pub, KeyID: keys.KeyID(d.pub)})
			}
			if err == nil { // the bundle the device's log imports, as the server records issuing it
				err = ss.PutIssuedBundle(ctx, store.IssuedBundle{Realm: server.DefaultRealm, Device: d.id, UserID: d.user, TokenID: d.token, Serial: 1,
					Type: "hotp", First: 1, Last: 1 << 20, NotAfter: time.Now().Add(24 * time.Hour), IssuedAt: time.Now()})
			}
			mu.Lock()
			if err != nil && first == nil {
				first = err
			}
			ds[i] = d
			mu.Unlock()
		}
	})
	return ds, first
}

// write appends n entries to the device's log: an import first, then an
// attempt and an acceptance per counter.
func (d *device) write(n int) {
	now := time.Now()
	for range n {
		var prev *eventlog.Entry
		if len(d.log) > 0 {
			prev = &d.log[len(d.log)-1]
		}
		var kind string
		var data any
		switch {
		case len(d.log) == 0:
			kind, data = "import", map[string]any{"realm": server.DefaultRealm, "token": d.token, "serial": 1, "type": "hotp",
				"first": 1, "last": 1 << 20, "not_after": now.Add(24 * time.Hour)}
		case len(d.log)%2 == 1:
			kind, data = "verify.attempt", map[string]any{"realm": server.DefaultRealm, "token": d.token, "serial": 1, "from": d.last + 1, "to": d.last + 5}
		default:
			d.last++
			kind, data = "verify.ok", map[string]any{"realm": server.DefaultRealm, "token": d.token, "serial": 1, "counter": d.last}
		}
		raw, _ := json.Marshal(data)
		e, err := eventlog.Next(prev, eventlog.Entry{Time: now, Kind: kind, Actor: d.id, Subject: d.user, Data: raw}, d.priv)
		if err != nil {
			panic(err) // the bench's own entries are always valid
		}
		d.log = append(d.log, e)
	}
}

// upload signs the upload of log entries [from, to).
func (d *device) upload(from, to int) []byte {
	last := int64(-1) // the highest counter accepted: the k-th acceptance is counter k
	for _, e := range d.log[:to] {
		if e.Kind == "verify.ok" {
			last = max(last, 0) + 1
		}
	}
	u := syncproto.Upload{Device: d.id, After: uint64(from), Entries: d.log[from:to], Head: uint64(to), HeadHash: d.log[to-1].Hash,
		Tokens: []syncproto.TokenState{{Realm: server.DefaultRealm, User: d.user, Token: d.token, LastUsed: last,
			Type: "hotp", Serial: 1, First: 1, Last: 1 << 20, Remaining: 1000}}}
	now := time.Now()
	data, err := artifact.Sign(&keys.Signer{Private: d.priv, Public: d.pub, KeyID: keys.KeyID(d.pub)}, artifact.Header{Type: syncproto.UploadType,
		Version: syncproto.UploadVersion, Subject: d.id, Serial: uint64(to), IssuedAt: now, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, u)
	if err != nil {
		panic(err)
	}
	return data
}

// roundTrip is one device's sync: sign the upload, POST it, check and decode the answer.
func (d *device) roundTrip(ctx context.Context, c *http.Client, base string, server ed25519.PublicKey, n int) error {
	up := d.upload(0, n)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/sync", bytes.NewReader(up))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, syncproto.MaxResponseSize))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", d.id, resp.StatusCode, body)
	}
	_, raw, err := artifact.Verify(body, artifact.Keys{server}, artifact.Expect{Type: syncproto.ResponseType, Subject: d.id, Now: time.Now(), Skew: time.Minute})
	if err != nil {
		return err
	}
	r, err := syncproto.DecodeResponse(raw)
	if err != nil {
		return err
	}
	if r.Acked != uint64(n) {
		return fmt.Errorf("%s: acknowledged %d of %d entries", d.id, r.Acked, n)
	}
	return nil
}

// ed25519Rate measures Ed25519 verifications per second on all cores.
func ed25519Rate(d time.Duration) float64 {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 32)
	sig := ed25519.Sign(priv, msg)
	n := runtime.GOMAXPROCS(0)
	counts := make([]int, n)
	deadline := time.Now().Add(d)
	start := time.Now()
	bench.Parallel(n, func(w int) {
		for time.Now().Before(deadline) {
			for range 64 {
				ed25519.Verify(pub, msg, sig)
			}
			counts[w] += 64
		}
	})
	total := 0
	for _, c := range counts {
		total += c
	}
	return float64(total) / time.Since(start).Seconds()
}
