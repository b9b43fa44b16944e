package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/proctest"
)

// TestOnboardingStory is issue 12's story with real processes, on each
// engine: a server with a device listener; a device made at the factory
// (`outpost device init`: key and PNG label); an installer's field device,
// allowed to vouch, that scans the label image while the server is down
// and syncs once it is back; the device's first contact with proof of
// possession, its certificate, whoami over mutual TLS (also with curl
// --cert), renewal; a kill and restart of the server that loses nothing;
// then a withdrawal of the vouch, after which whoami, renew and curl are
// refused at the handshake.
//
// Everything runs on the real clock, as openssl and curl do: renewal after
// expiry within the grace is left to internal/enrol's TestRenewal and
// internal/server's in-process tests, which pin a clock.
func TestOnboardingStory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills servers")
	}
	eachEngine(t, onboardingStory)
}

func onboardingStory(t *testing.T, dsn string) {
	tmp := t.TempDir()
	path := func(name string) string { return filepath.Join(tmp, name) }
	devPort := proctest.FreePort(t)
	devReady := path("device-ready")
	s := &killServer{t: t, dir: path("data"), dsn: dsn, extra: []string{
		"--device-addr", "127.0.0.1:" + strconv.Itoa(devPort), "--device-ready-file", devReady}}
	s.start()
	defer s.stop()
	devURL := waitDeviceURL(t, s, devReady)
	env := []string{"OUTPOST_SERVER=" + s.url}
	auth := []string{"--token-file", filepath.Join(s.dir, "admin.token")}
	run := func(code int, env []string, args ...string) string {
		t.Helper()
		out, errb, got := outpost(t, env, args...)
		if got != code {
			t.Fatalf("outpost %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, out, errb)
		}
		return out + errb
	}
	admin := func(args ...string) string {
		t.Helper()
		return run(0, env, append(append([]string{"admin"}, args...), auth...)...)
	}
	db := []string{"--data", s.dir}
	if dsn != "" {
		db = append(db, "--database", dsn)
	}
	run(0, nil, append([]string{"ca", "export-root", "--out", path("root.pem")}, db...)...)
	run(0, nil, "keys", "export-public", "--data", s.dir, "--out", path("server.pub"))

	// The factory: a key made on the device and its label.
	ddir := path("sn-77")
	run(0, nil, "device", "init", "--serial", "SN-77", "--model", "gw-100", "--dir", ddir)
	key := filepath.Join(ddir, "device.key")
	dev := func(code int, cmd string, extra ...string) string {
		t.Helper()
		return run(code, nil, append([]string{"device", cmd, "--server", devURL, "--root", path("root.pem"), "--key", key}, extra...)...)
	}
	// Before any vouch the server refuses the device and tells what to do.
	if out := dev(3, "enrol", "--serial", "SN-77"); !strings.Contains(out, "no_vouch") {
		t.Fatalf("enrol before the vouch: %s", out)
	}

	// The installer's phone, registered and allowed to vouch.
	fdir := path("phone")
	run(0, nil, "field", "init", "--data", fdir, "--server-key", path("server.pub"), "--device-id", "phone-1")
	admin("device", "register", "--id", "phone-1", "--public-key", filepath.Join(fdir, "device.pub"))
	admin("roster", "allow", "--device", "phone-1")

	// In the field, with the server down: the label image is scanned, the
	// vouch waits in the phone's log, and a sync attempt fails cleanly.
	s.stop()
	run(0, nil, "field", "vouch", "--data", fdir, "--scan", filepath.Join(ddir, "label.png"), "--site", "cab-9", "--location", "52.1,4.3")
	if _, _, code := outpost(t, nil, "field", "sync", "--data", fdir, "--server", s.url); code == 0 {
		t.Fatal("field sync succeeded with the server down")
	}
	s.start()
	devURL = waitDeviceURL(t, s, devReady)
	run(0, nil, "field", "sync", "--data", fdir, "--server", s.url)
	if out := admin("roster", "get", "SN-77"); !strings.Contains(out, "live") {
		t.Fatalf("roster after sync:\n%s", out)
	}

	// First contact: proof of possession bound to this TLS connection.
	if out := dev(0, "enrol", "--serial", "SN-77"); !strings.Contains(out, "enrolled") {
		t.Fatalf("enrol: %s", out)
	}
	// Another key presenting the same serial is refused (and is an incident).
	run(0, nil, "device", "init", "--serial", "SN-77", "--model", "gw-100", "--dir", path("clone"))
	if out := run(3, nil, "device", "enrol", "--server", devURL, "--root", path("root.pem"), "--key", path("clone/device.key"), "--serial", "SN-77"); !strings.Contains(out, "refused") {
		t.Fatalf("a second key for SN-77: %s", out)
	}
	whoami := func() map[string]any {
		t.Helper()
		var who map[string]any
		if err := json.Unmarshal([]byte(dev(0, "whoami", "--json")), &who); err != nil || who["serial"] != "SN-77" {
			t.Fatalf("whoami: %v %v", err, who)
		}
		return who
	}
	first := whoami()
	crt := filepath.Join(ddir, "device.crt")
	curl := haveCurl(t)
	if curl {
		if out, ok := curlWhoami(t, devURL, path("root.pem"), crt, key); !ok || !strings.Contains(out, "SN-77") {
			t.Fatalf("curl --cert whoami was refused: %s", out)
		}
	}
	if out := dev(0, "renew"); !strings.Contains(out, "renewed") {
		t.Fatalf("renew: %s", out)
	}
	if who := whoami(); who["not_after"] == nil {
		t.Fatalf("whoami after renewal: %v (before: %v)", who, first)
	}

	// A kill and restart: the roster, the device and its certificate survive.
	s.kill()
	s.start()
	devURL = waitDeviceURL(t, s, devReady)
	whoami()
	if out := admin("onboarded", "list"); !strings.Contains(out, "SN-77") {
		t.Fatalf("onboarded list after restart:\n%s", out)
	}
	if out := admin("cert", "list", "--device", "SN-77"); strings.Count(out, "SN-77") < 2 {
		t.Fatalf("cert list after restart (want the first and the renewed certificate):\n%s", out)
	}

	// Withdrawal revokes the device: refused at the next handshake.
	admin("roster", "withdraw", "SN-77", "--reason", "stolen from cab-9")
	for _, cmd := range []string{"whoami", "renew"} {
		if _, _, code := outpost(t, nil, "device", cmd, "--server", devURL, "--root", path("root.pem"), "--key", key); code == 0 {
			t.Fatalf("device %s succeeded after the withdrawal", cmd)
		}
	}
	if curl {
		if out, ok := curlWhoami(t, devURL, path("root.pem"), crt, key); ok {
			t.Fatalf("curl --cert whoami after the withdrawal was accepted: %s", out)
		}
	}
	if out := dev(3, "enrol", "--serial", "SN-77"); !strings.Contains(out, "refused") {
		t.Fatalf("enrol again after the withdrawal: %s", out)
	}
	audit := admin("audit", "list", "--json")
	for _, kind := range []string{"offline.vouch", "roster.vouch", "roster.withdraw"} {
		if !strings.Contains(audit, kind) {
			t.Errorf("the audit log has no %s", kind)
		}
	}
}

// waitDeviceURL waits for the device listener's ready file of the server
// just started and returns its URL.
func waitDeviceURL(t *testing.T, s *killServer, file string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(file); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the device listener did not start:\n%s", s.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// haveCurl reports whether curl is installed; without it the curl checks
// are skipped, unless OUTPOST_REQUIRE_INTEROP=1 makes that a failure.
func haveCurl(t *testing.T) bool {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatal("curl is not installed: apt-get install curl (OUTPOST_REQUIRE_INTEROP=1)")
		}
		t.Log("curl is not installed: skipping the curl checks")
		return false
	}
	return true
}

// curlWhoami calls GET /v1/device/whoami with curl --cert and reports
// whether the handshake and the request succeeded, with curl's output.
func curlWhoami(t *testing.T, url, root, crt, key string) (string, bool) {
	t.Helper()
	out, err := exec.Command("curl", "-sS", "--fail-with-body", "--cacert", root, "--cert", crt, "--key", key, url+"/v1/device/whoami").CombinedOutput()
	return string(out), err == nil
}
