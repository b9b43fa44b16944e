package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/deliverycode"
	"github.com/outpost-auth/outpost/internal/keys"
)

// TestAdminDelivery drives `outpost admin delivery` against a real server:
// add (the code once), a duplicate refused, get, list, reassign, cancel.
func TestAdminDelivery(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := startServer(t, dir)
	env := []string{"OUTPOST_SERVER=" + s.url}
	auth := []string{"--token-file", filepath.Join(dir, "admin.token"), "--cacert", filepath.Join(dir, "tls", "ca.pem")}
	for _, dev := range []string{"van-7", "van-9"} { // a delivery's device is a registered field device
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), dev+".pub")
		if err := os.WriteFile(file, keys.MarshalPublicPEM(pub), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, e, code := outpost(t, env, append([]string{"admin", "device", "register", "--id", dev, "--public-key", file}, auth...)...); code != 0 {
			t.Fatalf("register %s: %d %s", dev, code, e)
		}
	}
	due := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	add := append([]string{"admin", "delivery", "add", "parcel-1", "--device", "van-7", "--email", "ana@example.org", "--not-after", due, "--json"}, auth...)
	out, e, code := outpost(t, env, add...)
	if code != 0 {
		t.Fatalf("add: %d %s", code, e)
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("add --json: %v %q", err, out)
	}
	if _, err := deliverycode.Parse(d["code"].(string)); err != nil || d["state"] != "created" {
		t.Fatalf("add: %s", out)
	}
	if _, e, code := outpost(t, env, add...); code == 0 || !strings.Contains(e, "exists") {
		t.Fatalf("duplicate: %d %s", code, e)
	}
	if out, e, code := outpost(t, env, append([]string{"admin", "delivery", "get", "parcel-1", "--json"}, auth...)...); code != 0 ||
		strings.Contains(out, "ana@") || strings.Contains(out, `"code"`) {
		t.Fatalf("get: %d %s %s", code, out, e)
	}
	out, e, code = outpost(t, env, append([]string{"admin", "delivery", "reassign", "parcel-1", "--device", "van-9"}, auth...)...)
	if code != 0 || !strings.Contains(out, "van-9") || !strings.Contains(out, "shown once") {
		t.Fatalf("reassign: %d %s %s", code, out, e)
	}
	if out, e, code := outpost(t, env, append([]string{"admin", "delivery", "cancel", "parcel-1"}, auth...)...); code != 0 || !strings.Contains(out, "cancelled") {
		t.Fatalf("cancel: %d %s %s", code, out, e)
	}
	if out, e, code := outpost(t, env, append([]string{"admin", "delivery", "list"}, auth...)...); code != 0 || !strings.Contains(out, "parcel-1") {
		t.Fatalf("list: %d %s %s", code, out, e)
	}
}
