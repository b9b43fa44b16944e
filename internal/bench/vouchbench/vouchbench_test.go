package vouchbench

import (
	"context"
	"io"
	"os"
	"testing"

	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestRun runs a small benchmark on both engines: every vouch sent is in the roster.
func TestRun(t *testing.T) {
	dsns := map[string]string{"sqlite": ""}
	if dsn := os.Getenv(storetest.PostgresEnv); dsn != "" {
		dsns["postgres"] = dsn
	}
	for name, dsn := range dsns {
		t.Run(name, func(t *testing.T) {
			rows, err := Run(context.Background(), Config{DSN: dsn, Vouches: 40, Batch: 7, Devices: 2}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 2 || rows[1].Workload != "vouch" || rows[1].Stored != 40 || rows[0].Rate <= 0 || rows[1].Rate <= 0 {
				t.Fatalf("rows = %+v", rows)
			}
		})
	}
	if err := (Config{Vouches: 1, Devices: 2, Batch: 1}).Check(); err == nil {
		t.Error("fewer vouches than devices accepted")
	}
}
