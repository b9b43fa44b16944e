package cli_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/proctest"
)

// startServe runs 'outpost serve' on a fresh plaintext loopback port and
// returns its URL and data directory.
func startServe(t *testing.T) (string, string) {
	t.Helper()
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	ready := filepath.Join(tmp, "ready")
	srv := exec.Command(outpostBin, "serve", "--data", data, "--listen", "127.0.0.1:0", "--plaintext", "--dev-insecure-unsealed", "--ready-file", ready)
	return proctest.Start(t, srv).WaitFile(t, ready), data
}

// TestFieldSyncCommands: registration, sync both ways, the air-gapped file,
// enrolment with a code, login, and revocation, through the real binary
// against a real server.
// It is long on purpose: one story whose steps depend on the ones before.
func TestFieldSyncCommands(t *testing.T) {
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
	adminCode := func(code int, args ...string) runResult {
		t.Helper()
		return expectCode(t, code, env, append(append([]string{"admin"}, args...), auth...)...)
	}
	admin("user", "add", "alice")
	var tok struct {
		ID  string `json:"id"`
		URI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal([]byte(admin("token", "add", "--user", "alice", "--type", "hotp", "--json").stdout), &tok); err != nil {
		t.Fatal(err)
	}
	codes := uriCodes(t, tok.URI, 0, 1, 2, 3, 4, 5, 6, 7)
	admin("token", "confirm", "--user", "alice", "--token", tok.ID, "--code", codes[0])
	mustRun(t, nil, "keys", "export-public", "--data", data, "--out", filepath.Join(tmp, "server.pub"))

	// A device registered by the administrator with its device.pub.
	fdir := filepath.Join(tmp, "field")
	mustRun(t, nil, "field", "init", "--data", fdir, "--server-key", filepath.Join(tmp, "server.pub"), "--device-id", "van-7", "--delay", "0")
	expectCode(t, cli.ExitRefused, nil, "field", "sync", "--data", fdir, "--server", url) // not registered yet
	admin("device", "register", "--id", "van-7", "--public-key", filepath.Join(fdir, "device.pub"))
	bfile := filepath.Join(tmp, "alice.bundle")
	admin("offline", "bundle", "--user", "alice", "--device", "van-7", "--count", "6", "--override-floor", "--out", bfile)
	mustRun(t, nil, "field", "import", "--data", fdir, bfile)

	// Offline use, then sync: refused online.
	mustRun(t, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", codes[2])
	r := mustRun(t, nil, "field", "sync", "--data", fdir) // the server URL was remembered
	if !strings.Contains(r.stdout, "Synced") {
		t.Fatalf("sync output:\n%s", r)
	}
	adminCode(cli.ExitRefused, "verify", "--user", "alice", "--code", codes[2])
	// Online use, then sync: refused offline.
	admin("verify", "--user", "alice", "--code", codes[4])
	r = mustRun(t, nil, "field", "sync", "--data", fdir, "--json")
	var rep struct {
		Advanced []map[string]string `json:"advanced"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Advanced) != 1 {
		t.Fatalf("sync --json: %v\n%s", err, r)
	}
	expectCode(t, cli.ExitRefused, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", codes[4])
	mustRun(t, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", codes[5])

	// The air-gapped path.
	file, answer := filepath.Join(tmp, "van-7.sync"), filepath.Join(tmp, "van-7.answer")
	mustRun(t, nil, "field", "export-sync", "--data", fdir, file)
	expectCode(t, cli.ExitError, nil, "field", "export-sync", "--data", fdir, file) // never overwritten
	admin("import-sync", file, "--out", answer)
	mustRun(t, nil, "field", "apply-sync", "--data", fdir, answer)
	expectCode(t, cli.ExitRefused, nil, "field", "apply-sync", "--data", fdir, answer) // already applied
	adminCode(cli.ExitRefused, "verify", "--user", "alice", "--code", codes[5])
	// A tampered file and a truncated one.
	up := readFile(t, file)
	writeFile(t, tmp, "cut.sync", string(up[:len(up)/2]))
	adminCode(cli.ExitTampered, "import-sync", filepath.Join(tmp, "cut.sync"), "--out", filepath.Join(tmp, "cut.answer"))
	writeFile(t, tmp, "garbage.answer", "{}")
	expectCode(t, cli.ExitTampered, nil, "field", "apply-sync", "--data", fdir, filepath.Join(tmp, "garbage.answer"))

	// A device that registers itself with a one-time code.
	var enrol struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal([]byte(admin("device", "enrol-code", "--id", "phone-9", "--ttl", "10m", "--json").stdout), &enrol); err != nil || enrol.Code == "" {
		t.Fatalf("enrol-code: %v", err)
	}
	pdir := filepath.Join(tmp, "phone")
	mustRun(t, nil, "field", "init", "--data", pdir, "--server-key", filepath.Join(tmp, "server.pub"), "--device-id", "phone-9")
	expectCode(t, cli.ExitRefused, nil, "field", "enrol", "--data", pdir, "--server", url, "--code", "AAAA-BBBB")
	r = mustRun(t, nil, "field", "enrol", "--data", pdir, "--server", url, "--code", enrol.Code, "--json")
	notLeaked(t, r, enrol.Code)
	var enrolled struct {
		Device   string `json:"device"`
		Enrolled bool   `json:"enrolled"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &enrolled); err != nil || enrolled.Device != "phone-9" || !enrolled.Enrolled {
		t.Fatalf("field enrol --json: %v\n%s", err, r)
	}
	mustRun(t, nil, "field", "sync", "--data", pdir)
	if out := admin("device", "list").stdout; !strings.Contains(out, "phone-9") || !strings.Contains(out, "van-7") {
		t.Fatalf("device list:\n%s", out)
	}

	// Login: an online PIN + OTP login brings a PIN bundle (HOTP: the next counters).
	admin("user", "add", "bob")
	var btok struct {
		ID  string `json:"id"`
		URI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal([]byte(admin("token", "add", "--user", "bob", "--type", "hotp", "--json").stdout), &btok); err != nil {
		t.Fatal(err)
	}
	bcodes := uriCodes(t, btok.URI, 0, 1, 2, 3, 4)
	admin("token", "confirm", "--user", "bob", "--token", btok.ID, "--code", bcodes[0])
	pin := writeFile(t, tmp, "pin", "2468")
	admin("user", "pin", "bob", "--pin-file", pin)
	var client struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(admin("api-client", "add", "--name", "field", "--scope", "verifier", "--json").stdout), &client); err != nil {
		t.Fatal(err)
	}
	vtok := writeFile(t, tmp, "verifier.token", client.Token)
	r = mustRun(t, nil, "field", "login", "--data", fdir, "--user", "bob", "--code", bcodes[1], "--pin-file", pin, "--token-file", vtok, "--count", "4")
	if !strings.Contains(r.stdout, "PIN bundle") {
		t.Fatalf("login:\n%s", r)
	}
	notLeaked(t, r, client.Token)
	mustRun(t, nil, "field", "verify", "--data", fdir, "--user", "bob", "--code", bcodes[3], "--pin", "2468")

	// Revocation: the device's next sync is refused.
	r = admin("device", "revoke", "van-7", "--burn-hotp")
	if !strings.Contains(r.stdout, "revoked") || !strings.Contains(r.stdout, "online counter moved past it") {
		t.Fatalf("revoke:\n%s", r)
	}
	expectCode(t, cli.ExitRefused, nil, "field", "sync", "--data", fdir)
}
