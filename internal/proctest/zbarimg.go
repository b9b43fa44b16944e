package proctest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Zbarimg reads the QR code in the PNG image png with zbarimg (Debian's
// zbar-tools), the real reader Outpost's QR codes are checked against, and
// returns the text it decoded. Without zbarimg the test is skipped, or fails
// when OUTPOST_REQUIRE_INTEROP=1 (as in .ci/run).
func Zbarimg(t testing.TB, png []byte) string {
	t.Helper()
	bin, err := exec.LookPath("zbarimg")
	if err != nil {
		msg := fmt.Sprintf("zbarimg is not installed (%v): apt-get install zbar-tools", err)
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatal(msg + " (OUTPOST_REQUIRE_INTEROP=1)")
		}
		t.Skip(msg + "; set OUTPOST_REQUIRE_INTEROP=1 to make this a failure")
	}
	path := filepath.Join(t.TempDir(), "code.png")
	if err := os.WriteFile(path, png, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--raw", "-q", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("zbarimg: %v: %s", err, stderr.String())
	}
	return strings.TrimSuffix(string(out), "\n")
}
