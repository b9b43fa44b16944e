package online

import (
	"errors"
	"strings"
	"testing"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/otp"
)

// TestUserAdmin: creating and deleting users and tokens, each audited, and
// refused with the sentinel a caller answers by.
func TestUserAdmin(t *testing.T) {
	s, _, _ := newTestService(t, storetest.SQLitePath(t))
	tok, _, err := s.Enrol(ctx, "r1", "known", otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}, "", "api:test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		do   func() error
		want error
		// kind is the audit entry a success writes.
		kind string
	}{
		{"create", func() error { _, err := s.CreateUser(ctx, "r1", "alice", "Alice", "api:test"); return err }, nil, audit.UserCreate},
		{"create taken", func() error { _, err := s.CreateUser(ctx, "r1", "alice", "", "api:test"); return err }, store.ErrExists, ""},
		{"display name too long", func() error {
			_, err := s.CreateUser(ctx, "r1", "bob", strings.Repeat("b", MaxDisplayName+1), "api:test")
			return err
		}, ErrDisplayName, ""},
		{"display name at the limit", func() error {
			_, err := s.CreateUser(ctx, "r1", "bob", strings.Repeat("b", MaxDisplayName), "api:test")
			return err
		}, nil, audit.UserCreate},
		{"delete a token", func() error { return s.DeleteToken(ctx, "r1", "known", tok.ID, "api:test") }, nil, audit.TokenDelete},
		{"delete it again", func() error { return s.DeleteToken(ctx, "r1", "known", tok.ID, "api:test") }, store.ErrNotFound, ""},
		{"delete a user", func() error { return s.DeleteUser(ctx, "r1", "alice", "api:test") }, nil, audit.UserDelete},
		{"delete a user of another realm", func() error { return s.DeleteUser(ctx, "r2", "bob", "api:test") }, store.ErrNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := s.Store.ListAudit(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.do(); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			after, err := s.Store.ListAudit(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.kind == "" && len(after) != len(before):
				t.Errorf("a refusal wrote %d audit entries", len(after)-len(before))
			case tc.kind != "" && (len(after) != len(before)+1 || after[len(after)-1].Kind != tc.kind || after[len(after)-1].Actor != "api:test"):
				t.Errorf("want one %s entry by api:test, got %d new", tc.kind, len(after)-len(before))
			}
		})
	}
}
