// Package notifybench measures the notifier throughput of issue 11
// (`outpost bench notify`, part of `outpost bench deliveries --notify`):
// code mails sent to a real SMTP server, first by the SMTP notifier alone
// (one SMTP session per message, Concurrency at once), then end to end
// through the outbox (deliveries created with their messages in one
// transaction, then Workers outbox workers, as several server processes
// would, claiming with leases, sending, marking sent and moving each
// delivery to notified) on the engine DSN names.
//
// The SMTP server is the caller's: for a fair figure one that accepts and
// drops, e.g. Debian's python3-aiosmtpd:
//
//	python3 -m aiosmtpd -n -l 127.0.0.1:2525 -c aiosmtpd.handlers.Sink
package notifybench

import (
	"context"
	"errors"
	"fmt"
	"github.com/outpost-auth/outpost/internal/codecheck"
	"github.com/outpost-auth/outpost/internal/cost"
	"github.com/outpost-auth/outpost/internal/courierproto"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/delivery"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/notify"
	"github.com/outpost-auth/outpost/internal/outbox"
	"github.com/outpost-auth/outpost/internal/store"
)

// Config is one run.
type Config struct {
	// SMTPAddr is the SMTP server (host:port) the mails go to.
	SMTPAddr string
	// Messages is how many mails each measurement sends.
	Messages int
	// Concurrency is how many SMTP sessions the notifier-alone row runs at once.
	Concurrency int
	// Workers is how many outbox workers share the outbox in the end-to-end row.
	Workers int
	// DSN is the store: "" for SQLite in a temporary directory, or a
	// postgres:// DSN (a scratch schema, dropped after).
	DSN string
}

// Row is one measurement.
type Row struct {
	Name     string        `json:"name"`
	Messages int           `json:"messages"`
	Parallel int           `json:"parallel"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	PerSec   float64       `json:"per_sec"`
	P50      time.Duration `json:"p50_ns,omitempty"`
	P99      time.Duration `json:"p99_ns,omitempty"`
}

// Report is a run's result.
type Report struct {
	GOMAXPROCS int    `json:"gomaxprocs"`
	Engine     string `json:"engine"`
	Rows       []Row  `json:"rows"`
}

// Run measures cfg, logging progress to log.
func Run(ctx context.Context, cfg Config, log io.Writer) (Report, error) {
	rep := Report{GOMAXPROCS: runtime.GOMAXPROCS(0)}
	if cfg.SMTPAddr == "" || cfg.Messages < 1 || cfg.Concurrency < 1 || cfg.Workers < 1 {
		return rep, errors.New("notifybench: needs an SMTP address and positive message, concurrency and worker counts")
	}
	smtp := &notify.SMTP{Addr: cfg.SMTPAddr, From: "bench@outpost.example", Timeout: 30 * time.Second}
	due := time.Now().Add(24 * time.Hour)

	// The notifier alone.
	fmt.Fprintf(log, "notifier: %d mails, %d sessions at once\n", cfg.Messages, cfg.Concurrency)
	lat := make([]time.Duration, cfg.Messages)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	start := time.Now()
	bench.Parallel(cfg.Concurrency, func(int) {
		for {
			i := int(next.Add(1)) - 1
			if i >= cfg.Messages || ctx.Err() != nil {
				return
			}
			t := time.Now()
			err := smtp.Notify(ctx, notify.Message{ID: fmt.Sprintf("bench-%d", i), Email: fmt.Sprintf("r%d@example.org", i),
				Delivery: fmt.Sprintf("parcel-%d", i), Code: "123456789", NotAfter: due, Time: t})
			lat[i] = time.Since(t)
			if err != nil {
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
				return
			}
		}
	})
	if firstErr != nil {
		return rep, firstErr
	}
	el := time.Since(start)
	p50, p99 := bench.Percentiles(lat)
	rep.Rows = append(rep.Rows, Row{Name: "SMTP notifier alone", Messages: cfg.Messages, Parallel: cfg.Concurrency,
		Elapsed: el, PerSec: float64(cfg.Messages) / el.Seconds(), P50: p50, P99: p99})

	// Through the outbox.
	st, done, err := bench.OpenStore(ctx, cfg.DSN, "outpost_bench_notify")
	if err != nil {
		return rep, err
	}
	defer done()
	rep.Engine = st.Engine()
	m, err := keys.GenerateMaster()
	if err != nil {
		return rep, err
	}
	if err := st.CreateRealm(ctx, store.Realm{ID: "bench", Name: "bench"}); err != nil {
		return rep, err
	}
	ds := &delivery.Service{Store: st.(store.DeliveryStore), Master: m}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	workers := make([]*outbox.Service, cfg.Workers)
	for i := range workers {
		workers[i] = &outbox.Service{Store: st.(store.OutboxStore), Deliveries: ds, Master: m, Log: quiet,
			Channels: notify.Channels{Email: smtp}, Owner: fmt.Sprintf("bench-%d", i), Policy: outbox.Policy{Batch: 16}}
	}
	ds.Outbox = workers[0]
	// The mode data at cheap argon2id costs: this measures the outbox, not
	// the hash mode (bench deliveries does).
	ds.Courier = &delivery.Courier{Costs: courierproto.Costs{Hash: codecheck.Params{Time: 1, MemoryKiB: 64, Threads: 1},
		Fingerprint: codecheck.Params{Time: 1, MemoryKiB: 64, Threads: 1}, Floor: &cost.Floor{PerEntry: time.Nanosecond}}}
	fmt.Fprintf(log, "outbox: creating %d deliveries on %s\n", cfg.Messages, st.Engine())
	for i := range cfg.Messages {
		if _, _, err := ds.Create(ctx, "bench", delivery.Request{ID: fmt.Sprintf("parcel-%d", i), Device: "van-1",
			Recipient: delivery.Recipient{Email: fmt.Sprintf("r%d@example.org", i)}, NotAfter: due, Mode: delivery.ModeHash}, "bench"); err != nil {
			return rep, err
		}
	}
	fmt.Fprintf(log, "outbox: sending with %d workers\n", cfg.Workers)
	var sent atomic.Int64
	start = time.Now()
	bench.Parallel(cfg.Workers, func(i int) {
		for ctx.Err() == nil {
			n, err := workers[i].RunOnce(ctx)
			if err != nil {
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
				return
			}
			if n == 0 {
				return
			}
			sent.Add(int64(n))
		}
	})
	if firstErr != nil {
		return rep, firstErr
	}
	el = time.Since(start)
	ms, err := st.(store.OutboxStore).ListOutbox(ctx, "bench", store.OutboxSent, "", store.MaxListLimit)
	if err != nil {
		return rep, err
	}
	if len(ms) < min(cfg.Messages, store.MaxListLimit) {
		return rep, fmt.Errorf("notifybench: %d of %d messages sent", len(ms), cfg.Messages)
	}
	rep.Rows = append(rep.Rows, Row{Name: "through the outbox (claim, send, mark, notified)", Messages: int(sent.Load()),
		Parallel: cfg.Workers, Elapsed: el, PerSec: float64(sent.Load()) / el.Seconds()})
	return rep, nil
}
