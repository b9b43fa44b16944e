package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/cli"
)

// TestExitCodes: one rule for exit codes and --json across commands (README,
// "Exit codes"): usage errors 2, refusals 3, files that fail their integrity
// or size check 5, a file that is not there 1; a group refuses an unknown
// subcommand; --json prints the server's refusal too.
func TestExitCodes(t *testing.T) {
	url, data := startServe(t)
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"OUTPOST_SERVER=" + url, "OUTPOST_TOKEN=" + strings.TrimSpace(string(tok))}
	mustRun(t, env, "admin", "user", "add", "alice")
	dir := t.TempDir()
	garbage := writeFile(t, dir, "garbage.bin", "this is not a signed file\n")
	big := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(big, make([]byte, 64<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "server.pub")
	mustRun(t, []string{"OUTPOST_PASSPHRASE=x"}, "keys", "export-public", "--data", data, "--out", pub)
	fdir := filepath.Join(dir, "field")
	mustRun(t, nil, "field", "init", "--data", fdir, "--server-key", pub, "--device-id", "dev-1")

	for _, tc := range []struct {
		name string
		code int
		args []string
	}{
		{"unknown subcommand of a group", cli.ExitUsage, []string{"admin", "no-such"}},
		{"unknown subcommand of a nested group", cli.ExitUsage, []string{"admin", "user", "no-such"}},
		{"verify without --code", cli.ExitUsage, []string{"admin", "verify", "--user", "alice"}},
		{"verify without --user", cli.ExitUsage, []string{"admin", "verify", "--code", "123456"}},
		{"wrong code", cli.ExitRefused, []string{"admin", "verify", "--user", "alice", "--code", "123456"}},
		{"field import: no such file", cli.ExitError, []string{"field", "import", "--data", fdir, filepath.Join(dir, "missing.bundle")}},
		{"field import: garbage", cli.ExitTampered, []string{"field", "import", "--data", fdir, garbage}},
		{"field import: too large", cli.ExitTampered, []string{"field", "import", "--data", fdir, big}},
		{"site init: garbage", cli.ExitTampered, []string{"site", "init", "--data", filepath.Join(dir, "site"), "--site", "s1", "--server-key", pub, "--passphrase-file", garbage, garbage}},
		{"site init: no such file", cli.ExitError, []string{"site", "init", "--data", filepath.Join(dir, "site"), "--site", "s1", "--server-key", pub, "--passphrase-file", garbage, filepath.Join(dir, "missing.pkg")}},
		{"keys inspect: garbage", cli.ExitTampered, []string{"keys", "inspect", garbage}},
		{"apply-sync: garbage", cli.ExitTampered, []string{"field", "apply-sync", "--data", fdir, garbage}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := expectCode(t, tc.code, env, tc.args...)
			if r.stderr == "" {
				t.Errorf("no message on standard error:\n%s", r)
			}
		})
	}

	// --json: a refusal is printed as JSON on standard output too.
	r := expectCode(t, cli.ExitRefused, env, "admin", "verify", "--user", "alice", "--code", "123456", "--json")
	var refused struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &refused); err != nil || refused.Error.Code != "invalid_code" {
		t.Errorf("verify --json refused: %v\n%s", err, r)
	}
	// Lists print a table for people and JSON with --json.
	r = mustRun(t, env, "admin", "user", "list")
	if !strings.Contains(r.stdout, "ID") || !strings.Contains(r.stdout, "alice") || strings.Contains(r.stdout, "{") {
		t.Errorf("user list is not a table:\n%s", r)
	}
	r = mustRun(t, env, "admin", "user", "list", "--json")
	var users struct{ Users []struct{ ID string } }
	if err := json.Unmarshal([]byte(r.stdout), &users); err != nil || len(users.Users) != 1 {
		t.Errorf("user list --json: %v\n%s", err, r)
	}
	// A group alone prints its help and succeeds.
	if r := mustRun(t, nil, "admin"); !strings.Contains(r.stdout, "Available Commands") {
		t.Errorf("admin alone:\n%s", r)
	}
}
