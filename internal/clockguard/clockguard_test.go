package clockguard

import (
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	mark := time.Date(2031, 5, 1, 12, 0, 0, 0, time.UTC)
	tol := 5 * time.Minute
	tests := []struct {
		name string
		now  time.Time
		next time.Time
		ok   bool
	}{
		{"later: raises the mark", mark.Add(time.Hour), mark.Add(time.Hour), true},
		{"at the mark", mark, mark, true},
		{"behind, within tolerance: kept", mark.Add(-tol + time.Second), mark, true},
		{"exactly the tolerance behind", mark.Add(-tol), mark, true},
		{"set back beyond tolerance", mark.Add(-tol - time.Microsecond), mark, false},
		{"set back a year", mark.AddDate(-1, 0, 0), mark, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next, ok := Check(tc.now, mark, tol)
			if ok != tc.ok || !next.Equal(tc.next) {
				t.Errorf("Check = %v, %v; want %v, %v", next, ok, tc.next, tc.ok)
			}
		})
	}
	if _, ok := Check(mark.Add(-time.Nanosecond), mark, 0); ok {
		t.Error("zero tolerance accepted a clock behind the mark")
	}
}

func TestWindow(t *testing.T) {
	nb := time.Date(2031, 5, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(24 * time.Hour)
	skew := 5 * time.Minute
	tests := []struct {
		name string
		now  time.Time
		want Position
	}{
		{"inside", nb.Add(time.Hour), Within},
		{"at not-before", nb, Within},
		{"at not-after", na, Within},
		{"early within skew", nb.Add(-skew), Within},
		{"late within skew", na.Add(skew), Within},
		{"too early", nb.Add(-skew - time.Nanosecond), Before},
		{"too late", na.Add(skew + time.Nanosecond), After},
	}
	for _, tc := range tests {
		if got := Window(tc.now, nb, na, skew); got != tc.want {
			t.Errorf("%s: Window = %d, want %d", tc.name, got, tc.want)
		}
	}
}
