package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/webhook"
)

// TestOutboxSurvivesSIGKILL is the outbox's crash test, with real
// processes: `outpost serve` mailing codes through a real SMTP server
// (aiosmtpd) and posting signed events to a shipper's receiver, killed
// with SIGKILL and restarted.
//
//  1. Killed between enqueue and send: the SMTP server is down while the
//     deliveries are created, the server is killed, the SMTP server comes
//     up, the restarted server sends each code exactly once.
//  2. Killed at random points while creating deliveries: every code and
//     every event arrives; a repeat (the one crash window, between the
//     gateway taking a message and the mark) carries the same Message-ID
//     or event id and the same code, so the receiver drops it.
//  3. The CLI mirror: a refused recipient is a dead letter listed by
//     `outpost admin outbox list --state dead` and resent by `… resend`.
func TestOutboxSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts servers")
	}
	eachEngine(t, outboxKill)
}

// eachEngine runs run as a subtest on each engine: SQLite (dsn "", the
// data directory's database) and PostgreSQL (skipped without
// OUTPOST_TEST_POSTGRES_DSN).
func eachEngine(t *testing.T, run func(t *testing.T, dsn string)) {
	for _, eng := range []struct {
		name string
		dsn  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return "" }},
		{"postgres", func(t *testing.T) string { return storetest.PostgresDSN(t) }},
	} {
		t.Run(eng.name, func(t *testing.T) { run(t, eng.dsn(t)) })
	}
}

// shipper is a webhook receiver that checks signatures and counts events.
type shipper struct {
	mu     sync.Mutex
	secret []byte
	seen   map[string]int
	bad    int
}

func (sh *shipper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var ev webhook.Event
	if err := webhook.Verify(sh.secret, r.Header.Get(webhook.Header), body, time.Now(), webhook.DefaultTolerance); err != nil ||
		json.Unmarshal(body, &ev) != nil || strings.Contains(string(body), "@example") {
		sh.bad++
		http.Error(w, "bad", http.StatusUnauthorized)
		return
	}
	sh.seen[ev.Delivery+" "+ev.Type+" "+ev.ID]++
	w.WriteHeader(http.StatusNoContent)
}

var (
	mailIDRE   = regexp.MustCompile(`(?m)^Message-ID: <([^@>]+)@`)
	mailCodeRE = regexp.MustCompile(`code for parcel ([^:]+): ([0-9 ]+)\r?\n`)
)

// mails maps each delivery to its mails' Message-IDs and codes.
func mails(t *testing.T, smtpds ...*proctest.SMTPServer) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, s := range smtpds {
		for _, m := range s.Messages(t) {
			id, code := mailIDRE.FindStringSubmatch(m), mailCodeRE.FindStringSubmatch(m)
			if id == nil || code == nil {
				t.Fatalf("mail without a Message-ID or code:\n%s", m)
			}
			out[code[1]] = append(out[code[1]], id[1]+" "+code[2])
		}
	}
	return out
}

func outboxKill(t *testing.T, dsn string) {
	smtpPort := proctest.FreePort(t)
	sh := &shipper{seen: map[string]int{}}
	hook := httptest.NewServer(sh)
	defer hook.Close()
	s := &killServer{t: t, dir: filepath.Join(t.TempDir(), "data"), dsn: dsn, extra: []string{
		"--smtp-addr", "127.0.0.1:" + strconv.Itoa(smtpPort), "--smtp-from", "parcels@shipper.example",
		"--outbox-interval", "100ms", "--outbox-retry-base", "200ms", "--outbox-retry-max", "400ms",
		"--outbox-max-attempts", "1000", "--webhook-timeout", "1s", "--outbox-lease", "3s"}}
	s.start()
	defer s.stop()
	env := []string{"OUTPOST_SERVER=" + s.url}
	auth := []string{"--token-file", filepath.Join(s.dir, "admin.token")}
	out, e, code := outpost(t, env, append([]string{"admin", "webhook", "set", "--url", hook.URL + "/events", "--json"}, auth...)...)
	var set map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &set) != nil || set["secret"] == nil {
		t.Fatalf("webhook set: %d %s %s", code, out, e)
	}
	sh.mu.Lock()
	sh.secret = []byte(set["secret"].(string))
	sh.mu.Unlock()
	registerFieldDevices(t, env, auth, "van-1")

	due := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	create := func(id, email string) {
		t.Helper()
		var d map[string]any
		if st := s.api("POST", "/v1/deliveries", map[string]any{"id": id, "recipient": map[string]string{"email": email},
			"device": "van-1", "not_after": due, "mode": "fingerprint"}, &d); st != http.StatusCreated {
			t.Fatalf("create %s: %d %v", id, st, d)
		}
		if _, ok := d["code"]; ok {
			t.Fatalf("create %s answered the code although the server mails it", id)
		}
	}
	var ids []string

	// 1. The SMTP server is down: the worker tries, fails, is killed.
	for i := range 3 {
		ids = append(ids, fmt.Sprintf("p1-%d", i))
		create(ids[i], fmt.Sprintf("r%d@example.org", i))
	}
	waitFor(t, "failed attempts", func() bool {
		var list struct{ Messages []map[string]any }
		s.api("GET", "/v1/outbox?state=pending", nil, &list)
		n := 0
		for _, m := range list.Messages {
			if m["kind"] == "recipient" && m["last_error"] != nil {
				n++
			}
		}
		return n == 3
	})
	s.kill()
	smtpd := proctest.StartSMTPOn(t, smtpPort)
	s.start()
	waitFor(t, "three mails", func() bool { return len(smtpd.Messages(t)) >= 3 })
	time.Sleep(500 * time.Millisecond) // a repeat would come now
	got := mails(t, smtpd)
	for _, id := range ids {
		if len(got[id]) != 1 {
			t.Fatalf("%s: %d mails after the restart, want exactly 1: %v", id, len(got[id]), got[id])
		}
	}

	// 2. Kills at random points while deliveries are created.
	for round := range 3 {
		for i := range 4 {
			id := fmt.Sprintf("p2-%d-%d", round, i)
			ids = append(ids, id)
			create(id, id+"@example.org")
		}
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
		s.kill()
		s.start()
	}
	waitFor(t, "every delivery notified", func() bool {
		for _, id := range ids {
			var d map[string]any
			if s.api("GET", "/v1/deliveries/"+id, nil, &d); d["state"] != "notified" {
				return false
			}
		}
		var list struct{ Messages []map[string]any }
		s.api("GET", "/v1/outbox?state=pending", nil, &list)
		return len(list.Messages) == 0
	})
	got = mails(t, smtpd)
	repeats := 0
	for _, id := range ids {
		distinct := map[string]bool{}
		for _, m := range got[id] {
			distinct[m] = true
		}
		if len(got[id]) == 0 || len(distinct) != 1 {
			t.Fatalf("%s: mails %v: want one Message-ID and one code", id, got[id])
		}
		repeats += len(got[id]) - 1
	}
	sh.mu.Lock()
	events := map[string]int{}
	for k, n := range sh.seen {
		f := strings.Fields(k)
		events[f[0]+" "+f[1]]++
		repeats += n - 1
	}
	bad := sh.bad
	sh.mu.Unlock()
	for _, id := range ids {
		if events[id+" created"] != 1 || events[id+" notified"] != 1 {
			t.Fatalf("%s: events %v", id, events)
		}
	}
	if bad != 0 {
		t.Fatalf("%d events failed the signature check or carried a recipient", bad)
	}
	t.Logf("%d deliveries, %d server starts, %d repeats inside the crash window (same id, dropped by receivers)", len(ids), s.started, repeats)

	// 3. A refused recipient: a dead letter the CLI lists and resends.
	create("p3", "refuse@example.org")
	var dead []map[string]any
	waitFor(t, "a dead letter", func() bool {
		out, _, code := outpost(t, env, append([]string{"admin", "outbox", "list", "--state", "dead", "--json"}, auth...)...)
		var list struct{ Messages []map[string]any }
		if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
			return false
		}
		dead = list.Messages
		return len(dead) == 1
	})
	if dead[0]["delivery"] != "p3" || !strings.Contains(fmt.Sprint(dead[0]["last_error"]), "550") {
		t.Fatalf("dead letter: %v", dead[0])
	}
	out, e, code = outpost(t, env, append([]string{"admin", "outbox", "resend", dead[0]["id"].(string)}, auth...)...)
	if code != 0 || !strings.Contains(out, "pending") {
		t.Fatalf("resend: %d %s %s", code, out, e)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after a minute", what)
		}
	}
}
