package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/notify"
	"github.com/outpost-auth/outpost/offline"
	"github.com/outpost-auth/outpost/webhook"
)

// recordingNotifier keeps every message it is given.
type recordingNotifier struct {
	mu   sync.Mutex
	msgs []notify.Message
}

func (r *recordingNotifier) Notify(_ context.Context, m notify.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	return nil
}

func (r *recordingNotifier) of(id string) []notify.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []notify.Message
	for _, m := range r.msgs {
		if m.Delivery == id {
			out = append(out, m)
		}
	}
	return out
}

// shipperHook is a shipper's webhook receiver that verifies each event's
// signature and keeps the events it accepted.
type shipperHook struct {
	mu     sync.Mutex
	secret []byte
	now    func() time.Time
	events map[string][]string // delivery → event types, in arrival order
	bad    int
}

func (h *shipperHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := webhook.Verify(h.secret, r.Header.Get(webhook.Header), body, h.now(), 5*time.Minute); err != nil {
		h.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var e webhook.Event
	if err := json.Unmarshal(body, &e); err != nil {
		h.bad++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.events[e.Delivery] = append(h.events[e.Delivery], e.Type)
	w.WriteHeader(http.StatusNoContent)
}

func (h *shipperHook) of(id string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.events[id], ",")
}

// TestDeliveryEveryChangeEvented: with a notifier and a shipper webhook,
// each state change — out_for_delivery by the manifest, delivered by a
// receipt at sync, by an online confirm and by a device-checked code,
// failed by the attempt limit, expired, cancelled, reassigned — reaches the
// shipper as a signed event; a message sent after the courier's manifest
// still goes out (its delivery stays out_for_delivery), a token-mode
// message carries the token, and the API answers carry neither code nor
// token.
func TestDeliveryEveryChangeEvented(t *testing.T) {
	ctx := context.Background()
	f := newCourierFixture(t, engines(t)["sqlite"](t), "van-1", "van-2")
	hook := &shipperHook{now: f.clock.Now, events: map[string][]string{}}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	r := f.mustCall(http.StatusOK, f.admin, "PUT", "/v1/webhook", map[string]string{"url": srv.URL + "/hook"})
	secret, _ := r.body["secret"].(string)
	hook.mu.Lock()
	hook.secret = []byte(secret)
	hook.mu.Unlock()
	rec := &recordingNotifier{}
	f.srv.outbox.Channels = notify.Channels{Email: rec}
	run := func() {
		t.Helper()
		for range 3 {
			if _, err := f.srv.outbox.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}

	due := f.clock.Now().Add(48 * time.Hour)
	create := func(id, mode string, notAfter time.Time) {
		t.Helper()
		r := f.mustCall(http.StatusCreated, f.iss, "POST", "/v1/deliveries", map[string]any{"id": id, "device": "van-1",
			"not_after": notAfter.Format(time.RFC3339), "mode": mode, "recipient": map[string]string{"email": "ana@example.org"}})
		if _, ok := r.body["code"]; ok {
			t.Fatalf("%s: the code is in the answer although a notifier sends it", id)
		}
		if _, ok := r.body["token"]; ok {
			t.Fatalf("%s: the token is in the answer although a notifier sends it", id)
		}
	}
	for id, mode := range map[string]string{"p-door": "hash", "p-online": "hash", "p-fail": "fingerprint", "p-tok": "token",
		"p-cancel": "hash", "p-move": "hash"} {
		create(id, mode, due)
	}
	create("p-exp", "hash", f.clock.Now().Add(2*time.Hour))
	// The courier's device fetches its manifest before any message went out.
	if rep := f.sync("van-1"); rep.Manifest == nil || rep.Manifest.Deliveries != 7 {
		t.Fatalf("manifest: %+v", rep.Manifest)
	}
	run()
	for _, id := range []string{"p-door", "p-online", "p-fail", "p-tok", "p-exp"} {
		msgs := rec.of(id)
		if len(msgs) != 1 || msgs[0].Code == "" {
			t.Fatalf("%s: %d messages: the recipient's message must go out after the manifest too", id, len(msgs))
		}
		if st := f.state(id); st != "out_for_delivery" {
			t.Fatalf("%s is %s after its message, want out_for_delivery", id, st)
		}
	}
	if rec.of("p-tok")[0].Token == "" {
		t.Fatal("the token-mode message carries no token")
	}
	if rec.of("p-door")[0].Token != "" {
		t.Fatal("a hash-mode message carries a token")
	}

	// At the door (hash), synced back: delivered by a receipt.
	if _, err := f.devs["van-1"].CheckDelivery(ctx, offline.DeliveryAttempt{Delivery: "p-door", Code: rec.of("p-door")[0].Code}); err != nil {
		t.Fatal(err)
	}
	// Online confirm.
	f.mustCall(http.StatusOK, f.iss, "POST", "/v1/deliveries/p-online/confirm", map[string]string{"code": rec.of("p-online")[0].Code, "device": "van-1"})
	// Attempt limit.
	wrong := rec.of("p-door")[0].Code
	for range 5 {
		f.call(f.iss, "POST", "/v1/deliveries/p-fail/confirm", map[string]string{"code": wrong, "device": "van-1"})
	}
	f.mustCall(http.StatusOK, f.iss, "POST", "/v1/deliveries/p-cancel/cancel", nil)
	f.mustCall(http.StatusOK, f.iss, "POST", "/v1/deliveries/p-move/reassign", map[string]string{"device": "van-2"})
	f.sync("van-1")
	f.clock.Add(3 * time.Hour)
	run()

	want := map[string]string{
		"p-door":   "created,out_for_delivery,delivered",
		"p-online": "created,out_for_delivery,delivered",
		"p-fail":   "created,out_for_delivery,failed",
		"p-tok":    "created,out_for_delivery",
		"p-cancel": "created,out_for_delivery,cancelled",
		"p-move":   "created,out_for_delivery,reassigned,notified", // notified: van-2's new code went out
		"p-exp":    "created,out_for_delivery,expired",
	}
	for id, w := range want {
		got := strings.Split(hook.of(id), ",")
		sort.Strings(got)
		ws := strings.Split(w, ",")
		sort.Strings(ws)
		if strings.Join(got, ",") != strings.Join(ws, ",") {
			t.Errorf("%s: events %q, want %q", id, hook.of(id), w)
		}
	}
	if hook.bad != 0 {
		t.Errorf("%d events with a bad signature", hook.bad)
	}
}
