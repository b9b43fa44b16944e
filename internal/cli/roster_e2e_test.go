package cli_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/cli"
)

// TestVouchStory: a device made at the factory, vouched for offline from a
// photo of its label, synced later, then managed with 'outpost admin
// roster', through the real binary against a real server.
func TestVouchStory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	url, data := startServe(t)
	tmp := t.TempDir()
	env := []string{"OUTPOST_SERVER=" + url}
	auth := []string{"--token-file", filepath.Join(data, "admin.token")}
	admin := func(args ...string) runResult {
		t.Helper()
		return mustRun(t, env, append(append([]string{"admin"}, args...), auth...)...)
	}
	mustRun(t, nil, "keys", "export-public", "--data", data, "--out", filepath.Join(tmp, "server.pub"))

	// The factory: two devices and their labels. The order names one of them.
	mustRun(t, nil, "device", "init", "--serial", "SN-1", "--model", "gw-100", "--dir", filepath.Join(tmp, "sn-1"))
	mustRun(t, nil, "device", "init", "--serial", "SN-2", "--model", "gw-100", "--dir", filepath.Join(tmp, "sn-2"), "--ed25519")
	order := writeFile(t, tmp, "po-7.txt", "# purchase order 7\nSN-1\n\nSN-1  # twice\n")
	if r := admin("roster", "expect", "--file", order, "--order", "PO-7"); !strings.Contains(r.stdout, "1 serials submitted, 1 newly expected") {
		t.Fatalf("expect: %s", r)
	}
	expectCode(t, cli.ExitUsage, env, append([]string{"admin", "roster", "expect", "--file", writeFile(t, tmp, "bad.txt", "SN 1\n")}, auth...)...)

	// The installer's phone, registered and allowed to vouch; the vouches are made offline.
	fdir := filepath.Join(tmp, "phone")
	mustRun(t, nil, "field", "init", "--data", fdir, "--server-key", filepath.Join(tmp, "server.pub"), "--device-id", "phone-1")
	admin("device", "register", "--id", "phone-1", "--public-key", filepath.Join(fdir, "device.pub"))
	admin("roster", "allow", "--device", "phone-1")
	mustRun(t, nil, "field", "vouch", "--data", fdir, "--scan", filepath.Join(tmp, "sn-1", "label.png"), "--site", "cab-1", "--location", "52.1,4.3")
	mustRun(t, nil, "field", "vouch", "--data", fdir, "--scan", filepath.Join(tmp, "sn-2", "label.png"), "--site", "cab-2")
	mustRun(t, nil, "field", "sync", "--data", fdir, "--server", url)
	mustRun(t, nil, "field", "sync", "--data", fdir) // again: nothing new

	r := admin("roster", "list")
	if !strings.Contains(r.stdout, "SN-1") || !strings.Contains(r.stdout, "live") || !strings.Contains(r.stdout, "held") {
		t.Fatalf("roster list:\n%s", r)
	}
	var e struct {
		State   string `json:"state"`
		Vouches []struct {
			ID, Site, State string
		} `json:"vouches"`
	}
	if err := json.Unmarshal([]byte(admin("roster", "get", "SN-2", "--json").stdout), &e); err != nil || e.State != "held" || len(e.Vouches) != 1 {
		t.Fatalf("get SN-2: %v %+v", err, e)
	}
	if r := admin("roster", "approve", "SN-2", "--vouch", e.Vouches[0].ID); !strings.Contains(r.stdout, "serial SN-2: live") {
		t.Fatalf("approve:\n%s", r)
	}
	if r := admin("roster", "withdraw", "SN-1", "--reason", "stolen"); !strings.Contains(r.stdout, "serial SN-1: withdrawn") {
		t.Fatalf("withdraw:\n%s", r)
	}
	if r := expectCode(t, cli.ExitError, env, append([]string{"admin", "roster", "get", "SN-404"}, auth...)...); !strings.Contains(r.stderr, "no_vouch") {
		t.Fatalf("get of an unknown serial:\n%s", r)
	}
	audit := admin("audit", "list", "--json").stdout
	for _, kind := range []string{"roster.expect", "roster.voucher", "roster.vouch", "roster.approve", "roster.withdraw", "offline.vouch"} {
		if !strings.Contains(audit, kind) {
			t.Errorf("the audit log has no %s", kind)
		}
	}
}
