package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Group commit. A durable commit costs an fsync (about 0.2 to 0.4 ms on the
// project's machines), and the two things Outpost must write one at a time,
// SQLite transactions and audit-log appends, would otherwise pay it once per
// request. A committer lets one goroutine take every request queued while
// the previous batch was committing and handle them together: one
// transaction, one fsync, each caller answered after the commit. Under load
// it turns a queue into a batch. With one request in flight there is
// nothing to batch, and the caller applies its request itself when no batch
// is being applied, none is queued and the last batch held one request
// (the load is light): no hand-over to the committer's goroutine and back
// (two wake-ups, tens of microseconds on a small machine) for a batch of
// one. Under load the queue decides: a caller applying alone would commit
// one request while the others wait, halving what a commit carries.

// errClosed is returned for requests made after Close.
var errClosed = errors.New("store: closed")

// maxBatch bounds how many requests one batch takes.
const maxBatch = 256

type pending[T any] struct {
	ctx  context.Context
	req  T
	err  error
	done chan struct{}
}

type committer[T any] struct {
	// applying is held by whoever applies a batch: the loop, or a caller
	// applying its own request alone (do).
	applying sync.Mutex
	// light is set while the loop's last batch held one request.
	light   atomic.Bool
	queue   chan *pending[T]
	stop    chan struct{}
	stopped sync.WaitGroup
	once    sync.Once
	// apply handles a batch, setting err on each request that failed.
	apply func(batch []*pending[T])
}

func newCommitter[T any](apply func(batch []*pending[T])) *committer[T] {
	c := &committer[T]{queue: make(chan *pending[T], maxBatch), stop: make(chan struct{}), apply: apply}
	c.light.Store(true)
	c.stopped.Go(c.loop)
	return c
}

// do queues req and waits for its batch to be applied. If ctx ends first it
// returns ctx.Err(), and the request may still be applied: callers treat that
// like any write whose answer was lost.
func (c *committer[T]) do(ctx context.Context, req T) error {
	p := &pending[T]{ctx: ctx, req: req, done: make(chan struct{})}
	if c.light.Load() && c.applying.TryLock() {
		alone := len(c.queue) == 0
		select {
		case <-c.stop:
			alone = false
		default:
		}
		if alone {
			defer c.applying.Unlock() // also when apply panics: the next write must not wait for ever
			c.apply([]*pending[T]{p})
			return p.err
		}
		c.applying.Unlock()
	}
	select {
	case c.queue <- p:
	case <-c.stop:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.stop: // queued after the last drain: let the loop finish, then look
		c.stopped.Wait()
		select {
		case <-p.done:
			return p.err
		default:
			return errClosed
		}
	}
}

func (c *committer[T]) loop() {
	batch := make([]*pending[T], 0, maxBatch)
	for {
		select {
		case <-c.stop:
			c.drain()
			return
		case p := <-c.queue:
			batch = append(batch[:0], p)
		}
		c.applying.Lock() // after a caller applying alone, if one is
	more:
		for len(batch) < maxBatch {
			select {
			case p := <-c.queue:
				batch = append(batch, p)
			default:
				break more
			}
		}
		live := make([]*pending[T], 0, len(batch))
		for _, p := range batch {
			if err := p.ctx.Err(); err != nil {
				p.err = err
				close(p.done)
			} else {
				live = append(live, p)
			}
		}
		if len(live) > 0 {
			c.apply(live)
		}
		c.light.Store(len(batch) == 1)
		c.applying.Unlock()
		for _, p := range live {
			close(p.done)
		}
	}
}

// drain fails what is still queued when the committer stops.
func (c *committer[T]) drain() {
	for {
		select {
		case p := <-c.queue:
			p.err = errClosed
			close(p.done)
		default:
			return
		}
	}
}

// close stops the committer after the batch in progress; later requests fail.
func (c *committer[T]) close() {
	c.once.Do(func() { close(c.stop) })
	c.stopped.Wait()
}
