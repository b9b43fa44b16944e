package ident

import (
	"strings"
	"testing"
)

func TestRules(t *testing.T) {
	tests := []struct {
		rule string
		id   string
		ok   bool
	}{
		{"check", "alice", true},
		{"check", "Zoë Müller", true},
		{"check", strings.Repeat("x", MaxLen), true},
		{"check", "", false},
		{"check", strings.Repeat("x", MaxLen+1), false},
		{"check", "al\nice", false},
		{"check", "al\x7fice", false},
		{"check", "\xff", false},
		{"text", "", true},
		{"text", "Alice Smith", true},
		{"text", strings.Repeat("x", MaxLen+1), false},
		{"text", "a\tb", false},
		{"api", "alice@example.org", true},
		{"api", "dev-7.north_1", true},
		{"api", strings.Repeat("a", MaxAPILen), true},
		{"api", strings.Repeat("a", MaxAPILen+1), false},
		{"api", "", false},
		{"api", "a/b", false},
		{"api", "a b", false},
		{"api", "zoë", false},
		{"tech", "tech-042", true},
		{"tech", "Tech!#~", true},
		{"tech", strings.Repeat("t", MaxTechLen), true},
		{"tech", strings.Repeat("t", MaxTechLen+1), false},
		{"tech", "", false},
		{"tech", "tech 1", false},
		{"tech", "tëch", false},
		{"name", "cab-17", true},
		{"name", "9north.a_b", true},
		{"name", strings.Repeat("n", MaxNameLen), true},
		{"name", strings.Repeat("n", MaxNameLen+1), false},
		{"name", "", false},
		{"name", "-north", false},
		{"name", ".north", false},
		{"name", "north/1", false},
	}
	for _, tc := range tests {
		var err error
		switch tc.rule {
		case "check":
			err = Check("user id", tc.id)
		case "text":
			err = CheckText("display name", tc.id)
		case "api":
			err = CheckAPI("user", tc.id)
		case "tech":
			err = CheckTech(tc.id)
		case "name":
			err = CheckName("site", tc.id)
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s(%q): %v, want ok=%v", tc.rule, Clip(tc.id), err, tc.ok)
		}
	}
}

// TestAPIIDsAreIDs: every id the HTTP API accepts is one the store accepts.
func TestAPIIDsAreIDs(t *testing.T) {
	for _, id := range []string{"a", "alice@example.org", strings.Repeat("z", MaxAPILen)} {
		if CheckAPI("user", id) != nil || Check("user", id) != nil {
			t.Errorf("%q", id)
		}
	}
}

func TestClip(t *testing.T) {
	if got := Clip(strings.Repeat("x", 100)); got != strings.Repeat("x", 64)+"…" {
		t.Errorf("Clip: %q", got)
	}
	if got := Clip("short"); got != "short" {
		t.Errorf("Clip: %q", got)
	}
}
