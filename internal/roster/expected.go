package roster

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/outpost-auth/outpost/internal/ident"
)

// MaxExpectedFile bounds a file of expected serials.
const MaxExpectedFile = 1 << 20

// ParseExpected reads a file of expected serials (a purchase order's): one
// serial per line; blank lines, and everything after a '#', are ignored;
// spaces around a serial are dropped. Each serial follows the label's rule
// (1 to 64 of A-Z a-z 0-9 . _ -). A repeated serial counts once. It
// returns the serials in file order, or an error (wrapping ErrInvalid)
// naming the first bad line; at most MaxExpect serials and
// MaxExpectedFile bytes.
func ParseExpected(data []byte) ([]string, error) {
	if len(data) > MaxExpectedFile {
		return nil, fmt.Errorf("%w: the file has %d bytes, at most %d: split it", ErrInvalid, len(data), MaxExpectedFile)
	}
	var out []string
	seen := map[string]bool{}
	for i, line := range bytes.Split(data, []byte("\n")) {
		s := string(line)
		if j := strings.IndexByte(s, '#'); j >= 0 {
			s = s[:j]
		}
		s = strings.TrimSpace(s)
		if s == "" || seen[s] {
			continue
		}
		if err := ident.CheckName("serial", s); err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrInvalid, i+1, err)
		}
		if len(out) == MaxExpect {
			return nil, fmt.Errorf("%w: more than %d serials: split the file", ErrInvalid, MaxExpect)
		}
		seen[s] = true
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no serial in the file (one per line)", ErrInvalid)
	}
	return out, nil
}
