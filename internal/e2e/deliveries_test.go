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
	registerFieldDevices(t, env, auth, "van-7", "van-9")
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

// TestAdminDeliveryConfirm drives `outpost admin delivery confirm` against
// a real server: a typo (no attempt), another device, a wrong code, the
// right code (delivered), the same code again; and the token of a
// token-mode delivery in `add`'s answer.
func TestAdminDeliveryConfirm(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := startServer(t, dir)
	env := []string{"OUTPOST_SERVER=" + s.url}
	auth := []string{"--token-file", filepath.Join(dir, "admin.token"), "--cacert", filepath.Join(dir, "tls", "ca.pem")}
	registerFieldDevices(t, env, auth, "van-7")
	due := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	out, e, code := outpost(t, env, append([]string{"admin", "delivery", "add", "parcel-1", "--device", "van-7", "--phone", "+33612345678",
		"--not-after", due, "--mode", "token"}, auth...)...)
	if code != 0 || !strings.Contains(out, "recipient token") || !strings.Contains(out, "ODT1:") {
		t.Fatalf("add in token mode: %d %s %s", code, out, e)
	}
	var c string
	for _, line := range strings.Split(out, "\n") {
		if _, after, ok := strings.Cut(line, "no copy): "); ok {
			c = after
		}
	}
	if _, err := deliverycode.Parse(c); err != nil {
		t.Fatalf("no code in %q", out)
	}
	typo := []byte(c)
	typo[0] = '0' + (typo[0]-'0'+1)%10
	wrong := "12345678"
	if wrong == c[:8] {
		wrong = "87654321"
	}
	wrong += string(deliverycode.CheckDigit(wrong))
	confirm := func(code, device string) (string, string, int) {
		return outpost(t, env, append([]string{"admin", "delivery", "confirm", "parcel-1", "--code", code, "--device", device}, auth...)...)
	}
	steps := []struct {
		name, code, device string
		exit               int
		want               string
	}{
		{"typo", string(typo), "van-7", 1, "typo"},
		{"another device", c, "van-9", 1, "wrong_device"},
		{"wrong code", wrong, "van-7", 3, "1 of 5 attempts used"}, // exit 3: refused
		{"right code, grouped", c[:4] + " " + c[4:], "van-7", 0, "delivered"},
		{"used code", c, "van-7", 3, "already_delivered"},
	}
	for _, st := range steps {
		out, e, code := confirm(st.code, st.device)
		if code != st.exit || !strings.Contains(out+e, st.want) {
			t.Fatalf("%s: exit %d, %s %s", st.name, code, out, e)
		}
	}
	if out, e, code := outpost(t, env, append([]string{"admin", "delivery", "confirm", "--help"}, auth...)...); code != 0 || !strings.Contains(out, "attempt") {
		t.Fatalf("help: %d %s %s", code, out, e)
	}
	if out, e, code := outpost(t, env, append([]string{"admin", "delivery", "keys"}, auth...)...); code != 0 ||
		!strings.Contains(out, "BEGIN PUBLIC KEY") || !strings.Contains(out, "seal key") {
		t.Fatalf("keys: %d %s %s", code, out, e)
	}
}

// registerFieldDevices registers each id as a field device with a fresh
// key (a delivery's device must be a registered field device of the realm).
func registerFieldDevices(t *testing.T, env, auth []string, ids ...string) {
	t.Helper()
	for _, dev := range ids {
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
}
