package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCourierStory drives the courier's side with real processes: an
// `outpost serve`, a courier device ('outpost field init', registered),
// deliveries created through the admin CLI, a sync that brings the route
// manifest, checks at the door while the server cancels one delivery, a
// sync that turns the receipts into "delivered" (and the cancelled one
// into an incident), and a proof checked with the server's public key alone.
func TestCourierStory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := startServer(t, dir)
	env := []string{"OUTPOST_SERVER=" + s.url, "OUTPOST_PASSPHRASE=" + passphrase}
	ca := filepath.Join(dir, "tls", "ca.pem")
	auth := []string{"--token-file", filepath.Join(dir, "admin.token"), "--cacert", ca}
	run := func(want int, args ...string) string {
		t.Helper()
		out, e, code := outpost(t, env, args...)
		if code != want {
			t.Fatalf("outpost %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out, e)
		}
		return out
	}
	work := t.TempDir()
	pub := filepath.Join(work, "server.pub")
	run(0, "keys", "export-public", "--data", dir, "--out", pub)
	field := filepath.Join(work, "van-7")
	run(0, "field", "init", "--data", field, "--server-key", pub, "--device-id", "van-7")
	run(0, append([]string{"admin", "device", "register", "--id", "van-7", "--public-key", filepath.Join(field, "device.pub")}, auth...)...)

	due := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	codes := map[string]string{}
	for _, id := range []string{"parcel-1", "parcel-2"} {
		var d map[string]any
		out := run(0, append([]string{"admin", "delivery", "add", id, "--device", "van-7", "--email", "ana@example.org", "--not-after", due,
			"--mode", "fingerprint", "--json"}, auth...)...)
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatal(err)
		}
		codes[id] = d["code"].(string)
	}
	sync := func() map[string]any {
		t.Helper()
		var rep map[string]any
		if err := json.Unmarshal([]byte(run(0, "field", "sync", "--data", field, "--server", s.url, "--cacert", ca, "--json")), &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := sync(); rep["manifest"] == nil {
		t.Fatalf("no manifest in the first sync: %v", rep)
	}
	run(0, append([]string{"admin", "delivery", "cancel", "parcel-2"}, auth...)...) // the device learns it at its next sync

	c := codes["parcel-1"]
	typo := c[:len(c)-1] + string('0'+(c[len(c)-1]-'0'+1)%10)
	run(2, "courier", "verify", "--data", field, "--delivery", "parcel-1", "--code", typo)
	if out := run(0, "courier", "verify", "--data", field, "--delivery", "parcel-1", "--code", c, "--location", "48.8566,2.3522"); !strings.Contains(out, "provisional") {
		t.Fatalf("verify: %s", out)
	}
	run(3, "courier", "verify", "--data", field, "--delivery", "parcel-1", "--code", c) // once
	run(0, "courier", "verify", "--data", field, "--delivery", "parcel-2", "--code", codes["parcel-2"])

	rep := sync()
	acks := map[string]string{}
	rs, _ := rep["receipts"].([]any)
	for _, r := range rs {
		m := r.(map[string]any)
		acks[m["delivery"].(string)] = m["status"].(string)
	}
	if acks["parcel-1"] != "delivered" || acks["parcel-2"] != "refused" {
		t.Fatalf("receipts: %v", rep["receipts"])
	}
	if out := run(0, append([]string{"admin", "delivery", "get", "parcel-1", "--json"}, auth...)...); !strings.Contains(out, `"delivered"`) {
		t.Fatalf("parcel-1: %s", out)
	}
	run(3, "courier", "verify", "--data", field, "--delivery", "parcel-2", "--code", codes["parcel-2"]) // gone from the route

	proof := filepath.Join(work, "parcel-1.proof")
	if err := os.WriteFile(proof, []byte(run(0, append([]string{"admin", "delivery", "proof", "parcel-1", "--json"}, auth...)...)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(0, "delivery", "proof", "verify", proof, "--server-key", pub); !strings.Contains(out, "van-7") || !strings.Contains(out, "48.8566,2.3522") {
		t.Fatalf("proof verify: %s", out)
	}
	data, _ := os.ReadFile(proof)
	var p map[string]string
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	p["receipt"], p["countersign"] = p["countersign"], p["receipt"]
	swapped, _ := json.Marshal(p)
	if err := os.WriteFile(proof, swapped, 0o600); err != nil {
		t.Fatal(err)
	}
	run(5, "delivery", "proof", "verify", proof, "--server-key", pub)
	if out := run(0, "courier", "route", "--data", field); !strings.Contains(out, "route manifest") {
		t.Fatalf("route: %s", out)
	}
}
