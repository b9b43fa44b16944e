package siteissue

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/site"
)

// Earlier versions kept the issuer's state in a SQLite file of its own,
// DIR/sites.db, next to the master key, even when the server ran on
// PostgreSQL. MigrateLegacy moves it into the store once.
const (
	// LegacyFile is that file, inside the server data directory.
	LegacyFile = "sites.db"
	// MigratedSuffix is added to its name once it is imported.
	MigratedSuffix = ".migrated"
)

// Migration is what MigrateLegacy did.
type Migration struct {
	File string `json:"file"`
	// Scopes are the scopes the file holds; Imported those stored by this
	// run (the others were stored by an earlier run that stopped before it
	// renamed the file).
	Scopes      []string `json:"scopes"`
	Imported    []string `json:"imported"`
	Revocations int      `json:"revocations"`
	Packages    int      `json:"packages"`
	// RenamedTo is the file's new name.
	RenamedTo string `json:"renamed_to"`
}

// MigrateLegacy imports dataDir/sites.db, when there is one, into the store
// for by.Realm: every scope with its policy, counters, latest revocation
// list, emergency rolls, revocations and provisioned sites, in one
// transaction with a site.migrate audit entry. Then it renames the file
// sites.db.migrated (sites.db.migrated.2, … when that exists), so that it is
// imported once. Running it again after a crash between the two steps
// imports nothing and renames the file. A scope that exists in the store
// with other values stops the import (nothing is stored): see
// docs/sites.md. found is false when there is no file.
func (is *Issuer) MigrateLegacy(ctx context.Context, by Actor, dataDir string) (Migration, bool, error) {
	return MigrateLegacy(ctx, is.store, by, dataDir, is.now())
}

// MigrateLegacy is Issuer.MigrateLegacy for a caller without the master
// key (the import needs none): now stamps the audit entry.
func MigrateLegacy(ctx context.Context, st store.SiteStore, by Actor, dataDir string, now time.Time) (m Migration, found bool, err error) {
	path := filepath.Join(dataDir, LegacyFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return Migration{}, false, nil
	} else if err != nil {
		return Migration{}, true, err
	}
	m.File = path
	recs, err := readLegacy(ctx, path)
	if err != nil {
		return m, true, fmt.Errorf("siteissue: reading %s: %w", path, err)
	}
	for _, r := range recs {
		m.Scopes = append(m.Scopes, r.Scope.ID)
		m.Revocations += len(r.Revocations)
		m.Packages += len(r.Packages)
	}
	if m.Scopes == nil {
		m.Scopes = []string{}
	}
	raw, err := json.Marshal(map[string]any{"file": LegacyFile, "scopes": len(recs), "revocations": m.Revocations, "packages": m.Packages})
	if err != nil {
		return m, true, err
	}
	e := eventlog.Entry{Time: now, Kind: audit.SiteMigrate, Actor: by.Name, Subject: LegacyFile, Data: raw}
	m.Imported, err = st.ImportSiteScopes(ctx, by.Realm, recs, e)
	if errors.Is(err, store.ErrExists) {
		return m, true, fmt.Errorf("siteissue: %s: %w", path, err)
	}
	if err != nil {
		return m, true, err
	}
	if m.Imported == nil {
		m.Imported = []string{}
	}
	m.RenamedTo, err = renameAside(path)
	return m, true, err
}

// renameAside renames path (and SQLite's -wal and -shm files, if any) to
// path.migrated, or .migrated.N when that exists, and returns the new name.
func renameAside(path string) (string, error) {
	to := path + MigratedSuffix
	for n := 2; ; n++ {
		if _, err := os.Lstat(to); errors.Is(err, fs.ErrNotExist) {
			break
		}
		to = path + MigratedSuffix + "." + strconv.Itoa(n)
	}
	for _, ext := range []string{"-wal", "-shm"} {
		if err := os.Rename(path+ext, to+ext); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("siteissue: its scopes are imported, but renaming %s failed (rename it by hand): %w", path, err)
	}
	return to, nil
}

// readLegacy reads every scope of a sites.db, checking each value as the
// issuer would have written it.
func readLegacy(ctx context.Context, path string) ([]store.SiteScopeRecord, error) {
	db, err := sqlitedb.Open(path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	tables := map[string]bool{}
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		tables[n] = true
	}
	rows.Close()
	if !tables["site_scopes"] {
		return nil, nil // created but never written
	}
	for _, t := range []string{"site_scope_segments", "site_scope_revoked", "site_provisioned"} {
		if !tables[t] {
			return nil, fmt.Errorf("table %s is missing: this is not a sites.db of Outpost", t)
		}
	}
	var recs []store.SiteScopeRecord
	byID := map[string]int{}
	err = each(ctx, db, `SELECT scope, created_us, policy, max_issued, package_serial, revocation_serial, revocation_list FROM site_scopes ORDER BY scope`,
		func(r *sql.Rows) error {
			var sc store.SiteScope
			var created, maxIssued, pkg, rev int64
			if err := r.Scan(&sc.ID, &created, &sc.Policy, &maxIssued, &pkg, &rev, &sc.RevocationList); err != nil {
				return err
			}
			if err := site.CheckName("scope", sc.ID); err != nil {
				return err
			}
			if _, err := site.UnmarshalPolicy(sc.Policy); err != nil {
				return fmt.Errorf("scope %s: %w", sc.ID, err)
			}
			if created <= 0 || maxIssued < 0 || maxIssued > 1<<32-1 || pkg < 0 || rev < 0 {
				return fmt.Errorf("scope %s: counters out of range", sc.ID)
			}
			sc.CreatedAt, sc.MaxIssued, sc.PackageSerial, sc.RevocationSerial = time.UnixMicro(created).UTC(), uint32(maxIssued), uint64(pkg), uint64(rev)
			byID[sc.ID] = len(recs)
			recs = append(recs, store.SiteScopeRecord{Scope: sc})
			return nil
		})
	if err != nil {
		return nil, err
	}
	rec := func(scope string) (*store.SiteScopeRecord, error) {
		i, ok := byID[scope]
		if !ok {
			return nil, fmt.Errorf("a row names scope %q, which the file does not hold", ident.Clip(scope))
		}
		return &recs[i], nil
	}
	err = each(ctx, db, `SELECT scope, start_us, first_epoch FROM site_scope_segments ORDER BY scope, start_us`, func(r *sql.Rows) error {
		var scope string
		var start, first int64
		if err := r.Scan(&scope, &start, &first); err != nil {
			return err
		}
		sr, err := rec(scope)
		if err != nil || start <= 0 || first < 0 || first > 1<<32-1 {
			return errors.Join(err, fmt.Errorf("scope %s: emergency roll out of range", ident.Clip(scope)))
		}
		sr.Scope.Segments = append(sr.Scope.Segments, store.SiteSegment{Start: time.UnixMicro(start).UTC(), FirstEpoch: uint32(first)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = each(ctx, db, `SELECT scope, tech, through_epoch, revoked_us, reason FROM site_scope_revoked ORDER BY scope, tech`, func(r *sql.Rows) error {
		var scope string
		var rv store.SiteRevocation
		var through, at int64
		if err := r.Scan(&scope, &rv.Tech, &through, &at, &rv.Reason); err != nil {
			return err
		}
		sr, err := rec(scope)
		if err != nil {
			return err
		}
		if err := site.CheckTechID(rv.Tech); err != nil || through < 0 || through > 1<<32-1 {
			return errors.Join(err, fmt.Errorf("scope %s: revocation out of range", scope))
		}
		rv.Through, rv.RevokedAt = uint32(through), time.UnixMicro(at).UTC()
		sr.Revocations = append(sr.Revocations, rv)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = each(ctx, db, `SELECT scope, serial, site, issued_us, epochs FROM site_provisioned ORDER BY scope, serial`, func(r *sql.Rows) error {
		var scope, epochs string
		var p store.SitePackage
		var serial, issued int64
		if err := r.Scan(&scope, &serial, &p.Site, &issued, &epochs); err != nil {
			return err
		}
		sr, err := rec(scope)
		if err != nil {
			return err
		}
		for _, f := range strings.Split(epochs, ",") {
			n, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return fmt.Errorf("scope %s, package %d: epochs %q: %w", scope, serial, ident.Clip(epochs), err)
			}
			p.Epochs = append(p.Epochs, uint32(n))
		}
		if err := site.CheckName("site", p.Site); err != nil || serial <= 0 {
			return errors.Join(err, fmt.Errorf("scope %s: package %d out of range", scope, serial))
		}
		p.Serial, p.IssuedAt = uint64(serial), time.UnixMicro(issued).UTC()
		sr.Packages = append(sr.Packages, p)
		return nil
	})
	return recs, err
}

// each runs query and calls fn for every row.
func each(ctx context.Context, db *sql.DB, query string, fn func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
