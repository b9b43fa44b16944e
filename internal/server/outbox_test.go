package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/notify"
)

// refusingNotifier refuses every message for good, as a gateway answering
// 5xx would.
type refusingNotifier struct{ n atomic.Int32 }

func (r *refusingNotifier) Notify(context.Context, notify.Message) error {
	r.n.Add(1)
	return fmt.Errorf("%w: test gateway says no", notify.ErrPermanent)
}

// TestOutboxAPI: the webhook is set by an admin (secret once), a notifier
// keeps the code out of the API answer, the dead letter is listed and
// resent, audited; scopes and bad input.
func TestOutboxAPI(t *testing.T) {
	for name, dsn := range engines(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, dsn(t))
			f.registerDevice(t, "dev-1")
			var events atomic.Int32
			hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				events.Add(1)
				w.WriteHeader(http.StatusNoContent)
			}))
			defer hook.Close()
			iss := f.client("issuer")
			if r := f.call(iss, "PUT", "/v1/webhook", map[string]string{"url": hook.URL}); r.status != http.StatusForbidden {
				t.Fatalf("issuer sets the webhook: %d", r.status)
			}
			if r := f.call(f.admin, "GET", "/v1/webhook", nil); r.status != http.StatusNotFound || r.errCode() != "not_found" {
				t.Fatalf("no webhook yet: %d %s", r.status, r.raw)
			}
			if r := f.call(f.admin, "PUT", "/v1/webhook", map[string]string{"url": "http://shipper.example/hook"}); r.status != http.StatusBadRequest || r.errCode() != "invalid_request" {
				t.Fatalf("plain http to a remote host: %d %s", r.status, r.raw)
			}
			r := f.mustCall(http.StatusOK, f.admin, "PUT", "/v1/webhook", map[string]string{"url": hook.URL + "/hook"})
			secret, _ := r.body["secret"].(string)
			if len(secret) < 32 || r.body["url"] != hook.URL+"/hook" {
				t.Fatalf("set webhook: %s", r.raw)
			}
			if r := f.mustCall(http.StatusOK, f.admin, "GET", "/v1/webhook", nil); strings.Contains(string(r.raw), secret) || r.body["url"] != hook.URL+"/hook" {
				t.Fatalf("get webhook: %s", r.raw)
			}

			refuse := &refusingNotifier{}
			f.srv.outbox.Channels = notify.Channels{Email: refuse}
			due := f.clock.Now().Add(48 * time.Hour).Format(time.RFC3339)
			r = f.mustCall(http.StatusCreated, iss, "POST", "/v1/deliveries", map[string]any{"id": "p1",
				"recipient": map[string]string{"email": "ana@example.org"}, "device": "dev-1", "not_after": due, "mode": "hash"})
			if _, ok := r.body["code"]; ok {
				t.Fatalf("the code is in the answer although a notifier sends it: %s", r.raw)
			}
			if _, err := f.srv.outbox.RunOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			if refuse.n.Load() != 1 || events.Load() != 1 {
				t.Fatalf("%d notifications, %d events", refuse.n.Load(), events.Load())
			}
			if r := f.call(iss, "GET", "/v1/outbox?state=dead", nil); r.status != http.StatusForbidden {
				t.Fatalf("issuer lists the outbox: %d", r.status)
			}
			if r := f.call(f.admin, "GET", "/v1/outbox?state=bogus", nil); r.status != http.StatusBadRequest {
				t.Fatalf("bad state: %d %s", r.status, r.raw)
			}
			r = f.mustCall(http.StatusOK, f.admin, "GET", "/v1/outbox?state=dead", nil)
			msgs, _ := r.body["messages"].([]any)
			if len(msgs) != 1 {
				t.Fatalf("dead letters: %s", r.raw)
			}
			m := msgs[0].(map[string]any)
			id, _ := m["id"].(string)
			if m["kind"] != "recipient" || m["has_code"] != true || m["delivery"] != "p1" || strings.Contains(string(r.raw), "ana@") {
				t.Fatalf("dead letter: %s", r.raw)
			}
			r = f.mustCall(http.StatusOK, f.admin, "POST", "/v1/outbox/"+id+"/resend", nil)
			if r.body["state"] != "pending" || r.body["attempts"] != 0.0 {
				t.Fatalf("resend: %s", r.raw)
			}
			if r := f.call(f.admin, "POST", "/v1/outbox/"+id+"/resend", nil); r.status != http.StatusConflict || r.errCode() != "not_dead" {
				t.Fatalf("resend a pending message: %d %s", r.status, r.raw)
			}
			if r := f.call(f.admin, "POST", "/v1/outbox/ob-nope/resend", nil); r.status != http.StatusNotFound {
				t.Fatalf("resend nothing: %d %s", r.status, r.raw)
			}
			if r := f.call(f.admin, "POST", "/v1/outbox/bad%20id/resend", nil); r.status != http.StatusBadRequest {
				t.Fatalf("resend a bad id: %d %s", r.status, r.raw)
			}
			if n := len(f.auditOf("outbox.resend")); n != 1 || len(f.auditOf("outbox.dead")) != 1 || len(f.auditOf("webhook.set")) != 1 {
				t.Fatalf("audit: %d resends", n)
			}
			for _, e := range f.auditOf("webhook.set") {
				if strings.Contains(string(e.Data), secret) {
					t.Fatal("the webhook secret is in the audit log")
				}
			}
			if r := f.call("", "GET", "/metrics", nil); !strings.Contains(string(r.raw), `outpost_outbox_messages_total{kind="recipient",result="dead"} 1`) {
				t.Fatalf("metrics:\n%s", r.raw)
			}
		})
	}
}
