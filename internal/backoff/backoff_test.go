package backoff

import (
	"math"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	tests := []struct {
		base, max time.Duration
		n         int
		want      time.Duration
	}{
		{time.Second, 5 * time.Minute, 0, 0},
		{time.Second, 5 * time.Minute, -3, 0},
		{time.Second, 5 * time.Minute, 1, time.Second},
		{time.Second, 5 * time.Minute, 2, 2 * time.Second},
		{time.Second, 5 * time.Minute, 4, 8 * time.Second},
		{time.Second, 5 * time.Minute, 9, 256 * time.Second},
		{time.Second, 5 * time.Minute, 10, 5 * time.Minute},
		{time.Second, 5 * time.Minute, math.MaxInt, 5 * time.Minute},
		{0, 5 * time.Minute, 7, 0},
		{2 * time.Second, 15 * time.Minute, 3, 8 * time.Second},
		{time.Minute, time.Second, 1, time.Second}, // max below base: max
		{time.Duration(math.MaxInt64 / 2), time.Duration(math.MaxInt64), 5, time.Duration(math.MaxInt64)},
	}
	for _, tc := range tests {
		if got := Delay(tc.base, tc.max, tc.n); got != tc.want {
			t.Errorf("Delay(%v, %v, %d) = %v, want %v", tc.base, tc.max, tc.n, got, tc.want)
		}
	}
}
