package cli_test

import (
	"encoding/json"
	"testing"
)

// TestBenchOnboardingQuick runs 'outpost bench onboarding' small, on SQLite:
// vouch ingest, enrolments and both kinds of handshake in one run.
func TestBenchOnboardingQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	r := mustRun(t, []string{"OUTPOST_BENCH_POSTGRES_DSN="}, "bench", "onboarding", "--enrolments", "20", "--handshakes", "20", "--concurrency", "2",
		"--vouches", "20", "--batch", "5", "--devices", "2", "--json")
	var rs []struct {
		Engine     string  `json:"engine"`
		EnrolRate  float64 `json:"enrolments_per_second"`
		MutualRate float64 `json:"mutual_tls_handshakes_per_second"`
		OnlyRate   float64 `json:"server_tls_handshakes_per_second"`
		Errors     int     `json:"errors"`
		Vouch      []struct {
			Workload string  `json:"workload"`
			Rate     float64 `json:"entries_per_second"`
			Stored   int     `json:"stored"`
		} `json:"vouch_ingest"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil || len(rs) != 1 {
		t.Fatalf("bench onboarding --json: %v\n%s", err, r)
	}
	if x := rs[0]; x.Engine != "sqlite" || x.EnrolRate <= 0 || x.MutualRate <= 0 || x.OnlyRate <= 0 || x.Errors != 0 ||
		len(x.Vouch) != 2 || x.Vouch[1].Workload != "vouch" || x.Vouch[1].Stored != 20 || x.Vouch[1].Rate <= 0 {
		t.Fatalf("results %+v", x)
	}
}
