package siteissue

import (
	"errors"
	"testing"
	"time"
)

func day(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

func TestScheduleWithoutRolls(t *testing.T) {
	s := newSchedule()
	for _, tc := range []struct {
		at   time.Time
		want uint32
	}{
		{Origin, 0},
		{Origin.Add(day(30) - time.Nanosecond), 0},
		{Origin.Add(day(30)), 1},
		{time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC), 2},
		{Origin.Add(day(30 * 100)), 100},
	} {
		e, err := s.At(tc.at)
		if err != nil || e.N != tc.want {
			t.Fatalf("At(%v) = %v, %v; want epoch %d", tc.at, e, err, tc.want)
		}
		if e.Start.After(tc.at) || !e.End.After(tc.at) || e.End.Sub(e.Start) != EpochLength {
			t.Fatalf("At(%v) = %v does not contain it", tc.at, e)
		}
		byN, err := s.Epoch(e.N)
		if err != nil || byN != e {
			t.Fatalf("Epoch(%d) = %v, %v; At gave %v", e.N, byN, err, e)
		}
	}
	if _, err := s.At(Origin.Add(-time.Second)); err == nil {
		t.Fatal("a time before the origin has an epoch")
	}
	if _, err := s.Epoch(maxEpochsAhead + 1); err == nil {
		t.Fatal("an epoch 200 years ahead was accepted")
	}
}

func TestScheduleRolls(t *testing.T) {
	s := newSchedule()
	roll1 := Origin.Add(day(75)) // in epoch 2 (day 60..90)
	// Epoch 3 was already handed out (as the next epoch of a package).
	s, err := s.roll(roll1, 3)
	if err != nil {
		t.Fatal(err)
	}
	e2, _ := s.Epoch(2)
	if !e2.End.Equal(roll1) {
		t.Fatalf("epoch 2 not cut at the roll: %v", e2)
	}
	if _, err := s.Epoch(3); !errors.Is(err, ErrSkipped) {
		t.Fatalf("epoch 3 = %v, want ErrSkipped", err)
	}
	cur, _ := s.At(roll1)
	if cur.N != 4 || !cur.Start.Equal(roll1) || cur.End.Sub(cur.Start) != EpochLength {
		t.Fatalf("after the roll: %v", cur)
	}
	if e, _ := s.At(roll1.Add(-time.Second)); e.N != 2 {
		t.Fatalf("just before the roll: %v", e)
	}
	if e, _ := s.At(roll1.Add(day(31))); e.N != 5 || !e.Start.Equal(roll1.Add(day(30))) {
		t.Fatalf("a month after the roll: %v", e)
	}
	// A second roll, with a credential for epoch 9 handed out.
	roll2 := roll1.Add(day(40))
	s, err = s.roll(roll2, 9)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := s.At(roll2); e.N != 10 {
		t.Fatalf("after the second roll: %v", e)
	}
	for n := uint32(6); n <= 9; n++ {
		if _, err := s.Epoch(n); !errors.Is(err, ErrSkipped) {
			t.Fatalf("epoch %d: %v", n, err)
		}
	}
	if e, _ := s.Epoch(5); !e.End.Equal(roll2) {
		t.Fatalf("epoch 5: %v", e)
	}
	// plannedEnd is never earlier than any end an epoch was ever given.
	if pe := s.plannedEnd(3); !pe.Equal(Origin.Add(day(120))) {
		t.Fatalf("planned end of skipped epoch 3: %v", pe)
	}
	if pe := s.plannedEnd(5); !pe.Equal(roll1.Add(day(60))) {
		t.Fatalf("planned end of cut epoch 5: %v", pe)
	}
	if got := s.Rolls(); len(got) != 2 || !got[0].Equal(roll1) || !got[1].Equal(roll2) {
		t.Fatalf("rolls %v", got)
	}
	if _, err := s.roll(roll2, 0); err == nil {
		t.Fatal("two rolls at the same instant")
	}
}
