package siteissue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/site"
)

// legacyMaster is the master key testdata/legacy was made with (00 01 … 1f).
func legacyMaster(t *testing.T) *keys.Master {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(i)
	}
	m, err := keys.MasterFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// legacyDir copies testdata/legacy/sites.db, made by the issuer of commit
// 9a8baeb (testdata/legacy/mklegacy.go), into a new data directory.
func legacyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	copyFile(t, filepath.Join("testdata", "legacy", LegacyFile), filepath.Join(dir, LegacyFile))
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateLegacy imports a real sites.db of the old format and checks
// that the issuer carries on where the old one stopped: the same policy,
// epochs, serials, revocations and sites, the same keys, and a new
// revocation list that a site provisioned before the migration accepts.
func TestMigrateLegacy(t *testing.T) {
	for name, dsn := range engines() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			// The legacy issuer stopped at 13:01; a little later:
			now := time.Date(2026, 3, 10, 13, 5, 0, 0, time.UTC)
			st := storetest.Open(t, dsn(t))
			is := New(st.(store.SiteStore), legacyMaster(t))
			is.Now, is.KDF = func() time.Time { return now }, testKDF
			dir := legacyDir(t)

			m, found, err := is.MigrateLegacy(ctx, admin, dir)
			if err != nil || !found {
				t.Fatalf("MigrateLegacy: %+v, %v, %v", m, found, err)
			}
			if !slices.Equal(m.Scopes, []string{"north", "south"}) || !slices.Equal(m.Imported, m.Scopes) || m.Revocations != 1 || m.Packages != 3 ||
				m.RenamedTo != filepath.Join(dir, "sites.db.migrated") {
				t.Fatalf("migration %+v", m)
			}
			if _, err := os.Stat(filepath.Join(dir, LegacyFile)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("sites.db is still there: %v", err)
			}
			entries, _ := st.ListAudit(ctx, 0, 10)
			if len(entries) != 1 || entries[0].Kind != "site.migrate" || entries[0].Actor != admin.Name || entries[0].Subject != "sites.db" {
				t.Fatalf("audit %+v", entries)
			}
			// Once renamed, there is nothing to import.
			if _, found, err := is.MigrateLegacy(ctx, admin, dir); found || err != nil {
				t.Fatalf("second run: %v, %v", found, err)
			}

			// What the legacy issuer printed when it made the file.
			sc, err := is.Scope(ctx, admin, "north")
			if err != nil {
				t.Fatal(err)
			}
			wantPol := site.DefaultPolicy()
			wantPol.Window, wantPol.SiteFailuresPerHour = 2, 10
			roll := time.Date(2026, 3, 10, 13, 0, 0, 0, time.UTC)
			if sc.Policy != wantPol || sc.Current.N != 4 || !sc.Current.Start.Equal(roll) || sc.Next.N != 5 || sc.MaxIssued != 5 ||
				sc.PackageSerial != 3 || sc.RevocationSerial != 2 || len(sc.Rolls) != 1 || !sc.Rolls[0].Equal(roll) ||
				!slices.Equal(sc.Sites, []string{"cab-1", "cab-2"}) || len(sc.Revoked) != 1 || sc.Revoked[0].Tech != "tech-7" || sc.Revoked[0].Through != 3 ||
				!sc.Created.Equal(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)) {
				t.Fatalf("migrated north: %+v", sc)
			}
			south, err := is.Scope(ctx, admin, "south")
			if err != nil || south.MaxIssued != 2 || south.PackageSerial != 0 || south.Policy != site.DefaultPolicy() {
				t.Fatalf("migrated south: %+v, %v", south, err)
			}
			// The revocation stays in force, with its epochs.
			if _, err := is.Credential(ctx, admin, CredentialRequest{Scope: "north", Tech: "tech-7", Epoch: Current}); !errors.Is(err, ErrRevoked) {
				t.Fatalf("revoked technician after the migration: %v", err)
			}

			// A site installed from a package made before the migration ...
			pkg, err := os.ReadFile(filepath.Join("testdata", "legacy", "legacy-cab-1.pkg"))
			if err != nil {
				t.Fatal(err)
			}
			clock := func() time.Time { return now }
			s, err := site.Init(ctx, filepath.Join(t.TempDir(), "site"), site.InitConfig{SiteID: "cab-1", ServerKey: is.signer.Public,
				Package: pkg, Passphrase: []byte("legacy package passphrase"), Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// ... accepts a credential issued after it, for the same epoch,
			c, err := is.Credential(ctx, admin, CredentialRequest{Scope: "north", Tech: "tech-9", Epoch: Current})
			if err != nil {
				t.Fatal(err)
			}
			code, _ := c.Key.Generate(c.Key.Secret, 0, now)
			if _, err := s.Verify(ctx, "tech-9", code); err != nil {
				t.Fatalf("a credential issued after the migration at a site provisioned before it: %v", err)
			}
			// ... and the next revocation list (serial 3, after the file's 2).
			r, err := is.Revoke(ctx, admin, "north", []string{"tech-9"}, nil, "after the migration")
			if err != nil || r.Serial != 3 {
				t.Fatalf("revoke: %+v, %v", r, err)
			}
			if _, err := s.Update(ctx, r.List, nil); err != nil {
				t.Fatalf("the site refuses the first list made after the migration: %v", err)
			}
			now = now.Add(time.Minute)
			code, _ = c.Key.Generate(c.Key.Secret, 0, now)
			if _, err := s.Verify(ctx, "tech-9", code); !errors.Is(err, site.ErrRevoked) {
				t.Fatalf("revoked after the migration: %v", err)
			}
			// Packages continue the serials.
			p, err := is.Provision(ctx, admin, "north", "cab-3", []byte("new package passphrase"))
			if err != nil || p.Serial != 4 || p.Epochs[0].N != 4 {
				t.Fatalf("provision after the migration: %+v, %v", p, err)
			}
		})
	}
}

// TestMigrateLegacyCrashAndConflict: a run that stopped after the import
// but before the rename imports nothing the second time; a scope stored
// with other values stops the import, and nothing is stored.
func TestMigrateLegacyCrashAndConflict(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 10, 13, 5, 0, 0, time.UTC)
	st := storetest.Open(t, storetest.SQLitePath(t))
	is := New(st.(store.SiteStore), legacyMaster(t))
	is.Now, is.KDF = func() time.Time { return now }, testKDF
	dir := legacyDir(t)
	if _, _, err := is.MigrateLegacy(ctx, admin, dir); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join("testdata", "legacy", LegacyFile), filepath.Join(dir, LegacyFile)) // as if the rename never happened
	m, found, err := is.MigrateLegacy(ctx, admin, dir)
	if err != nil || !found || len(m.Imported) != 0 || len(m.Scopes) != 2 || m.RenamedTo != filepath.Join(dir, "sites.db.migrated.2") {
		t.Fatalf("rerun: %+v, %v, %v", m, found, err)
	}
	if entries, _ := st.ListAudit(ctx, 0, 10); len(entries) != 1 {
		t.Fatalf("a rerun that imported nothing was recorded: %d entries", len(entries))
	}

	// Another store, where north was created through the API first.
	st2 := storetest.Open(t, storetest.SQLitePath(t))
	is2 := New(st2.(store.SiteStore), legacyMaster(t))
	is2.Now, is2.KDF = is.Now, testKDF
	if _, err := is2.Credential(ctx, admin, CredentialRequest{Scope: "north", Tech: "tech-1", Epoch: Current}); err != nil {
		t.Fatal(err)
	}
	dir2 := legacyDir(t)
	if _, _, err := is2.MigrateLegacy(ctx, admin, dir2); !errors.Is(err, store.ErrExists) {
		t.Fatalf("conflicting scope: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir2, LegacyFile)); err != nil {
		t.Fatalf("a refused migration renamed the file: %v", err)
	}
	if _, err := is2.Scope(ctx, admin, "south"); !errors.Is(err, ErrUnknownScope) {
		t.Fatalf("a refused migration stored south: %v", err)
	}
}
