package clock

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestEvery: fn runs on each tick, not at once, and Every returns when ctx
// ends.
func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int32
	done := make(chan struct{})
	go func() { Every(ctx, time.Millisecond, func() { n.Add(1) }); close(done) }()
	for n.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after its context ended")
	}
	calls := n.Load()
	time.Sleep(5 * time.Millisecond)
	if n.Load() != calls {
		t.Error("fn ran after Every returned")
	}

	first := make(chan struct{}, 1)
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	Every(ctx2, time.Hour, func() { first <- struct{}{} })
	if len(first) != 0 {
		t.Error("fn ran before the first tick")
	}
}
