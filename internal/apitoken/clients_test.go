package apitoken

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestClients: the scope rule, the token shown once and stored as a hash,
// and the audit entry of every change.
func TestClients(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t, storetest.SQLitePath(t))
	if err := st.CreateRealm(ctx, store.Realm{ID: "r1", Name: "r1"}); err != nil {
		t.Fatal(err)
	}
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return time.Date(2031, 11, 23, 12, 0, 0, 0, time.UTC) }
	c := &Clients{Store: st, Audit: &audit.Log{Store: st, Now: now}, Hasher: NewHasher(m), Now: now}
	for _, tc := range []struct {
		name   string
		scopes []string
		want   error
		stored []string
	}{
		{"one scope", []string{"verifier"}, nil, []string{"verifier"}},
		{"sorted, each once", []string{"verifier", "admin", "verifier"}, nil, []string{"admin", "verifier"}},
		{"none", nil, ErrInvalidScopes, nil},
		{"too many", []string{"admin", "issuer", "verifier", "admin"}, ErrInvalidScopes, nil},
		{"unknown", []string{"root"}, ErrInvalidScopes, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := st.ListAudit(ctx, 0, 1000)
			tok, cl, err := c.Create(ctx, "r1", "radius", tc.scopes, "api:test")
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			after, _ := st.ListAudit(ctx, 0, 1000)
			if err != nil {
				if len(after) != len(before) {
					t.Error("a refused client was audited")
				}
				return
			}
			got, err := st.GetAPIClientByHash(ctx, c.Hasher.Hash(tok))
			if err != nil || got.ID != cl.ID || !slices.Equal(got.Scopes, tc.stored) || Check(tok) != nil {
				t.Fatalf("stored %+v (%v), want scopes %v", got, err, tc.stored)
			}
			if len(after) != len(before)+1 || after[len(after)-1].Kind != audit.APIClientCreate || after[len(after)-1].Subject != cl.ID {
				t.Error("the new client is not audited")
			}
		})
	}
	t.Run("disable", func(t *testing.T) {
		_, cl, err := c.Create(ctx, "r1", "gone", []string{"issuer"}, "api:test")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Disable(ctx, "r2", cl.ID, "api:test"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("disabling from another realm: %v", err)
		}
		if err := c.Disable(ctx, "r1", cl.ID, "api:test"); err != nil {
			t.Fatal(err)
		}
		es, _ := st.ListAudit(ctx, 0, 1000)
		if last := es[len(es)-1]; last.Kind != audit.APIClientRevoke || last.Subject != cl.ID {
			t.Errorf("the last entry is %s %s", last.Kind, last.Subject)
		}
	})
}
