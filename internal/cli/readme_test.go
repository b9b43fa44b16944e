package cli_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/proctest"
)

// readmeBlocks returns the ```sh blocks of the README's "Five-minute tour"
// section, in order.
func readmeBlocks(t *testing.T) []string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	start := strings.Index(s, "## Five-minute tour")
	if start < 0 {
		t.Fatal("README has no \"## Five-minute tour\" section")
	}
	s = s[start+3:]
	if end := strings.Index(s, "\n## "); end >= 0 {
		s = s[:end]
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(s, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// TestReadmeTour runs the README's tour as a new user would: block 1 (the
// server) in the background, the other blocks one after the other in one
// bash with -e, in an empty directory holding the binary as ./outpost. The
// only changes: the `go build` line is dropped (the binary is built), and
// port 8443 becomes a free one.
func TestReadmeTour(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole README tour")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") != "" {
			t.Fatal("curl is required (OUTPOST_REQUIRE_INTEROP is set)")
		}
		t.Skip("curl not installed")
	}
	blocks := readmeBlocks(t)
	if len(blocks) < 3 {
		t.Fatalf("the tour has %d sh blocks, want the server block and at least two more", len(blocks))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	edit := func(b string) string {
		var keep []string
		for _, l := range strings.Split(b, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "go build ") {
				keep = append(keep, l)
			}
		}
		return strings.ReplaceAll(strings.Join(keep, "\n"), "8443", port)
	}
	dir := t.TempDir()
	if err := os.Symlink(outpostBin, filepath.Join(dir, "outpost")); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LANG=C"}

	// Block 1: the server, until the test ends.
	first := strings.TrimSpace(edit(blocks[0]))
	serve := lastCommand(first)
	srv := exec.Command("bash", "-euo", "pipefail", "-c", "exec "+strings.TrimSpace(serve))
	setup := strings.TrimSuffix(first, serve)
	if out, err := runBash(dir, env, setup); err != nil {
		t.Fatalf("block 1 before serve: %v\n%s", err, out)
	}
	srv.Dir, srv.Env = dir, env
	server := proctest.Start(t, srv)
	server.WaitFor(t, "listening on port "+port, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	// The other blocks, as one shell session.
	var script strings.Builder
	for _, b := range blocks[1:] {
		script.WriteString(edit(b))
		script.WriteString("\n")
	}
	out, err := runBash(dir, env, script.String())
	if err != nil {
		t.Fatalf("the tour failed: %v\n%s\nserver log:\n%s", err, out, server.Logs.String())
	}
	// What the tour says happens, happens.
	for _, want := range []string{
		"created user alice",
		"accepted (token",
		"refused, exit 3", // step 4: the same code twice
		`"token":`,        // step 5: curl's JSON answer
		"audit log intact",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the tour's output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "refused, exit 3"); n != 2 {
		t.Errorf("%d refusals with exit 3, want 2 (steps 4 and 9):\n%s", n, out)
	}
	// Step 1's promise: the databases are private.
	for _, f := range []string{"outpost-data/outpost.db", "field/field.db"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		} else if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", f, m)
		}
	}
}

// lastCommand is the last non-comment line of a block.
func lastCommand(b string) string {
	lines := strings.Split(strings.TrimSpace(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "#") {
			return lines[i]
		}
	}
	return ""
}

func runBash(dir string, env []string, script string) (string, error) {
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
