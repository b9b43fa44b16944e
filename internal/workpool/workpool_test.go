package workpool

import (
	"context"
	"errors"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBounds: never more than Workers computations at once, never more
// memory declared at once than the budget, whatever the callers ask.
func TestBounds(t *testing.T) {
	for _, tc := range []struct {
		name              string
		workers           int
		memory, perTask   int64
		wantPeak, wantMem int64
	}{
		{"workers", 2, 0, 64, 2, 0},
		{"one worker", 1, 0, 64, 1, 0},
		{"memory binds", 4, 128, 64, 2, 128},
		{"task larger than budget runs alone", 3, 100, 500, 1, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Config{Workers: tc.workers, MemoryKiB: tc.memory})
			defer p.Close()
			var now, most atomic.Int64
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					err := p.Do(context.Background(), tc.perTask, func() {
						n := now.Add(1)
						for o := most.Load(); n > o && !most.CompareAndSwap(o, n); o = most.Load() {
						}
						time.Sleep(2 * time.Millisecond)
						now.Add(-1)
					})
					if err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			st := p.Stats()
			if most.Load() != tc.wantPeak || st.Peak != tc.wantPeak || st.PeakMemoryKiB != tc.wantMem {
				t.Fatalf("peak %d (stats %+v), want %d computations and %d KiB", most.Load(), st, tc.wantPeak, tc.wantMem)
			}
		})
	}
}

// TestQueueFull: Admit answers ErrBusy at once when Queue bundles are in,
// and admits again after a release.
func TestQueueFull(t *testing.T) {
	p := New(Config{Workers: 1, Queue: 2})
	defer p.Close()
	r1, err := p.Admit()
	if err != nil {
		t.Fatal(err)
	}
	r2, err := p.Admit()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Admit(); !errors.Is(err, ErrBusy) {
		t.Fatalf("third admit: %v, want ErrBusy", err)
	}
	r1()
	r1() // a second release gives nothing back twice
	if p.Stats().Queued != 1 {
		t.Fatalf("queued %d after one release", p.Stats().Queued)
	}
	r3, err := p.Admit()
	if err != nil {
		t.Fatal(err)
	}
	r2()
	r3()
}

// TestCancelWaiting: a computation waiting for a worker or for memory
// gives up when its context ends, without running.
func TestCancelWaiting(t *testing.T) {
	p := New(Config{Workers: 1, MemoryKiB: 10})
	defer p.Close()
	hold := make(chan struct{})
	started := make(chan struct{})
	go p.Do(context.Background(), 10, func() { close(started); <-hold })
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ran := false
	if err := p.Do(ctx, 10, func() { ran = true }); !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("waiting Do: %v, ran %v", err, ran)
	}
	close(hold)
}

// TestNice: the process's threads end at niceness ≥ n; and when the system
// refuses, Nice reports it and changes nothing (the caller carries on).
func TestNice(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("thread priority is Linux only")
	}
	t.Run("refused", func(t *testing.T) {
		saved := setpriority
		defer func() { setpriority = saved }()
		setpriority = func(int, int) error { return errors.New("EPERM") }
		if _, err := Nice(19); err == nil {
			t.Fatal("no error when every setpriority fails")
		}
		if n, _ := Niceness(0); n >= 19 {
			t.Fatalf("niceness %d after a refused Nice", n)
		}
	})
	t.Run("works unprivileged", func(t *testing.T) {
		// Run in a child thread set: a locked goroutine's thread, niced
		// alone, so the test process keeps its priority.
		done := make(chan error)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			before, err := Niceness(0)
			if err != nil {
				done <- err
				return
			}
			if _, err := niceThread(0, before+5); err != nil {
				done <- err
				return
			}
			after, err := Niceness(0)
			if err == nil && after != before+5 {
				err = errors.New("niceness unchanged")
			}
			done <- err
		}()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestShareRest: below Share 1 a worker rests took × (1−Share)/Share after
// each computation; Share 1, 0 or out of range means no rest.
func TestShareRest(t *testing.T) {
	for _, tc := range []struct {
		share float64
		took  time.Duration
		want  time.Duration
	}{
		{1, time.Second, 0},
		{0, time.Second, 0},
		{-0.5, time.Second, 0},
		{2, time.Second, 0},
		{math.NaN(), time.Second, 0},
		{0.5, 80 * time.Millisecond, 80 * time.Millisecond},
		{0.25, 80 * time.Millisecond, 240 * time.Millisecond},
		{0.1, 50 * time.Millisecond, 450 * time.Millisecond},
		{0.25, 0, 0},
		{1e-9, time.Millisecond, 99 * time.Millisecond}, // taken as MinShare
	} {
		p := New(Config{Workers: 1, Share: tc.share})
		got := p.Rest(tc.took)
		p.Close()
		if d := got - tc.want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("share %v, took %v: rest %v, want %v", tc.share, tc.took, got, tc.want)
		}
	}
}

// TestShareRests: the worker does rest between computations (measured on
// its clock, here one that says the first computation took 1 s), and Close
// does not wait out a rest.
func TestShareRests(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	took := func(d time.Duration) func() {
		return func() { mu.Lock(); now = now.Add(d); mu.Unlock() }
	}
	p := New(Config{Workers: 1, Share: 0.5, Now: clock})
	if err := p.Do(context.Background(), 0, took(time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.Do(context.Background(), 0, took(time.Hour)); err != nil { // then rests an hour
		t.Fatal(err)
	}
	// The rest began as the first Do returned, a little before start.
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Errorf("the second computation started %v after the first, want a rest of 1s", waited)
	}
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the worker's rest")
	}
}
