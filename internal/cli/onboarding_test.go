package cli_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/device"
	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/proctest"
)

// TestServeDeviceListener: the real binary serves the device listener
// (--device-addr), exports the device root, and refuses enrolment of a
// serial nobody vouched for with no_vouch (exit 3); the admin mirrors
// answer. The whole story is internal/e2e's TestOnboardingStory.
func TestServeDeviceListener(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	ready, devReady := filepath.Join(tmp, "ready"), filepath.Join(tmp, "device-ready")
	srv := exec.Command(outpostBin, "serve", "--data", data, "--listen", "127.0.0.1:0", "--plaintext", "--dev-insecure-unsealed",
		"--ready-file", ready, "--device-addr", "127.0.0.1:0", "--device-ready-file", devReady)
	p := proctest.Start(t, srv)
	url := p.WaitFile(t, ready)
	devURL := p.WaitFile(t, devReady)
	root := filepath.Join(tmp, "root.pem")
	mustRun(t, nil, "ca", "export-root", "--data", data, "--out", root)
	if r := mustRun(t, nil, "ca", "init", "--data", data); !strings.Contains(r.stdout, "device CA exists") {
		t.Errorf("ca init on a served directory: %s", r)
	}
	keyFile := filepath.Join(tmp, "device.key")
	k, err := device.GenerateKey(device.P256)
	if err != nil {
		t.Fatal(err)
	}
	if err := device.WriteKeyFile(keyFile, k); err != nil {
		t.Fatal(err)
	}
	r := expectCode(t, cli.ExitRefused, nil, "device", "enrol", "--server", devURL, "--root", root, "--key", keyFile, "--serial", "SN-1")
	if !strings.Contains(r.stderr, "no_vouch") || !strings.Contains(r.stderr, "outpost field vouch") {
		t.Errorf("enrol without a vouch: %s", r)
	}
	env := []string{"OUTPOST_SERVER=" + url}
	auth := []string{"--token-file", filepath.Join(data, "admin.token")}
	mustRun(t, env, append([]string{"admin", "onboarded", "list"}, auth...)...)
	mustRun(t, env, append([]string{"admin", "cert", "list", "--device", "SN-1"}, auth...)...)
	expectCode(t, cli.ExitError, env, append([]string{"admin", "onboarded", "revoke", "SN-1"}, auth...)...)
}
