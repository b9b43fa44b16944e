package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// exportAndPrune exports l's log (entries 1..13) to segments of 5 entries
// in a new directory with the data directory's key, prunes through 10, and
// returns the directory.
func exportAndPrune(t *testing.T, l anchoredLog) string {
	t.Helper()
	m, _, err := datadir.LoadMaster(l.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return checkpointTime }
	n := &auditcheck.Notary{Store: l.st, Signer: m.Signer(0), Now: now, Audit: &audit.Log{Store: l.st, Now: now}}
	a := &auditcheck.Archive{Notary: n, Dir: filepath.Join(t.TempDir(), "segments"), SegmentEntries: 5}
	ctx := context.Background()
	if _, err := a.Export(ctx, "admin", 0); err != nil {
		t.Fatal(err)
	}
	if pr, err := a.Prune(ctx, "admin", auditcheck.PruneLimit{Before: 11}); err != nil || pr.Through != 10 {
		t.Fatalf("prune: %+v %v", pr, err)
	}
	return a.Dir
}

// TestAuditVerifySegments: 'audit verify --segments' passes exported and
// pruned segments linked to the database (with and without it), and exits 5
// naming the file and seq for an altered or missing segment.
func TestAuditVerifySegments(t *testing.T) {
	l := newAnchoredLog(t, "")
	seg := exportAndPrune(t, l)
	withDB := []string{"audit", "verify", "--data", l.dir, "--server-key", l.pub, "--segments", seg, "--parallel", "2"}
	r := mustRun(t, nil, withDB...)
	if !strings.Contains(r.stdout, "audit segments intact: 3 segments, entries 1..13") || !strings.Contains(r.stdout, "chains on from them") ||
		!strings.Contains(r.stdout, "entries 1..10 were pruned") {
		t.Fatalf("verify --segments: %s", r)
	}
	r = mustRun(t, nil, "audit", "verify", "--server-key", l.pub, "--segments", seg, "--checkpoint", l.checkpoint)
	if !strings.Contains(r.stdout, "no database given, 1 checkpoint(s) matched") {
		t.Fatalf("verify --segments alone: %s", r)
	}
	expectCode(t, cli.ExitUsage, nil, "audit", "verify", "--segments", seg) // no key

	name := auditcheck.SegmentName(6, 10)
	b := readFile(t, filepath.Join(seg, name))
	b[10] ^= 1
	writeFile(t, seg, name, string(b))
	r = expectCode(t, cli.ExitTampered, nil, withDB...)
	if !strings.Contains(r.stderr, "audit segments broken at entry 6, in "+name) {
		t.Fatalf("altered segment: %s", r)
	}
	if err := os.Remove(filepath.Join(seg, name)); err != nil {
		t.Fatal(err)
	}
	r = expectCode(t, cli.ExitTampered, nil, withDB...)
	if !strings.Contains(r.stderr, "broken at entry 6") || !strings.Contains(r.stderr, "missing") {
		t.Fatalf("missing segment: %s", r)
	}
}

// TestAuditVerifyIncremental: with a checkpoint, 'audit verify' reads the
// checkpoint's entry and the ones after it; --full reads them all.
func TestAuditVerifyIncremental(t *testing.T) {
	l := newAnchoredLog(t, "")
	base := []string{"audit", "verify", "--data", l.dir, "--server-key", l.pub, "--checkpoint", l.checkpoint, "--json"}
	if r := mustRun(t, nil, base...); !strings.Contains(r.stdout, `"read": 4`) || !strings.Contains(r.stdout, `"entries": 13`) {
		t.Fatalf("incremental: %s", r)
	}
	if r := mustRun(t, nil, append(base, "--full")...); !strings.Contains(r.stdout, `"read": 13`) {
		t.Fatalf("--full: %s", r)
	}
	// An entry altered after the checkpoint is read, and breaks the chain.
	if _, err := storetest.RawDB(t, l.dsn).Exec(`UPDATE audit_log SET subject = 'forged' WHERE seq = 12`); err != nil {
		t.Fatal(err)
	}
	if r := expectCode(t, cli.ExitTampered, nil, base...); !strings.Contains(r.stderr, "broken at entry 12") {
		t.Fatalf("altered after the checkpoint: %s", r)
	}
}

// TestServeRetentionFlags: a retention without a segment directory, or
// that cannot be read, is a usage error before anything is initialised.
func TestServeRetentionFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--audit-retain", "30d"},
		{"--audit-retain", "soon", "--audit-segment-dir", "x"},
		{"--audit-retain", "30d", "--audit-segment-dir", "x", "--audit-retain-every", "1s"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		r := expectCode(t, cli.ExitUsage, nil, append([]string{"serve", "--data", dir, "--dev-insecure-unsealed", "--plaintext", "--listen", "127.0.0.1:0"}, args...)...)
		if !strings.Contains(r.stderr, "--audit-retain") {
			t.Fatalf("%v: the error does not name the flag: %s", args, r)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Fatalf("%v: the data directory was initialised anyway", args)
		}
	}
	expectCode(t, cli.ExitUsage, nil, "audit", "prune", "--server", "http://127.0.0.1:1", "--token-file", "x")
	expectCode(t, cli.ExitUsage, nil, "audit", "prune", "--older-than", "3 weeks", "--server", "http://127.0.0.1:1", "--token-file", "x")
}

// TestBundleShareFlag: a --bundle-share outside [0.01, 1] is a usage error of
// serve and worker, before anything is initialised, that says what to give.
func TestBundleShareFlag(t *testing.T) {
	for _, cmd := range [][]string{
		{"serve", "--dev-insecure-unsealed", "--plaintext", "--listen", "127.0.0.1:0"},
		{"worker"},
	} {
		for _, share := range []string{"0", "0.001", "-0.5", "1.01", "NaN"} {
			dir := filepath.Join(t.TempDir(), "data")
			r := expectCode(t, cli.ExitUsage, nil, append(append([]string{}, cmd...), "--data", dir, "--bundle-share", share)...)
			if !strings.Contains(r.stderr, "--bundle-share") || !strings.Contains(r.stderr, "from 0.01 to 1") {
				t.Errorf("%s --bundle-share %s: %s", cmd[0], share, r)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("%s --bundle-share %s: the data directory was initialised anyway", cmd[0], share)
			}
		}
	}
}
