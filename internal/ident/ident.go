// Package ident is Outpost's identifier rules and their limits, written
// once: what a realm, user, token, device, API client, technician, site or
// scope id may be. The store, the sync and bundle formats, the offline and
// site verifiers and the HTTP API call these functions; none restates a rule
// or a length.
//
// There are four rules, from the widest to the narrowest:
//
//   - [Check]: an id the server stores or a signed artifact carries (realm,
//     user, token, device, API client): 1 to [MaxLen] bytes of UTF-8 without
//     control characters. [CheckText] is the same for free text that may be
//     empty (display names).
//   - [CheckAPI]: an id a client creates through the HTTP API (user, token,
//     device, API client name): 1 to [MaxAPILen] characters from A-Z a-z 0-9
//     . _ - @, safe in URLs, logs and metric labels. Every such id passes
//     Check too.
//   - [CheckTech]: a site's technician id: 1 to [MaxTechLen] printable ASCII
//     characters, no spaces. It is used byte for byte in a key derivation,
//     so the alphabet leaves no room for look-alike Unicode forms.
//   - [CheckName]: a site or scope id: 1 to [MaxNameLen] characters from
//     A-Z a-z 0-9 . _ -, starting with a letter or digit.
//
// The errors name what was checked (the what or kind argument) and the
// rule; they carry no sentinel: each caller wraps them in its own (store's
// ErrInvalid, a decoder's ErrMalformed, an HTTP 400).
package ident

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits, in bytes (every rule but Check and CheckText allows ASCII only,
// where bytes are characters).
const (
	// MaxLen bounds an id the server stores or a signed artifact carries,
	// and free text such as a display name.
	MaxLen = 256
	// MaxAPILen bounds an id created through the HTTP API.
	MaxAPILen = 128
	// MaxTechLen bounds a technician id.
	MaxTechLen = 128
	// MaxNameLen bounds a site or scope id.
	MaxNameLen = 64
)

// Check checks an id: 1 to MaxLen bytes of UTF-8 without control characters.
func Check(what, id string) error {
	if id == "" || len(id) > MaxLen {
		return fmt.Errorf("%s must be 1 to %d bytes of UTF-8", what, MaxLen)
	}
	return CheckText(what, id)
}

// CheckText checks free text (a name, possibly empty): at most MaxLen bytes
// of UTF-8 without control characters.
func CheckText(what, s string) error {
	if len(s) > MaxLen {
		return fmt.Errorf("%s is longer than %d bytes", what, MaxLen)
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%s must be UTF-8 without control characters", what)
	}
	return nil
}

// CheckAPI checks an id created through the HTTP API: 1 to MaxAPILen
// characters from A-Z a-z 0-9 . _ - @.
func CheckAPI(kind, id string) error {
	if len(id) == 0 || len(id) > MaxAPILen {
		return fmt.Errorf("%s must be 1 to %d characters", kind, MaxAPILen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !alnum(c) && c != '.' && c != '_' && c != '-' && c != '@' {
			return fmt.Errorf("%s may hold only letters, digits and . _ - @", kind)
		}
	}
	return nil
}

// CheckTech checks a technician id: 1 to MaxTechLen printable ASCII
// characters, no spaces. "Tech-1" and "tech-1" are different technicians.
func CheckTech(id string) error {
	if len(id) == 0 || len(id) > MaxTechLen {
		return fmt.Errorf("technician id must have 1 to %d characters", MaxTechLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return fmt.Errorf("technician id may use printable ASCII only (no spaces)")
		}
	}
	return nil
}

// CheckName checks a site or scope id (kind says which): 1 to MaxNameLen
// characters from A-Z a-z 0-9 . _ -, starting with a letter or digit.
func CheckName(kind, name string) error {
	if len(name) == 0 || len(name) > MaxNameLen {
		return fmt.Errorf("%s id must have 1 to %d characters", kind, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !alnum(c) && (i == 0 || c != '.' && c != '_' && c != '-') {
			return fmt.Errorf("%s id %q may use letters, digits, '.', '_' and '-', and must start with a letter or digit", kind, Clip(name))
		}
	}
	return nil
}

// Clip shortens a value quoted in an error message to 64 bytes (an id that
// failed its check may be of any length).
func Clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
