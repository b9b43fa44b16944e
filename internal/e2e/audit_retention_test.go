package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAuditExportPruneVerify: the admin CLI refuses to prune what is not
// exported, exports (copying the files off the host with --to); the server is killed (SIGKILL) between export and
// prune and loses nothing; restarted, it prunes from the files; offline,
// 'audit verify --segments' passes, and exits 5 on an altered segment.
func TestAuditExportPruneVerify(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	seg := filepath.Join(t.TempDir(), "segments")
	s := startServer(t, dir, "--plaintext", "--audit-segment-dir", seg)
	for i := range 3 {
		if err := s.client.Do(context.Background(), "POST", "/v1/users", map[string]string{"id": fmt.Sprintf("ret%d", i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"OUTPOST_SERVER=" + s.url}
	auth := []string{"--token-file", filepath.Join(dir, "admin.token")}
	if _, e, c := outpost(t, env, append([]string{"audit", "prune", "--before", "1000"}, auth...)...); c != 1 || !strings.Contains(e, "not_exported") {
		t.Fatalf("prune before export: exit %d %s", c, e)
	}
	offHost := filepath.Join(t.TempDir(), "copies")
	if o, e, c := outpost(t, env, append([]string{"audit", "export", "--to", offHost}, auth...)...); c != 0 || !strings.Contains(o, "Exported entries 1..") {
		t.Fatalf("export: exit %d %s %s", c, o, e)
	}
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.done

	s2 := startServer(t, dir, "--plaintext", "--audit-segment-dir", seg)
	env[0] = "OUTPOST_SERVER=" + s2.url
	if o, e, c := outpost(t, env, append([]string{"audit", "prune", "--before", "1000"}, auth...)...); c != 0 || !strings.Contains(o, "Pruned entries 1..") {
		t.Fatalf("prune after the kill: exit %d %s %s", c, o, e)
	}
	if err := s2.stop(); err != nil {
		t.Fatal(err)
	}
	env = []string{"OUTPOST_PASSPHRASE=" + passphrase}
	verify := []string{"audit", "verify", "--data", dir, "--segments", seg}
	if o, e, c := outpost(t, env, verify...); c != 0 || !strings.Contains(o, "audit segments intact") || !strings.Contains(o, "were pruned") {
		t.Fatalf("verify --segments: exit %d %s %s", c, o, e)
	}
	// The copies taken with --to verify on their own, and against the database.
	if o, e, c := outpost(t, env, "audit", "verify", "--data", dir, "--segments", offHost); c != 0 || !strings.Contains(o, "audit segments intact") {
		t.Fatalf("verify --segments of the copies: exit %d %s %s", c, o, e)
	}
	ents, err := os.ReadDir(seg)
	if err != nil || len(ents) == 0 {
		t.Fatalf("segment directory: %v", err)
	}
	for _, d := range ents {
		if strings.HasSuffix(d.Name(), ".jsonl") {
			path := filepath.Join(seg, d.Name())
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[20] ^= 1
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if _, e, c := outpost(t, env, verify...); c != 5 || !strings.Contains(e, "audit segments broken at entry 1") {
		t.Fatalf("verify --segments after altering a segment: exit %d %s", c, e)
	}
}

// TestServeAuditRetain: 'outpost serve --audit-retain' exports and prunes
// the entries older than the retention that an earlier run's checkpoint
// covers, on its own.
func TestServeAuditRetain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	seg := filepath.Join(t.TempDir(), "segments")
	s := startServer(t, dir, "--plaintext") // its scheduled checkpoint covers the entries of its start
	waitForFile(t, filepath.Join(dir, "audit-checkpoints"))
	if err := s.stop(); err != nil {
		t.Fatalf("%v\n%s", err, s.logs.String())
	}
	time.Sleep(1100 * time.Millisecond) // a real server's clock: let the entries age past the retention
	s2 := startServer(t, dir, "--plaintext", "--audit-segment-dir", seg, "--audit-retain", "1s")
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(s2.logs.String(), `"msg":"audit retention"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server applied no retention:\n%s", s2.logs.String())
		}
	}
	if err := s2.stop(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(seg, "audit-segment-*.jsonl"))
	if len(segs) == 0 {
		t.Fatal("no segment written")
	}
	env := []string{"OUTPOST_PASSPHRASE=" + passphrase}
	if o, e, c := outpost(t, env, "audit", "verify", "--data", dir, "--segments", seg, "--checkpoint", filepath.Join(dir, "audit-checkpoints")); c != 0 || !strings.Contains(o, "chains on from them") {
		// With --segments, verify checks the pruned entries in the segments
		// and that the database's first entry chains on from them.
		t.Fatalf("verify after retention: exit %d %s %s", c, o, e)
	}
}
