// Package workpool bounds the server's bundle work: argon2id entries of
// offline bundles and refills (internal/bundle, via internal/issuance) run
// through one [Pool], which holds at most Workers computations at once and
// at most MemoryKiB of argon2id memory between them, and admits at most
// Queue bundles (waiting or running) before it answers [ErrBusy].
//
//	p := workpool.New(workpool.Config{Workers: 1, MemoryKiB: 256 << 10, Queue: 8})
//	defer p.Close()
//	release, err := p.Admit()            // ErrBusy: the queue is full, retry later
//	defer release()
//	err = p.Do(ctx, 64<<10, func() { … one argon2id evaluation … })
//
// Priority: [Nice] lowers the priority of every thread of the calling
// process (Linux; unprivileged, since it only raises niceness). It is for a
// process that does nothing but bundle work (`outpost worker`): inside a
// server, Go moves goroutines between threads and x/crypto's argon2 runs each
// evaluation on a goroutine of its own, so a niced thread does not keep the
// work at low priority; there the bound on Workers is what leaves cores to
// verification (docs/BENCHMARKS.md, "Bundle work beside verification").
package workpool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-auth/outpost/internal/clock"
)

// ErrBusy: the pool's queue is full; retry later.
var ErrBusy = errors.New("workpool: bundle queue full")

// ErrClosed: the pool was closed.
var ErrClosed = errors.New("workpool: closed")

// DefaultQueue is the bundles admitted (waiting or running) when Config.Queue is 0.
const DefaultQueue = 8

// Config sizes a pool.
type Config struct {
	// Workers is the most computations at once (0: DefaultWorkers()).
	Workers int
	// MemoryKiB bounds the memory the running computations declare
	// together (0: no bound). A computation declaring more than the whole
	// budget runs alone.
	MemoryKiB int64
	// Queue is the most bundles admitted at once (0: DefaultQueue).
	Queue int
	// Share is the fraction of its time each worker computes, from
	// MinShare (smaller is taken as MinShare) to 1 (0: 1, all of it).
	// Below 1 a worker rests after each computation, for as long as the
	// computation took × (1−Share)/Share, before it takes the next: the
	// pool then uses about Workers × Share cores, and the memory bus and
	// caches about that share of the time. It is the knob for less than
	// one core of bundle work beside verification; bundles take 1/Share
	// as long.
	Share float64
	// Now measures computations for Share's rests (nil: the system clock).
	Now func() time.Time
}

// MinShare is the smallest Config.Share CheckShare accepts: at a hundredth
// of its time a worker already takes 100 times as long (and timeouts and
// leases scale with it).
const MinShare = 0.01

// CheckShare reports a Config.Share a caller should not pass: outside
// [MinShare, 1].
func CheckShare(share float64) error {
	if !(share >= MinShare && share <= 1) {
		return fmt.Errorf("workpool: share %v: give a fraction of each worker's time from %v to 1, such as 0.25", share, MinShare)
	}
	return nil
}

// DefaultWorkers is max(1, NumCPU/2): half the cores for bundle work, the
// rest for verification.
func DefaultWorkers() int { return max(1, runtime.NumCPU()/2) }

// Pool runs computations on a bounded number of goroutines. The zero value
// is not usable: call [New].
type Pool struct {
	cfg   Config
	tasks chan task
	admit chan struct{}
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup

	mu      sync.Mutex
	memFree *sync.Cond
	memUsed int64

	running, peak atomic.Int64
	peakMem       atomic.Int64
}

type task struct {
	fn   func()
	done chan struct{}
}

// New starts a pool of cfg.Workers goroutines.
func New(cfg Config) *Pool {
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers()
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	switch {
	case !(cfg.Share > 0 && cfg.Share < 1): // NaN, 0 or 1 and above: no rest
		cfg.Share = 1
	case cfg.Share < MinShare:
		cfg.Share = MinShare
	}
	cfg.Now = clock.Or(cfg.Now)
	p := &Pool{cfg: cfg, tasks: make(chan task), admit: make(chan struct{}, cfg.Queue), stop: make(chan struct{})}
	p.memFree = sync.NewCond(&p.mu)
	for range cfg.Workers {
		p.wg.Go(p.work)
	}
	return p
}

func (p *Pool) work() {
	for {
		select {
		case t := <-p.tasks:
			n := p.running.Add(1)
			for {
				old := p.peak.Load()
				if n <= old || p.peak.CompareAndSwap(old, n) {
					break
				}
			}
			start := p.cfg.Now()
			t.fn()
			took := p.cfg.Now().Sub(start)
			p.running.Add(-1)
			close(t.done)
			if !p.rest(took) {
				return
			}
		case <-p.stop:
			return
		}
	}
}

// Rest is how long a worker rests after a computation that took took, by
// Config.Share.
func (p *Pool) Rest(took time.Duration) time.Duration {
	if p.cfg.Share >= 1 || took <= 0 {
		return 0
	}
	return time.Duration(float64(took) * (1 - p.cfg.Share) / p.cfg.Share)
}

// rest waits Rest(took), and reports false when the pool closed meanwhile.
func (p *Pool) rest(took time.Duration) bool {
	d := p.Rest(took)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.stop:
		return false
	}
}

// Workers is the most computations the pool runs at once.
func (p *Pool) Workers() int { return p.cfg.Workers }

// Share is the fraction of its time each worker computes (Config.Share).
func (p *Pool) Share() float64 { return p.cfg.Share }

// Admit reserves a place for one bundle; call release when it is done. It
// returns ErrBusy at once when Config.Queue bundles are admitted.
func (p *Pool) Admit() (release func(), err error) {
	select {
	case p.admit <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-p.admit }) }, nil
	default:
		return nil, ErrBusy
	}
}

// Do runs fn on one of the pool's goroutines once a worker and memKiB of
// the memory budget are free, and waits for it. It returns ctx's error
// without running fn when ctx ends first, and ErrClosed after Close.
func (p *Pool) Do(ctx context.Context, memKiB int64, fn func()) error {
	if p.cfg.MemoryKiB > 0 {
		memKiB = min(memKiB, p.cfg.MemoryKiB)
		if err := p.takeMemory(ctx, memKiB); err != nil {
			return err
		}
		defer p.giveMemory(memKiB)
	}
	t := task{fn: fn, done: make(chan struct{})}
	select {
	case p.tasks <- t:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.stop:
		return ErrClosed
	}
	<-t.done
	return nil
}

func (p *Pool) takeMemory(ctx context.Context, kib int64) error {
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.memFree.Broadcast()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.memUsed+kib > p.cfg.MemoryKiB {
		if err := ctx.Err(); err != nil {
			return err
		}
		p.memFree.Wait()
	}
	p.memUsed += kib
	for {
		old := p.peakMem.Load()
		if p.memUsed <= old || p.peakMem.CompareAndSwap(old, p.memUsed) {
			break
		}
	}
	return nil
}

func (p *Pool) giveMemory(kib int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.memUsed -= kib
	p.memFree.Broadcast()
}

// Stats are a pool's counters.
type Stats struct {
	// Running computations now; Peak the most at once so far; PeakMemoryKiB
	// the most memory declared at once so far.
	Running, Peak, PeakMemoryKiB int64
	// Queued is the bundles admitted now.
	Queued int
}

// Stats returns the pool's counters.
func (p *Pool) Stats() Stats {
	return Stats{Running: p.running.Load(), Peak: p.peak.Load(), PeakMemoryKiB: p.peakMem.Load(), Queued: len(p.admit)}
}

// Close stops the workers once the computations running finish; Do waiting
// for a worker returns ErrClosed.
func (p *Pool) Close() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}
