package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/datadir"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// checkpointTime is the fixture's clock: years ahead, never the wall clock.
var checkpointTime = time.Date(2031, 11, 23, 12, 0, 0, 0, time.UTC)

// anchoredLog is a data directory whose audit log has 13 entries and a
// checkpoint file of entry 10, signed with the directory's key.
type anchoredLog struct {
	dir, dsn, pub, checkpoint string
	st                        store.Store
}

func newAnchoredLog(t *testing.T, dsn string) anchoredLog {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	mustRun(t, nil, "init", "--data", dir, "--dev-insecure-unsealed")
	pub := filepath.Join(t.TempDir(), "server.pub")
	mustRun(t, nil, "keys", "export-public", "--data", dir, "--out", pub)
	if dsn == "" {
		dsn = filepath.Join(dir, datadir.DatabaseFile)
	}
	m, _, err := datadir.LoadMaster(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.Open(t, dsn)
	appendEntries(t, st, 10)
	n := &auditcheck.Notary{Store: st, Signer: m.Signer(0), Now: func() time.Time { return checkpointTime }}
	cp, err := n.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "checkpoint.json")
	if err := os.WriteFile(file, cp.Bytes, 0o600); err != nil {
		t.Fatal(err)
	}
	appendEntries(t, st, 3)
	return anchoredLog{dir: dir, dsn: dsn, pub: pub, checkpoint: file, st: st}
}

func appendEntries(t *testing.T, st store.Store, n int) {
	t.Helper()
	l := &audit.Log{Store: st, Now: func() time.Time { return checkpointTime }}
	for i := range n {
		if err := l.Record(context.Background(), audit.UserCreate, "api:test", fmt.Sprintf("u%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuditVerifyCheckpoint: a tail rewritten with its hashes recomputed,
// or cut short, passes 'audit verify' and fails 'audit verify --checkpoint'
// with exit 5, on both engines; so does a checkpoint the server did not sign.
func TestAuditVerifyCheckpoint(t *testing.T) {
	engines := map[string]func(testing.TB) string{"sqlite": func(testing.TB) string { return "" }}
	if os.Getenv(storetest.PostgresEnv) != "" {
		engines["postgres"] = storetest.PostgresDSN
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, l anchoredLog)
		code   int
		want   string
	}{
		{"untouched", func(*testing.T, anchoredLog) {}, cli.ExitOK, "vouches for entries 1..10; 3 later entries are not anchored yet"},
		{"rewritten", func(t *testing.T, l anchoredLog) { storetest.RewriteAudit(t, l.dsn, l.st, 5, `{"forged":true}`) }, cli.ExitTampered, "differs from the checkpoint"},
		{"cut short", func(t *testing.T, l anchoredLog) { storetest.TruncateAudit(t, l.dsn, 7) }, cli.ExitTampered, "cut from its end"},
		{"signed by another key", func(t *testing.T, l anchoredLog) {
			other, err := keys.GenerateMaster()
			if err != nil {
				t.Fatal(err)
			}
			data, err := auditcheck.Sign(other.Signer(0), auditcheck.Checkpoint{Seq: 10, Hash: make([]byte, 32), Count: 10}, checkpointTime)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Dir(l.checkpoint), filepath.Base(l.checkpoint), string(data))
		}, cli.ExitTampered, "does not trust"},
		{"checkpoint altered", func(t *testing.T, l anchoredLog) {
			data := string(readFile(t, l.checkpoint))
			if !strings.Contains(data, `"payload":"ey`) {
				t.Fatalf("checkpoint %s: no payload to alter", data)
			}
			writeFile(t, filepath.Dir(l.checkpoint), filepath.Base(l.checkpoint), strings.Replace(data, `"payload":"ey`, `"payload":"fy`, 1))
		}, cli.ExitTampered, "signature does not verify"},
	}
	for engine, dsn := range engines {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				l := newAnchoredLog(t, dsn(t))
				tc.tamper(t, l)
				base := []string{"audit", "verify", "--data", l.dir, "--database", l.dsn}
				mustRun(t, nil, base...) // the chain alone sees nothing
				for _, key := range [][]string{nil, {"--server-key", l.pub}} {
					args := append(append(append([]string{}, base...), "--checkpoint", l.checkpoint), key...)
					r := expectCode(t, tc.code, nil, args...)
					if !strings.Contains(r.stdout+r.stderr, tc.want) {
						t.Fatalf("outpost %s: want %q in\n%s", strings.Join(args, " "), tc.want, r)
					}
				}
			})
		}
	}
}

// TestAuditVerifyCheckpointArgs: a directory of checkpoints works, and the
// verifier must name a key it trusts.
func TestAuditVerifyCheckpointArgs(t *testing.T) {
	l := newAnchoredLog(t, "")
	dir := filepath.Dir(l.checkpoint)
	r := mustRun(t, nil, "audit", "verify", "--database", l.dsn, "--server-key", l.pub, "--checkpoint", dir, "--json")
	if !strings.Contains(r.stdout, `"anchored": 10`) || !strings.Contains(r.stdout, `"checkpoints": 1`) {
		t.Fatalf("--json: %s", r)
	}
	expectCode(t, cli.ExitUsage, nil, "audit", "verify", "--database", l.dsn, "--checkpoint", l.checkpoint)
	expectCode(t, cli.ExitError, nil, "audit", "verify", "--database", l.dsn, "--server-key", l.pub, "--checkpoint", t.TempDir())
}

// TestServeCheckpointFlags: a schedule that would sign continuously, or a
// negative count, is a usage error before anything is initialised.
func TestServeCheckpointFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--audit-checkpoint-every", "10ms"},
		{"--audit-checkpoint-every", "-1m"},
		{"--audit-checkpoint-keep", "-1"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		r := expectCode(t, cli.ExitUsage, nil, append([]string{"serve", "--data", dir, "--dev-insecure-unsealed", "--plaintext", "--listen", "127.0.0.1:0"}, args...)...)
		if !strings.Contains(r.stderr, args[0]) {
			t.Fatalf("%v: the error does not name the flag: %s", args, r)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Fatalf("%v: the data directory was initialised anyway", args)
		}
	}
}
