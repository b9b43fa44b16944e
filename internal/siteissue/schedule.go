package siteissue

import (
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/site"
)

// The epoch schedule. Epochs are EpochLength long and counted from Origin;
// an emergency roll ends the current epoch at once and restarts the count
// from the moment of the roll, with an epoch number higher than any ever
// handed out (so no key a stolen site or an issued credential held is ever
// used again). A fixed length (30 days) rather than calendar months keeps
// the arithmetic free of time zones and month lengths.
var (
	Origin      = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	EpochLength = 30 * 24 * time.Hour
)

// maxEpochsAhead bounds epoch arithmetic (200 years of 30-day epochs).
const maxEpochsAhead = 2400

// ErrSkipped: the epoch number was skipped by an emergency roll; it never had keys.
var ErrSkipped = errors.New("siteissue: epoch skipped by an emergency roll")

// segment is a run of regular epochs: epoch First+k starts at Start+k*EpochLength.
type segment struct {
	Start time.Time
	First uint32
}

// Schedule is a scope's epoch schedule: the origin segment and one segment
// per emergency roll, in time order.
type Schedule struct {
	segs []segment
}

func newSchedule() Schedule { return Schedule{segs: []segment{{Origin, 0}}} }

// Rolls returns the times of the emergency rolls.
func (s Schedule) Rolls() []time.Time {
	var out []time.Time
	for _, g := range s.segs[1:] {
		out = append(out, g.Start)
	}
	return out
}

// bounds returns epoch k of segment i, truncated by the next segment.
func (s Schedule) bounds(i int, k int64) site.Epoch {
	g := s.segs[i]
	start := g.Start.Add(time.Duration(k) * EpochLength)
	end := start.Add(EpochLength)
	if i+1 < len(s.segs) && s.segs[i+1].Start.Before(end) {
		end = s.segs[i+1].Start
	}
	return site.Epoch{N: g.First + uint32(k), Start: start, End: end}
}

// At returns the epoch in effect at t.
func (s Schedule) At(t time.Time) (site.Epoch, error) {
	if t.Before(s.segs[0].Start) {
		return site.Epoch{}, fmt.Errorf("siteissue: %s is before the epoch origin %s (check the clock)", t.Format(time.RFC3339), Origin.Format(time.RFC3339))
	}
	i := len(s.segs) - 1
	for s.segs[i].Start.After(t) {
		i--
	}
	k := int64(t.Sub(s.segs[i].Start) / EpochLength)
	if k > maxEpochsAhead || uint64(s.segs[i].First)+uint64(k) > 1<<32-1 {
		return site.Epoch{}, errors.New("siteissue: time is too far from the epoch origin")
	}
	return s.bounds(i, k), nil
}

// segmentOf returns the segment whose number range holds n.
func (s Schedule) segmentOf(n uint32) (int, int64, error) {
	i := len(s.segs) - 1
	for s.segs[i].First > n {
		i--
	}
	k := int64(n - s.segs[i].First)
	if k > maxEpochsAhead {
		return 0, 0, fmt.Errorf("siteissue: epoch %d is too far in the future", n)
	}
	return i, k, nil
}

// Epoch returns epoch n, or ErrSkipped if an emergency roll skipped it.
func (s Schedule) Epoch(n uint32) (site.Epoch, error) {
	i, k, err := s.segmentOf(n)
	if err != nil {
		return site.Epoch{}, err
	}
	e := s.bounds(i, k)
	if i+1 < len(s.segs) && !e.Start.Before(s.segs[i+1].Start) {
		return site.Epoch{}, fmt.Errorf("%w: epoch %d", ErrSkipped, n)
	}
	return e, nil
}

// plannedEnd is the end epoch n had before any later roll: the latest end
// any package or credential can ever have carried for it.
func (s Schedule) plannedEnd(n uint32) time.Time {
	i, k, err := s.segmentOf(n)
	if err != nil {
		return time.Unix(1<<40, 0) // far future: never prune
	}
	return s.segs[i].Start.Add(time.Duration(k+1) * EpochLength)
}

// roll returns the schedule with an emergency roll at t: a new epoch
// numbered above both the current epoch and maxIssued starts at t.
func (s Schedule) roll(t time.Time, maxIssued uint32) (Schedule, error) {
	cur, err := s.At(t)
	if err != nil {
		return s, err
	}
	if !t.After(s.segs[len(s.segs)-1].Start) {
		return s, fmt.Errorf("%w: the scope was rolled at this very moment already", ErrInvalid)
	}
	n := max(cur.N, maxIssued)
	if n >= 1<<32-1-maxEpochsAhead {
		return s, errors.New("siteissue: epoch numbers are exhausted")
	}
	segs := append(append([]segment(nil), s.segs...), segment{t, n + 1})
	return Schedule{segs: segs}, nil
}
