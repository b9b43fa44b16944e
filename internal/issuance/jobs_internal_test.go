package issuance

import (
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/workpool"
	"github.com/outpost-auth/outpost/otp"
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

// TestEstimateScalesWithShare: a bundle's estimate (what SyncLimit, the
// answer's deadline and estimated_seconds follow) grows by 1/share.
func TestEstimateScalesWithShare(t *testing.T) {
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	req := bundle.Request{Realm: "r", User: "u", TokenID: "tok", Device: "dev-1", Secret: make([]byte, 20), Now: now, Override: true,
		Params: otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}, From: now, Until: now.Add(100 * 30 * time.Second)}
	estimate := func(share float64) time.Duration {
		s := &Service{Pool: workpool.New(workpool.Config{Workers: 1, Share: share})}
		defer s.Pool.Close()
		d, _ := s.estimate(req)
		return d
	}
	full, quarter := estimate(1), estimate(0.25)
	if full <= 0 || (quarter-4*full).Abs() > time.Millisecond {
		t.Fatalf("estimate %v at the whole time, %v at a quarter; want 4 times as long", full, quarter)
	}
}
