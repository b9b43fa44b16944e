// Package clock is where Outpost reads the wall clock, once.
//
// Every package that decides with time (validity windows, lockout delays,
// bundle periods, high-water marks, expiry) takes a clock — a
// func() time.Time — from its caller and never reads the wall clock itself,
// so that a test can pin time anywhere, years ahead included, and a server's
// decisions all follow one clock. The program's entry points (the commands in
// internal/cli) hand [System] down; a nil clock in a service means System,
// through [Or]:
//
//	type Service struct{ Now func() time.Time }
//	func (s *Service) now() time.Time { return clock.Or(s.Now)() }
//
// The test in this package (TestNoWallClock) parses every production file of
// the module and fails on time.Now, time.Since or time.Until outside a short
// allow-list of timings that decide nothing (log durations, metrics,
// benchmark stopwatches, network deadlines).
package clock

import (
	"context"
	"time"
)

// System reads the wall clock. It is the one place production code does so
// for a decision; everything else is handed a clock.
func System() time.Time { return time.Now() }

// Or returns now, or System when now is nil.
func Or(now func() time.Time) func() time.Time {
	if now == nil {
		return System
	}
	return now
}

// Every calls fn every d, the first time d from now, until ctx ends. Like
// Sleep it paces work and decides nothing: what is due is fn's clock's to
// say.
func Every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// Sleep waits d, or until ctx ends (returning its error). A wait decides
// nothing, so it runs on a timer rather than a clock: retries, backoff,
// polling.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
