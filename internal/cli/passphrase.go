package cli

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"

	"github.com/outpost-auth/outpost/internal/datadir"
	"golang.org/x/term"
)

// PassphraseEnv is the environment variable a passphrase may come from.
const PassphraseEnv = "OUTPOST_PASSPHRASE"

// passphraseSource says where a passphrase comes from, in order: a file flag,
// an environment variable, then an interactive prompt on a terminal.
type passphraseSource struct {
	file   string // flag value; "" when not given
	envVar string // "" to ignore the environment
	prompt string
}

// read returns the passphrase. With confirm, a prompted passphrase is asked
// twice. A trailing newline in a file is dropped.
func (p passphraseSource) read(confirm bool) ([]byte, error) {
	if p.file != "" {
		b, err := datadir.ReadFileLimit(p.file, 4096)
		if err != nil {
			return nil, fmt.Errorf("reading passphrase file: %w", err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return nil, fmt.Errorf("passphrase file %s is empty", p.file)
		}
		return b, nil
	}
	if p.envVar != "" {
		if v := os.Getenv(p.envVar); v != "" {
			return []byte(v), nil
		}
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		hint := "--passphrase-file FILE"
		if p.envVar != "" {
			hint += " or set " + p.envVar
		}
		return nil, errors.New("a passphrase is needed and standard input is not a terminal: use " + hint)
	}
	fmt.Fprint(os.Stderr, p.prompt+": ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return nil, fmt.Errorf("reading passphrase: %w", err)
	}
	if confirm {
		fmt.Fprint(os.Stderr, "Repeat it: ")
		b2, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return nil, fmt.Errorf("reading passphrase: %w", err)
		}
		if subtle.ConstantTimeCompare(b, b2) != 1 {
			return nil, errors.New("the two passphrases differ; nothing was written")
		}
	}
	return b, nil
}
