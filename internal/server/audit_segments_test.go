package server

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/auditcheck"
)

// TestAuditExportPruneAPI: an admin exports the log to the server's
// segment directory and prunes it, both audited; a prune before an export
// is refused, bad limits are 400, other scopes 403, and a server without a
// segment directory says how to configure one.
func TestAuditExportPruneAPI(t *testing.T) {
	for name, mk := range engines(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, mk(t))
			if r := f.call(f.admin, "POST", "/v1/audit/export", map[string]any{}); r.status != 409 || r.errCode() != "no_segment_dir" {
				t.Fatalf("export without a directory: %d %s", r.status, r.raw)
			}
			f.srv.archive = &auditcheck.Archive{Notary: f.srv.checkpoints, Dir: t.TempDir()}
			for i := range 4 {
				f.mustCall(201, f.admin, "POST", "/v1/users", map[string]any{"id": fmt.Sprintf("u%d", i)})
			}
			issuer := f.client("issuer")
			for _, path := range []string{"/v1/audit/export", "/v1/audit/prune"} {
				if r := f.call(issuer, "POST", path, map[string]any{"before": 10}); r.status != 403 {
					t.Fatalf("%s as issuer: %d %s", path, r.status, r.raw)
				}
			}
			if r := f.call(f.admin, "POST", "/v1/audit/prune", map[string]any{"before": 100}); r.status != 409 || r.errCode() != "not_exported" {
				t.Fatalf("prune before export: %d %s", r.status, r.raw)
			}
			for _, body := range []map[string]any{{}, {"older_than": "soon"}, {"older_than": "-3d"}} {
				if r := f.call(f.admin, "POST", "/v1/audit/prune", body); r.status != 400 {
					t.Fatalf("prune %v: %d %s", body, r.status, r.raw)
				}
			}
			head := lastAudit(t, f)
			r := f.mustCall(200, f.admin, "POST", "/v1/audit/export", map[string]any{})
			if files, _ := r.body["files"].([]any); len(files) != 1 || r.body["to"] != float64(head.Seq) {
				t.Fatalf("export: %s", r.raw)
			}
			if rec := lastAudit(t, f); rec.Kind != audit.Export || !strings.HasPrefix(rec.Actor, "api:") {
				t.Fatalf("export not audited: %+v", rec)
			}
			name := r.body["files"].([]any)[0].(string)
			want, err := os.ReadFile(filepath.Join(f.srv.archive.Dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if r := f.call(f.admin, "GET", "/v1/audit/segments/"+name, nil); r.status != 200 || !bytes.Equal(r.raw, want) {
				t.Fatalf("download: %d, %d bytes of %d", r.status, len(r.raw), len(want))
			}
			for _, bad := range []string{"..%2Foutpost.db", "audit-segment-1-2.jsonl", auditcheck.SegmentName(90, 99)} {
				if r := f.call(f.admin, "GET", "/v1/audit/segments/"+bad, nil); r.status != 404 || r.errCode() != "no_segment" {
					t.Fatalf("download %s: %d %s", bad, r.status, r.raw)
				}
			}
			if r := f.call(issuer, "GET", "/v1/audit/segments/"+name, nil); r.status != 403 {
				t.Fatalf("download as issuer: %d", r.status)
			}
			if r := f.mustCall(200, f.admin, "POST", "/v1/audit/prune", map[string]any{"before": 2}); r.body["segments"] != float64(0) {
				t.Fatalf("a prune before seq 2 deleted a segment that reaches past it: %s", r.raw)
			}
			r = f.mustCall(200, f.admin, "POST", "/v1/audit/prune", map[string]any{"before": head.Seq + 1})
			if r.body["through"] != float64(head.Seq) {
				t.Fatalf("prune: %s", r.raw)
			}
			if rec := lastAudit(t, f); rec.Kind != audit.Prune {
				t.Fatalf("prune not audited: %+v", rec)
			}
			if r := f.mustCall(200, f.admin, "GET", "/v1/audit/verify", nil); r.body["ok"] != true || r.body["pruned"] != float64(head.Seq) {
				t.Fatalf("verify after the prune: %s", r.raw)
			}
		})
	}
}
