package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestAuditCheckpointAPI: an admin has the head signed (and that is
// audited), reads the latest back, and is refused a signature over a
// rewritten log; other scopes and unauthenticated callers are refused.
func TestAuditCheckpointAPI(t *testing.T) {
	for name, mk := range engines(t) {
		t.Run(name, func(t *testing.T) {
			dsn := mk(t)
			f := newFixture(t, dsn)
			if r := f.call(f.admin, "GET", "/v1/audit/checkpoint", nil); r.status != 404 || r.errCode() != "no_checkpoint" {
				t.Fatalf("latest before any: %d %s", r.status, r.raw)
			}
			issuer := f.client("issuer")
			for i := range 4 {
				f.mustCall(201, f.admin, "POST", "/v1/users", map[string]any{"id": fmt.Sprintf("u%d", i)})
			}
			for _, c := range []struct{ method, path string }{{"POST", "/v1/audit/checkpoints"}, {"GET", "/v1/audit/checkpoint"}} {
				if r := f.call(issuer, c.method, c.path, nil); r.status != 403 {
					t.Fatalf("%s %s as issuer: %d %s", c.method, c.path, r.status, r.raw)
				}
				if r := f.call("", c.method, c.path, nil); r.status != 401 {
					t.Fatalf("%s %s without a token: %d %s", c.method, c.path, r.status, r.raw)
				}
			}
			head := lastAudit(t, f)
			r := f.call(f.admin, "POST", "/v1/audit/checkpoints", nil)
			if r.status != 200 {
				t.Fatalf("checkpoint: %d %s", r.status, r.raw)
			}
			cp, err := auditcheck.Open(r.raw, artifact.Keys{f.srv.Signer().Public})
			if err != nil || cp.Seq != head.Seq || !bytes.Equal(cp.Hash, head.Hash) || !cp.Header.IssuedAt.Equal(f.clock.Now()) {
				t.Fatalf("checkpoint of seq %d signed at %s, want the head %d at %s: %v", cp.Seq, cp.Header.IssuedAt, head.Seq, f.clock.Now(), err)
			}
			rec := lastAudit(t, f)
			var data struct {
				Seq uint64 `json:"seq"`
			}
			if rec.Kind != audit.Checkpoint || rec.Seq != cp.Seq+1 || json.Unmarshal(rec.Data, &data) != nil || data.Seq != cp.Seq {
				t.Fatalf("the request was not audited after the checkpoint: %+v", rec)
			}
			if r := f.call(f.admin, "GET", "/v1/audit/checkpoint", nil); r.status != 200 || !bytes.Equal(r.raw, cp.Bytes) {
				t.Fatalf("latest: %d %s", r.status, r.raw)
			}
			storetest.RewriteAudit(t, dsn, f.st, 2, `{"forged":1}`)
			if r := f.call(f.admin, "POST", "/v1/audit/checkpoints", nil); r.status != 409 || r.errCode() != "audit_log_broken" {
				t.Fatalf("checkpoint over a rewrite: %d %s", r.status, r.raw)
			}
		})
	}
}

func lastAudit(t *testing.T, f *fixture) eventlog.Entry {
	t.Helper()
	var last eventlog.Entry
	for after := uint64(0); ; {
		es, err := f.st.ListAudit(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return last
		}
		last, after = es[len(es)-1], es[len(es)-1].Seq
	}
}
