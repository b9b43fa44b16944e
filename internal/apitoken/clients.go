package apitoken

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/store"
)

// ErrInvalidScopes: a client's scopes are empty, too many, or unknown.
var ErrInvalidScopes = errors.New("invalid scopes")

// scopes are the scopes a client may hold.
var scopes = []string{store.ScopeAdmin, store.ScopeIssuer, store.ScopeVerifier}

// Clients keeps the API clients of a store: who may call the API, in which
// realm, with which scopes. Every change is written to the audit log.
type Clients struct {
	Store  store.Store
	Audit  *audit.Log
	Hasher *Hasher
	Now    func() time.Time
}

// Create makes an API client of realm named name, with one or more of
// the scopes admin, issuer and verifier (kept sorted, each once), audited
// (api_client.create). It returns the client and its token, which is
// shown once: only its hash is stored.
func (c *Clients) Create(ctx context.Context, realm, name string, want []string, actor string) (string, store.APIClient, error) {
	if len(want) == 0 || len(want) > len(scopes) {
		return "", store.APIClient{}, fmt.Errorf("%w: scopes must list one or more of admin, issuer, verifier", ErrInvalidScopes)
	}
	for _, sc := range want {
		if !slices.Contains(scopes, sc) {
			return "", store.APIClient{}, fmt.Errorf("%w: unknown scope %q (use admin, issuer, verifier)", ErrInvalidScopes, ident.Clip(sc))
		}
	}
	want = slices.Compact(slices.Sorted(slices.Values(want)))
	tok, hash, err := c.Hasher.New()
	if err != nil {
		return "", store.APIClient{}, err
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return "", store.APIClient{}, err
	}
	cl := store.APIClient{ID: "cli_" + hex.EncodeToString(id), Realm: realm, Name: name, Scopes: want, TokenHash: hash, CreatedAt: clock.Or(c.Now)()}
	if err := c.Store.CreateAPIClient(ctx, cl); err != nil {
		return "", store.APIClient{}, err
	}
	if err := c.Audit.Record(ctx, audit.APIClientCreate, actor, cl.ID, map[string]any{"name": name, "scopes": want}); err != nil {
		return "", store.APIClient{}, err
	}
	return tok, cl, nil
}

// Disable disables client id of realm, audited (api_client.revoke);
// store.ErrNotFound when there is none.
func (c *Clients) Disable(ctx context.Context, realm, id, actor string) error {
	if err := c.Store.DisableAPIClient(ctx, realm, id); err != nil {
		return err
	}
	return c.Audit.Record(ctx, audit.APIClientRevoke, actor, id, nil)
}

// List returns realm's API clients, ordered by id.
func (c *Clients) List(ctx context.Context, realm string) ([]store.APIClient, error) {
	return c.Store.ListAPIClients(ctx, realm)
}

// ByHash finds the client whose token hashes to hash (Hasher.Hash of the
// presented token); store.ErrNotFound when none does. Callers compare the
// hash again in constant time (Equal) and check Disabled.
func (c *Clients) ByHash(ctx context.Context, hash []byte) (store.APIClient, error) {
	return c.Store.GetAPIClientByHash(ctx, hash)
}
