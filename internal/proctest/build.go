package proctest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildOutpost builds this module's ./cmd/outpost into dir with the extra
// go build flags (such as "-race") and returns the binary's path: the
// TestMain of a package whose tests start outpost processes calls it once.
func BuildOutpost(dir string, flags ...string) (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	bin := filepath.Join(dir, "outpost")
	build := exec.Command("go", append(append([]string{"build"}, flags...), "-o", bin, "./cmd/outpost")...)
	build.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building outpost: %w\n%s", err, out)
	}
	return bin, nil
}
