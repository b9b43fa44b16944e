package online

import (
	"context"
	"errors"
	"fmt"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/store"
)

// MaxDisplayName bounds a user's display name, in bytes: the store's bound
// for any name (ident.MaxLen).
const MaxDisplayName = ident.MaxLen

// ErrDisplayName: the display name is longer than MaxDisplayName.
var ErrDisplayName = errors.New("online: display name too long")

// CreateUser creates user id in realm, audited (user.create). The id's
// form is the caller's to check; store.ErrExists when it is taken.
func (s *Service) CreateUser(ctx context.Context, realm, id, displayName, actor string) (store.User, error) {
	if len(displayName) > MaxDisplayName {
		return store.User{}, fmt.Errorf("%w: at most %d bytes", ErrDisplayName, MaxDisplayName)
	}
	u := store.User{Realm: realm, ID: id, DisplayName: displayName, CreatedAt: s.now()}
	if err := s.Store.CreateUser(ctx, u); err != nil {
		return store.User{}, err
	}
	return u, s.Audit.Record(ctx, audit.UserCreate, actor, id, nil)
}

// DeleteUser deletes user id of realm with all their tokens, audited
// (user.delete); store.ErrNotFound when there is none.
func (s *Service) DeleteUser(ctx context.Context, realm, id, actor string) error {
	s.rowCache().drop(realm, id)
	if err := s.Store.DeleteUser(ctx, realm, id); err != nil {
		return err
	}
	return s.Audit.Record(ctx, audit.UserDelete, actor, id, nil)
}

// DeleteToken deletes a token of user, audited (token.delete);
// store.ErrNotFound when there is none.
func (s *Service) DeleteToken(ctx context.Context, realm, user, tokenID, actor string) error {
	s.rowCache().drop(realm, user)
	if err := s.Store.DeleteToken(ctx, realm, user, tokenID); err != nil {
		return err
	}
	return s.Audit.Record(ctx, audit.TokenDelete, actor, user, map[string]string{"token": tokenID})
}
