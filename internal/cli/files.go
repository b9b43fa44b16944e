package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/outpost-auth/outpost/internal/datadir"
)

// writeNew writes data to path (mode 0600), which must not exist yet.
func writeNew(path string, data []byte) error {
	if err := datadir.WriteFileExclusive(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w (it is never overwritten)", path, err)
	}
	return nil
}

// writeNewAs is writeNew for a secret file the command names (what) and
// whose path came from --flag, which the error tells the user to change.
func writeNewAs(path string, data []byte, what, flag string) error {
	if err := datadir.WriteFileExclusive(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w (it is never overwritten; remove it or choose another --%s)", what, err, flag)
	}
	return nil
}

// pinFromFile sets *pin from pinFile (--pin-file) when one is given, dropping
// a trailing newline; --pin and --pin-file exclude each other.
func pinFromFile(pin *string, pinFile string) error {
	if pinFile == "" {
		return nil
	}
	if *pin != "" {
		return usageError{errors.New("use --pin or --pin-file, not both")}
	}
	b, err := datadir.ReadFileLimit(pinFile, 4096)
	if err != nil {
		return fmt.Errorf("reading --pin-file: %w", err)
	}
	*pin = string(trimNewline(b))
	return nil
}

// trimNewline drops the line ending a file read for one value ends with.
func trimNewline(b []byte) []byte { return bytes.TrimRight(b, "\r\n") }

// readServerPIN reads a PIN file whose PIN is sent to the server's API
// (surrounding white space dropped).
func readServerPIN(path string) (string, error) {
	p, err := datadir.ReadFileLimit(path, 64)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(p)), nil
}

// apiToken returns the API token: from tokenFile (--token-file) when given,
// else from $TokenEnv; "" when neither has one.
func apiToken(tokenFile string) (string, error) {
	if tokenFile == "" {
		return os.Getenv(TokenEnv), nil
	}
	b, err := datadir.ReadFileLimit(tokenFile, 4096)
	if err != nil {
		return "", fmt.Errorf("reading --token-file: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}
