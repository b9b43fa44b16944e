package siteissue

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/site"
)

var testKDF = keys.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1}

func newIssuer(t *testing.T, now *time.Time) *Issuer {
	t.Helper()
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	is, err := Open(context.Background(), t.TempDir(), m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { is.Close() })
	is.Now = func() time.Time { return *now }
	return is
}

func TestScopeKeyConstruction(t *testing.T) {
	m, _ := keys.MasterFromBytes(bytes.Repeat([]byte{7}, 32))
	a := ScopeKey(m, "north", 2)
	if !bytes.Equal(a, m.Derive(32, keys.PurposeScope, 2, "north")) {
		t.Fatal("ScopeKey is not keys.Derive(master, 32, scope-key, epoch, scope)")
	}
	for _, other := range [][]byte{ScopeKey(m, "north", 3), ScopeKey(m, "south", 2), ScopeKey(m, "north2", 2),
		m.Derive(32, keys.PurposeTechnician, 2, "north"), m.Derive(32, keys.PurposeSubject, 2, "north")} {
		if bytes.Equal(a, other) {
			t.Fatal("scope keys of different epochs, scopes or purposes collide")
		}
	}
}

func TestPolicyAndScopes(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	is := newIssuer(t, &now)
	if _, err := is.Scope(ctx, "north"); !errors.Is(err, ErrUnknownScope) {
		t.Fatalf("unknown scope: %v", err)
	}
	p := site.DefaultPolicy()
	p.Digits, p.Window = 8, 2
	sc, err := is.SetPolicy(ctx, "north", p)
	if err != nil || sc.Policy != p || sc.Current.N != 2 || sc.Next.N != 3 {
		t.Fatalf("SetPolicy: %+v, %v", sc, err)
	}
	c, err := is.Credential(ctx, "north", "tech-1", Current, false)
	if err != nil || c.Key.Digits != 8 || c.Key.Issuer != "Outpost north epoch 2" || c.Key.Account != "tech-1" || len(c.Key.Secret) != 20 {
		t.Fatalf("credential %+v, %v", c, err)
	}
	p.Digits = 6
	if _, err := is.SetPolicy(ctx, "north", p); !errors.Is(err, ErrPolicyFixed) {
		t.Fatalf("changing digits after issuing: %v", err)
	}
	p.Digits, p.Lockout = 8, time.Hour
	if _, err := is.SetPolicy(ctx, "north", p); err != nil {
		t.Fatalf("changing the lockout: %v", err)
	}
	bad := p
	bad.Window = 99
	if _, err := is.SetPolicy(ctx, "north", bad); err == nil {
		t.Fatal("invalid policy accepted")
	}
	for _, name := range []string{"", "a/b", "../x", ".hidden"} {
		if _, err := is.SetPolicy(ctx, name, p); !errors.Is(err, site.ErrBadID) {
			t.Fatalf("scope %q: %v", name, err)
		}
	}
	if _, err := is.Credential(ctx, "north", "tech-1", 1, false); err == nil {
		t.Fatal("credential for an epoch that is over")
	}
	if _, err := is.Credential(ctx, "north", "bad id", Current, false); !errors.Is(err, site.ErrBadID) {
		t.Fatalf("bad tech id: %v", err)
	}
	if _, err := is.Provision(ctx, "north", "bad/site", []byte("passphrase!"), testKDF); !errors.Is(err, site.ErrBadID) {
		t.Fatalf("bad site id: %v", err)
	}
	if _, err := is.Provision(ctx, "north", "cab-1", []byte("short"), testKDF); !errors.Is(err, keys.ErrWeakPassphrase) {
		t.Fatalf("weak passphrase: %v", err)
	}
	// A failed provision consumed nothing.
	if sc, _ := is.Scope(ctx, "north"); sc.PackageSerial != 0 || len(sc.Sites) != 0 {
		t.Fatalf("failed provision left state: %+v", sc)
	}
}

func TestRevokeListsAndPrunes(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	is := newIssuer(t, &now)
	if _, err := is.Revoke(ctx, "north", []string{"a"}, nil, ""); !errors.Is(err, ErrUnknownScope) {
		t.Fatalf("revoke in an unknown scope: %v", err)
	}
	if _, err := is.Provision(ctx, "north", "cab-1", []byte("passphrase!"), testKDF); err != nil {
		t.Fatal(err)
	}
	r, err := is.Revoke(ctx, "north", []string{"old-tech"}, nil, "left the company")
	if err != nil || r.Serial != 2 || r.Through != 3 || r.Entries != 1 {
		t.Fatalf("revoke: %+v, %v", r, err)
	}
	if _, err := is.Revoke(ctx, "north", nil, []string{"never-revoked"}, ""); err == nil {
		t.Fatal("undo of a technician who is not revoked")
	}
	if _, err := is.Revoke(ctx, "north", []string{"x"}, nil, "two\nlines"); err == nil {
		t.Fatal("multi-line reason accepted")
	}
	same, err := is.Revoke(ctx, "north", nil, nil, "")
	if err != nil || same.Serial != 2 || !bytes.Equal(same.List, r.List) {
		t.Fatalf("no change should give the stored list: %+v, %v", same, err)
	}
	// Long after epoch 3 (and the largest overlap) ended, its entries leave new lists.
	now = Origin.Add(4*EpochLength + site.MaxOverlap + time.Hour)
	r2, err := is.Revoke(ctx, "north", []string{"new-tech"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	l, err := site.ReadRevocationList(r2.List, artifact.Keys{is.signer.Public}, "north")
	if err != nil {
		t.Fatal(err)
	}
	if r2.Serial != 3 || len(l.Revoked) != 1 || l.Revoked[0].Tech != "new-tech" || l.Revoked[0].Through != r2.Through {
		t.Fatalf("pruned list: %+v %+v", r2, l.Revoked)
	}
	// The issuer still remembers old-tech for credentials of old epochs.
	sc, _ := is.Scope(ctx, "north")
	if len(sc.Revoked) != 2 {
		t.Fatalf("scope revocations: %+v", sc.Revoked)
	}
}
