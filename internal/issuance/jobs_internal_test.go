package issuance

import (
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/workpool"
)

// TestJobTimeoutScalesWithShare: a pool that computes a fraction of the
// time gets a job timeout that much longer, so that a bundle --bundle-share
// slows down is not cancelled for being slow.
func TestJobTimeoutScalesWithShare(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		share   float64 // 0: no pool
		want    time.Duration
	}{
		{"default, no pool", 0, 0, DefaultJobTimeout},
		{"set, no pool", time.Hour, 0, time.Hour},
		{"full share", time.Hour, 1, time.Hour},
		{"a quarter", time.Hour, 0.25, 4 * time.Hour},
		{"default, a tenth", 0, 0.1, 10 * DefaultJobTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Service{JobTimeout: tc.timeout}
			if tc.share > 0 {
				s.Pool = workpool.New(workpool.Config{Workers: 1, Share: tc.share})
				defer s.Pool.Close()
			}
			if got := s.jobTimeout(); got.Round(time.Millisecond) != tc.want {
				t.Errorf("job timeout %v, want %v", got, tc.want)
			}
		})
	}
}
