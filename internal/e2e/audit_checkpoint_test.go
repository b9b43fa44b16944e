package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestAuditCheckpointsAnchorTheLog: 'outpost serve' exports signed
// checkpoints on its own, the admin CLI takes more, and once the tail of the
// audit table is rewritten (hashes recomputed, so the chain alone passes)
// 'audit verify --checkpoint' exits 5 and the restarted server refuses to
// sign over it.
func TestAuditCheckpointsAnchorTheLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cpDir := filepath.Join(dir, "audit-checkpoints")
	s := startServer(t, dir, "--plaintext", "--audit-checkpoint-every", "1s")
	waitForFile(t, cpDir)
	for i := range 3 {
		if err := s.client.Do(context.Background(), "POST", "/v1/users", map[string]string{"id": fmt.Sprintf("cp%d", i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"OUTPOST_SERVER=" + s.url, "OUTPOST_PASSPHRASE=" + passphrase}
	auth := []string{"--token-file", filepath.Join(dir, "admin.token")}
	out := t.TempDir()
	taken, latest := filepath.Join(out, "taken.json"), filepath.Join(out, "latest.json")
	for _, args := range [][]string{{"--out", taken}, {"--latest", "--out", latest}} {
		if _, e, c := outpost(t, env, append(append([]string{"admin", "audit", "checkpoint"}, args...), auth...)...); c != 0 {
			t.Fatalf("admin audit checkpoint %v: exit %d %s", args, c, e)
		}
	}
	if _, _, c := outpost(t, env, append([]string{"admin", "audit", "checkpoint", "--out", taken}, auth...)...); c == 0 {
		t.Fatal("admin audit checkpoint overwrote its --out file")
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	verify := []string{"audit", "verify", "--data", dir, "--checkpoint", cpDir, "--checkpoint", taken, "--checkpoint", latest}
	if o, e, c := outpost(t, env, verify...); c != 0 || !strings.Contains(o, "checkpoint(s) hold") {
		t.Fatalf("audit verify --checkpoint: exit %d %s %s", c, o, e)
	}

	st := storetest.Open(t, filepath.Join(dir, "outpost.db"))
	storetest.RewriteAudit(t, filepath.Join(dir, "outpost.db"), st, 2, `{"forged":true}`)
	if _, e, c := outpost(t, env, "audit", "verify", "--data", dir); c != 0 {
		t.Fatalf("the plain chain check should pass a recomputed tail: exit %d %s", c, e)
	}
	if _, e, c := outpost(t, env, verify...); c != 5 || !strings.Contains(e, "contradicts checkpoint") {
		t.Fatalf("audit verify --checkpoint after the rewrite: exit %d %s", c, e)
	}

	s2 := startServer(t, dir, "--plaintext", "--audit-checkpoint-every", "1s")
	env[0] = "OUTPOST_SERVER=" + s2.url
	if _, e, c := outpost(t, env, append([]string{"admin", "audit", "checkpoint", "--out", filepath.Join(out, "forged.json")}, auth...)...); c != 5 || !strings.Contains(e, "audit_log_broken") {
		t.Fatalf("checkpoint over a rewritten log: exit %d %s", c, e)
	}
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(s2.logs.String(), "audit log does not match the last checkpoint"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted server did not report the rewrite:\n%s", s2.logs.String())
		}
	}
}

// waitForFile waits up to 30 s for a file to appear in dir.
func waitForFile(t *testing.T, dir string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
			return
		}
	}
	t.Fatalf("no checkpoint was exported to %s", dir)
}
