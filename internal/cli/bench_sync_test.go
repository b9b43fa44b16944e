package cli_test

import (
	"encoding/json"
	"testing"
)

// TestBenchSyncQuick runs 'outpost bench sync' small, on SQLite: every sync succeeds and the table's figures are there.
func TestBenchSyncQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	r := mustRun(t, nil, "bench", "sync", "--ingest-events", "400", "--batch", "100", "--ingest-devices", "2", "--devices", "20", "--events", "10",
		"--concurrency", "4", "--json")
	var rs []struct {
		Engine      string  `json:"engine"`
		IngestRate  float64 `json:"ingest_events_per_second"`
		Ed25519Rate float64 `json:"ed25519_verifies_per_second"`
		RoundWall   int64   `json:"round_wall_ns"`
		Errors      int     `json:"errors"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil || len(rs) != 1 {
		t.Fatalf("bench sync --json: %v\n%s", err, r)
	}
	if x := rs[0]; x.Engine != "sqlite" || x.IngestRate <= 0 || x.Ed25519Rate <= 0 || x.RoundWall <= 0 || x.Errors != 0 {
		t.Fatalf("results %+v", x)
	}
}
