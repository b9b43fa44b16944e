package cli_test

// These tests run the real outpost binary, built once by TestMain (the only
// TestMain of this package: other test files here may use outpostBin and
// runOutpost).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/cli"
	"github.com/outpost-auth/outpost/internal/proctest"
)

// outpostBin is the path of the binary TestMain built; testRoot is a
// directory TestMain removes at the end, for files shared between tests.
var outpostBin, testRoot string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "outpost-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	testRoot = dir
	if outpostBin, err = proctest.BuildOutpost(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// runResult is what one run of the binary did.
type runResult struct {
	stdout, stderr string
	code           int
}

func (r runResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runOutpost runs the binary with args and env (KEY=VALUE) on top of an
// environment without OUTPOST_* variables, with an empty, non-terminal stdin.
func runOutpost(t testing.TB, env []string, args ...string) runResult {
	t.Helper()
	cmd := exec.Command(outpostBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OUTPOST_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = strings.NewReader("")
	err := cmd.Run()
	r := runResult{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running outpost %v: %v", args, err)
	}
	return r
}

// mustRun runs the binary and fails the test unless it exits 0.
func mustRun(t testing.TB, env []string, args ...string) runResult {
	t.Helper()
	r := runOutpost(t, env, args...)
	if r.code != 0 {
		t.Fatalf("outpost %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// expectCode runs the binary and fails the test unless it exits with code.
func expectCode(t testing.TB, code int, env []string, args ...string) runResult {
	t.Helper()
	r := runOutpost(t, env, args...)
	if r.code != code {
		t.Fatalf("outpost %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	return r
}

// notLeaked fails if any secret appears in the output of r.
func notLeaked(t testing.TB, r runResult, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(r.stdout, s) || strings.Contains(r.stderr, s) {
			t.Fatalf("secret %q appears in the output:\n%s", s, r)
		}
	}
}

const masterPass = "master passphrase for tests"

// writeFile writes content to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// readFile returns the content of path, failing the test when it cannot be read.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var kidRE = regexp.MustCompile(`ed25519:[0-9a-f]{16}`)

func TestInitWithPassphraseFile(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	pf := writeFile(t, tmp, "pass", masterPass+"\n")
	r := mustRun(t, nil, "init", "--data", data, "--passphrase-file", pf)
	notLeaked(t, r, masterPass)
	if !kidRE.MatchString(r.stdout) || !strings.Contains(r.stdout, "outpost keys export-public") {
		t.Errorf("init does not name the signing key and the next step:\n%s", r)
	}
	for path, want := range map[string]os.FileMode{data: 0o700, filepath.Join(data, "master.key"): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s has mode %o, want %o", path, st.Mode().Perm(), want)
		}
	}
	key := readFile(t, filepath.Join(data, "master.key"))
	if bytes.Contains(key, []byte(masterPass)) || !bytes.Contains(key, []byte(`"argon2id"`)) {
		t.Fatalf("master.key is not sealed with argon2id:\n%s", key)
	}
	// The trailing newline of the file was not part of the passphrase:
	// the same passphrase from the environment opens the key.
	mustRun(t, []string{"OUTPOST_PASSPHRASE=" + masterPass}, "keys", "export-public", "--data", data)
}

func TestInitWithPassphraseEnv(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	env := []string{"OUTPOST_PASSPHRASE=" + masterPass}
	r := mustRun(t, env, "init", "--data", data, "--json")
	notLeaked(t, r, masterPass)
	var out struct {
		Data   string `json:"data"`
		KeyID  string `json:"signing_key_id"`
		Sealed bool   `json:"sealed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("init --json: %v\n%s", err, r)
	}
	if out.Data != data || !out.Sealed || !kidRE.MatchString(out.KeyID) {
		t.Fatalf("init --json = %+v", out)
	}
	// The file flag wins over the environment.
	pf := writeFile(t, t.TempDir(), "pass", masterPass)
	wrongEnv := []string{"OUTPOST_PASSPHRASE=not the passphrase"}
	r = mustRun(t, wrongEnv, "keys", "export-public", "--data", data, "--passphrase-file", pf, "--json")
	if !strings.Contains(r.stdout, out.KeyID) {
		t.Fatalf("export-public names another key than init did:\n%s", r)
	}
	r = expectCode(t, cli.ExitRefused, wrongEnv, "keys", "export-public", "--data", data)
	if !strings.Contains(r.stderr, "wrong passphrase") || !strings.Contains(r.stderr, "OUTPOST_PASSPHRASE") {
		t.Errorf("wrong passphrase message does not say what to check:\n%s", r)
	}
	notLeaked(t, r, "not the passphrase", masterPass)
}

func TestInitRefusesToOverwrite(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	pf := writeFile(t, tmp, "pass", masterPass)
	mustRun(t, nil, "init", "--data", data, "--passphrase-file", pf)
	before := readFile(t, filepath.Join(data, "master.key"))
	for _, args := range [][]string{
		{"init", "--data", data, "--passphrase-file", pf},
		{"init", "--data", data, "--dev-insecure-unsealed"},
		// Refused before any passphrase is asked for.
		{"init", "--data", data},
	} {
		r := expectCode(t, cli.ExitError, nil, args...)
		if !strings.Contains(r.stderr, "refusing to overwrite") {
			t.Errorf("%v: message does not say why:\n%s", args, r)
		}
	}
	after := readFile(t, filepath.Join(data, "master.key"))
	if !bytes.Equal(before, after) {
		t.Fatal("master.key changed")
	}
}

func TestInitPassphraseProblems(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "data")
	// No passphrase source and no terminal: a clear error, nothing created.
	r := expectCode(t, cli.ExitError, nil, "init", "--data", data)
	if !strings.Contains(r.stderr, "--passphrase-file") || !strings.Contains(r.stderr, "OUTPOST_PASSPHRASE") {
		t.Errorf("message does not name the passphrase sources:\n%s", r)
	}
	short := writeFile(t, tmp, "short", "1234567")
	r = expectCode(t, cli.ExitError, nil, "init", "--data", data, "--passphrase-file", short)
	if !strings.Contains(r.stderr, "at least 8") {
		t.Errorf("weak passphrase message:\n%s", r)
	}
	empty := writeFile(t, tmp, "empty", "\n")
	r = expectCode(t, cli.ExitError, nil, "init", "--data", data, "--passphrase-file", empty)
	if !strings.Contains(r.stderr, "empty") {
		t.Errorf("empty passphrase file message:\n%s", r)
	}
	r = expectCode(t, cli.ExitError, nil, "init", "--data", data, "--passphrase-file", filepath.Join(tmp, "missing"))
	if !strings.Contains(r.stderr, "passphrase file") {
		t.Errorf("missing passphrase file message:\n%s", r)
	}
	if _, err := os.Stat(data); err == nil {
		t.Fatal("a failed init created the data directory")
	}
	// --data is required.
	expectCode(t, cli.ExitUsage, nil, "init", "--passphrase-file", short)
}

func TestInitDevInsecureUnsealed(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	r := mustRun(t, nil, "init", "--data", data, "--dev-insecure-unsealed")
	if !strings.Contains(r.stderr, "WARNING") || !strings.Contains(r.stderr, "UNSEALED") || !strings.Contains(r.stderr, "demo") {
		t.Fatalf("--dev-insecure-unsealed does not warn loudly on stderr:\n%s", r)
	}
	if strings.Contains(r.stdout, "WARNING") {
		t.Error("the warning went to stdout, where scripts read data")
	}
	key := readFile(t, filepath.Join(data, "master.key"))
	if !bytes.Contains(key, []byte(`"kdf": "none"`)) {
		t.Fatalf("master.key does not say it is unsealed:\n%s", key)
	}
	// Every later use warns again and needs no passphrase.
	r = mustRun(t, nil, "keys", "export-public", "--data", data)
	if !strings.Contains(r.stderr, "UNSEALED") {
		t.Fatalf("opening an unsealed key did not warn:\n%s", r)
	}
	if !strings.Contains(r.stdout, "BEGIN PUBLIC KEY") {
		t.Fatalf("no key on stdout:\n%s", r)
	}
	// Asking for both is a usage error.
	pf := writeFile(t, t.TempDir(), "pass", masterPass)
	expectCode(t, cli.ExitUsage, nil, "init", "--data", filepath.Join(t.TempDir(), "d2"), "--dev-insecure-unsealed", "--passphrase-file", pf)
}

func TestVersion(t *testing.T) {
	r := mustRun(t, nil, "version", "--json")
	var v map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("version --json is not JSON: %v\n%s", err, r)
	}
	if v["version"] == "" || !strings.HasPrefix(v["go"], "go1.") {
		t.Fatalf("version --json = %v", v)
	}
	r = mustRun(t, nil, "version")
	if !strings.HasPrefix(r.stdout, "outpost "+v["version"]) {
		t.Fatalf("version = %q", r.stdout)
	}
	expectCode(t, cli.ExitUsage, nil, "version", "--no-such-flag")
	expectCode(t, cli.ExitUsage, nil, "version", "extra-arg")
}

// subcommands lists the "Available Commands" of a --help page.
func subcommands(help string) []string {
	var out []string
	in := false
	for _, line := range strings.Split(help, "\n") {
		switch {
		case strings.HasPrefix(line, "Available Commands:"):
			in = true
		case in && strings.TrimSpace(line) == "":
			in = false
		case in:
			if f := strings.Fields(line); len(f) > 0 {
				out = append(out, f[0])
			}
		}
	}
	return out
}

// Every command, including those other files register, answers --help with
// a description and at least one example (the house style).
func TestHelpOnEveryCommand(t *testing.T) {
	queue := [][]string{{}}
	seen := 0
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		name := strings.Join(append([]string{"outpost"}, path...), " ")
		r := runOutpost(t, nil, append(slices.Clone(path), "--help")...)
		if r.code != 0 {
			t.Errorf("%s --help: %s", name, r)
			continue
		}
		seen++
		if !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%s --help has no usage:\n%s", name, r.stdout)
		}
		if !strings.Contains(r.stdout, "Examples:") {
			t.Errorf("%s --help has no example (set cobra.Command.Example)", name)
		}
		for _, sub := range subcommands(r.stdout) {
			if sub == "help" || sub == "completion" {
				continue // cobra's own
			}
			queue = append(queue, append(slices.Clone(path), sub))
		}
	}
	if seen < 10 {
		t.Fatalf("only %d commands found", seen)
	}
	t.Logf("%d commands have --help with an example", seen)
}

func TestUsageErrors(t *testing.T) {
	r := expectCode(t, cli.ExitUsage, nil, "init", "--data")
	if !strings.Contains(r.stderr, "--help") {
		t.Errorf("usage error does not point to --help:\n%s", r)
	}
	expectCode(t, cli.ExitUsage, nil, "keys", "export-public", "--data", t.TempDir(), "--epoch", "-1")
	expectCode(t, cli.ExitUsage, nil, "no-such-command")
}
