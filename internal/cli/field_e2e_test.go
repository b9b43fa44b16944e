package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/proctest"
)

// pyotpAt returns the codes of an otpauth URI at HOTP counters, from the real pyotp.
func pyotpAt(t *testing.T, uri string, counters ...uint64) []string {
	t.Helper()
	args := []string{"-c", "import sys, pyotp\nt = pyotp.parse_uri(sys.argv[1])\nfor c in sys.argv[2:]:\n    print(t.at(int(c)))", uri}
	for _, c := range counters {
		args = append(args, strconv.FormatUint(c, 10))
	}
	out, err := exec.Command("/usr/bin/python3", args...).Output()
	if err != nil {
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatalf("pyotp: %v (apt-get install python3-pyotp)", err)
		}
		t.Skipf("pyotp not available: %v", err)
	}
	codes := strings.Fields(string(out))
	if len(codes) != len(counters) {
		t.Fatalf("pyotp printed %q for %d counters", out, len(counters))
	}
	return codes
}

// TestFieldEndToEndWithServer: a real server issues a bundle through its API
// and CLI, a field store imports it, and pyotp's codes verify offline once.
// It is the interop test of the offline path, so it keeps pyotp as the
// authenticator that reads the server's otpauth URI; TestFieldSyncCommands
// drives the same commands with codes from the otp package.
func TestFieldEndToEndWithServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	ready := filepath.Join(tmp, "ready")
	srv := exec.Command(outpostBin, "serve", "--data", data, "--listen", "127.0.0.1:0", "--plaintext", "--dev-insecure-unsealed", "--ready-file", ready)
	url := proctest.Start(t, srv).WaitFile(t, ready)
	env := []string{"OUTPOST_SERVER=" + url}
	auth := []string{"--token-file", filepath.Join(data, "admin.token")}
	admin := func(args ...string) runResult {
		return mustRun(t, env, append(append([]string{"admin"}, args...), auth...)...)
	}

	admin("user", "add", "alice")
	var tok struct {
		ID  string `json:"id"`
		URI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal([]byte(admin("token", "add", "--user", "alice", "--type", "hotp", "--json").stdout), &tok); err != nil {
		t.Fatal(err)
	}
	admin("token", "confirm", "--user", "alice", "--token", tok.ID, "--code", pyotpAt(t, tok.URI, 0)[0])
	door := writeFile(t, tmp, "door", "4711")
	bfile := filepath.Join(tmp, "alice.bundle")
	admin("offline", "bundle", "--user", "alice", "--device", "dev-7", "--count", "5", "--secret", "door="+door, "--override-floor", "--out", bfile)
	mustRun(t, nil, "keys", "export-public", "--data", data, "--out", filepath.Join(tmp, "server.pub"))

	fdir := filepath.Join(tmp, "field")
	// A 4 s delay after a failure: long enough that the next process starts
	// within it on a loaded machine.
	mustRun(t, nil, "field", "init", "--data", fdir, "--server-key", filepath.Join(tmp, "server.pub"), "--device-id", "dev-7", "--delay", "4s")
	mustRun(t, nil, "field", "import", "--data", fdir, bfile)
	var st struct {
		Tokens []struct {
			First, Last uint64
			Entries     int
		} `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, nil, "field", "status", "--data", fdir, "--json").stdout), &st); err != nil || len(st.Tokens) != 1 || st.Tokens[0].Entries != 5 {
		t.Fatalf("status: %v %+v", err, st)
	}
	first := st.Tokens[0].First
	if first < 1 {
		t.Fatalf("the bundle starts at counter %d, before the code used online", first)
	}
	codes := pyotpAt(t, tok.URI, first, first+1, first+2)
	mustRun(t, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", codes[0])
	expectCode(t, cli.ExitRefused, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", codes[0])
	// The replay was a failure: the next attempt waits 4 s.
	failed := time.Now()
	expectCode(t, cli.ExitLocked, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", codes[2])
	time.Sleep(time.Until(failed.Add(4100 * time.Millisecond)))
	r := mustRun(t, nil, "field", "unlock", "--data", fdir, "--user", "alice", "--code", codes[2], "--secret", "door")
	if strings.TrimSpace(r.stdout) != "4711" {
		t.Fatalf("released secret %q", r.stdout)
	}
	// The code skipped over (first+1) is now behind the last used counter.
	expectCode(t, cli.ExitRefused, nil, "field", "verify", "--data", fdir, "--user", "alice", "--code", codes[1])
	// A bundle for another device is refused by this one.
	other := filepath.Join(tmp, "other.bundle")
	admin("offline", "bundle", "--user", "alice", "--device", "dev-8", "--count", "2", "--override-floor", "--out", other)
	expectCode(t, cli.ExitRefused, nil, "field", "import", "--data", fdir, other)
}
