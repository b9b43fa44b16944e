package e2e

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/proctest"
)

// TestDeliveryStory is issue 11's whole story with real processes: an
// `outpost serve` mailing codes through a real SMTP server (aiosmtpd) and
// posting signed events to a shipper's receiver; a courier device
// ('outpost field', registered) that syncs its route manifest, goes
// offline (the server is killed), checks one delivery in each mode at the
// door (hash and fingerprint by the code from the mail, token by scanning
// the QR image attached to the mail), is reassigned one delivery while
// offline, and syncs back: the receipts become delivered, the reassigned
// delivery is refused at the door, the proofs verify with the server's
// public key alone, the shipper saw every change with valid signatures,
// and each code was mailed exactly once.
func TestDeliveryStory(t *testing.T) {
	if testing.Short() {
		t.Skip("runs servers, an SMTP server and a courier device")
	}
	smtpd := proctest.StartSMTP(t)
	sh := &shipper{seen: map[string]int{}}
	hook := httptest.NewServer(sh)
	defer hook.Close()
	s := &killServer{t: t, dir: filepath.Join(t.TempDir(), "data"), extra: []string{
		"--smtp-addr", smtpd.Addr, "--smtp-from", "parcels@shipper.example", "--outbox-interval", "100ms"}}
	s.start()
	defer func() { s.stop() }()
	env := []string{"OUTPOST_SERVER=" + s.url, "OUTPOST_PASSPHRASE=" + passphrase}
	auth := []string{"--token-file", filepath.Join(s.dir, "admin.token")}
	run := func(want int, args ...string) string {
		t.Helper()
		out, e, code := outpost(t, env, args...)
		if code != want {
			t.Fatalf("outpost %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out, e)
		}
		return out
	}
	var set map[string]any
	if err := json.Unmarshal([]byte(run(0, append([]string{"admin", "webhook", "set", "--url", hook.URL + "/events", "--json"}, auth...)...)), &set); err != nil {
		t.Fatal(err)
	}
	sh.mu.Lock()
	sh.secret = []byte(set["secret"].(string))
	sh.mu.Unlock()

	work := t.TempDir()
	pub := filepath.Join(work, "server.pub")
	run(0, "keys", "export-public", "--data", s.dir, "--out", pub)
	field := filepath.Join(work, "van-7")
	run(0, "field", "init", "--data", field, "--server-key", pub, "--device-id", "van-7")
	run(0, append([]string{"admin", "device", "register", "--id", "van-7", "--public-key", filepath.Join(field, "device.pub")}, auth...)...)
	registerFieldDevices(t, env, auth, "van-9")

	due := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	modes := map[string]string{"p-hash": "hash", "p-fp": "fingerprint", "p-tok": "token", "p-move": "hash"}
	for id, mode := range modes {
		var d map[string]any
		if st := s.api("POST", "/v1/deliveries", map[string]any{"id": id, "recipient": map[string]string{"email": id + "@example.org"},
			"device": "van-7", "not_after": due, "mode": mode}, &d); st != http.StatusCreated {
			t.Fatalf("create %s: %d %v", id, st, d)
		}
		if d["code"] != nil || d["token"] != nil {
			t.Fatalf("create %s answered a code or token although the server mails it: %v", id, d)
		}
	}
	waitFor(t, "four mails", func() bool { return len(smtpd.Messages(t)) >= 4 })
	codes := map[string]string{}
	for id, ms := range mails(t, smtpd) {
		codes[id] = strings.Fields(ms[0])[1] + strings.Join(strings.Fields(ms[0])[2:], "")
	}
	png := filepath.Join(work, "token.png")
	if err := os.WriteFile(png, mailPNG(t, smtpd, "p-tok"), 0o600); err != nil {
		t.Fatal(err)
	}

	syncRep := func() map[string]string {
		t.Helper()
		var rep map[string]any
		if err := json.Unmarshal([]byte(run(0, "field", "sync", "--data", field, "--server", s.url, "--json")), &rep); err != nil {
			t.Fatal(err)
		}
		acks := map[string]string{}
		rs, _ := rep["receipts"].([]any)
		for _, r := range rs {
			m := r.(map[string]any)
			acks[m["delivery"].(string)] = m["status"].(string)
		}
		return acks
	}
	syncRep()

	// Offline: the server is gone; the device checks at the door alone.
	s.kill()
	for _, id := range []string{"p-hash", "p-fp"} {
		run(0, "courier", "verify", "--data", field, "--delivery", id, "--code", codes[id])
	}
	run(0, "courier", "verify", "--data", field, "--delivery", "p-tok", "--scan", png)

	// Back online: the server reassigned p-move meanwhile.
	s.start()
	if st := s.api("POST", "/v1/deliveries/p-move/reassign", map[string]string{"device": "van-9"}, nil); st != http.StatusOK {
		t.Fatalf("reassign: %d", st)
	}
	acks := syncRep()
	for _, id := range []string{"p-hash", "p-fp", "p-tok"} {
		if acks[id] != "delivered" {
			t.Fatalf("receipts after the sync: %v", acks)
		}
	}
	run(3, "courier", "verify", "--data", field, "--delivery", "p-move", "--code", codes["p-move"]) // gone from the route

	for _, id := range []string{"p-hash", "p-fp", "p-tok"} {
		proof := filepath.Join(work, id+".proof")
		if err := os.WriteFile(proof, []byte(run(0, append([]string{"admin", "delivery", "proof", id, "--json"}, auth...)...)), 0o600); err != nil {
			t.Fatal(err)
		}
		if out := run(0, "delivery", "proof", "verify", proof, "--server-key", pub); !strings.Contains(out, "van-7") {
			t.Fatalf("proof of %s: %s", id, out)
		}
	}

	want := map[string][]string{
		"p-hash": {"created", "delivered", "notified", "out_for_delivery"},
		"p-fp":   {"created", "delivered", "notified", "out_for_delivery"},
		"p-tok":  {"created", "delivered", "notified", "out_for_delivery"},
		"p-move": {"created", "notified", "out_for_delivery", "reassigned"},
	}
	seen := func() map[string][]string {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		out := map[string][]string{}
		for k := range sh.seen {
			f := strings.Fields(k)
			if !slices.Contains(out[f[0]], f[1]) {
				out[f[0]] = append(out[f[0]], f[1])
			}
		}
		for _, v := range out {
			slices.Sort(v)
		}
		return out
	}
	waitFor(t, "every event at the shipper", func() bool {
		got := seen()
		for id, w := range want {
			for _, ty := range w {
				if !slices.Contains(got[id], ty) {
					return false
				}
			}
		}
		return true
	})
	sh.mu.Lock()
	bad := sh.bad
	sh.mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d events with a bad signature", bad)
	}
	// Each code exactly once (p-move: one mail per code version).
	for id, ms := range mails(t, smtpd) {
		distinct := map[string]bool{}
		for _, m := range ms {
			distinct[m] = true
		}
		if n := map[string]int{"p-move": 2}[id]; len(distinct) != max(n, 1) {
			t.Fatalf("%s: mails %v", id, ms)
		}
	}
}

// mailPNG returns the QR image attached to the mail about delivery.
func mailPNG(t *testing.T, smtpd *proctest.SMTPServer, delivery string) []byte {
	t.Helper()
	for _, raw := range smtpd.Messages(t) {
		if !strings.Contains(raw, "parcel "+delivery+":") {
			continue
		}
		m, err := mail.ReadMessage(strings.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
		if err != nil || params["boundary"] == "" {
			t.Fatalf("the token mail is not multipart: %v\n%s", err, raw)
		}
		mr := multipart.NewReader(m.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				t.Fatalf("no image in the token mail: %v", err)
			}
			if p.Header.Get("Content-Type") == "image/png" {
				b, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, p))
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
	}
	t.Fatalf("no mail about %s", delivery)
	return nil
}
