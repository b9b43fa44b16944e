package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// RunSites runs the contract suite of store.SiteStore (site issuance).
// Every store Open returns implements it.
func RunSites(t *testing.T, open func(t *testing.T) store.Store) {
	runEngine(t, open, []engineCase[store.SiteStore]{
		{"Scopes", testSiteScopes},
		{"Realms", testSiteRealms},
		{"Rollback", testSiteRollback},
		{"Revocations", testSiteRevocations},
		{"Packages", testSitePackages},
		{"Concurrent", testSiteConcurrent},
		{"Import", testSiteImport},
		{"Invalid", testSiteInvalid},
	})
}

var sitePolicy = []byte(`{"digits":6,"period_s":30}`)

func newScope() *store.SiteScope {
	return &store.SiteScope{CreatedAt: when, Policy: sitePolicy}
}

// siteTx runs fn in realm's scope id, creating it when create is set.
func siteTx(t *testing.T, ss store.SiteStore, realm, id string, create bool, fn func(tx store.SiteTx) error) error {
	t.Helper()
	var c *store.SiteScope
	if create {
		c = newScope()
	}
	return ss.SiteScopeTx(ctx, realm, id, c, fn)
}

func testSiteScopes(t *testing.T, st store.Store, ss store.SiteStore) {
	_, err := ss.GetSiteScope(ctx, "r1", "north")
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, siteTx(t, ss, "r1", "north", false, func(store.SiteTx) error { t.Fatal("fn ran for a missing scope"); return nil }), store.ErrNotFound)

	roll := when.Add(time.Hour)
	must(t, siteTx(t, ss, "r1", "north", true, func(tx store.SiteTx) error {
		sc := tx.Scope()
		if !tx.Created() || sc.Realm != "r1" || sc.ID != "north" || !sc.CreatedAt.Equal(stored(when)) || !bytes.Equal(sc.Policy, sitePolicy) ||
			sc.PackageSerial != 0 || sc.RevocationList != nil || len(sc.Segments) != 0 {
			t.Errorf("new scope in the transaction: created %v, %+v", tx.Created(), sc)
		}
		sc.Policy, sc.MaxIssued, sc.PackageSerial, sc.RevocationSerial, sc.RevocationList = []byte(`{"digits":8}`), 7, 3, 2, []byte("signed list")
		if err := tx.SaveScope(sc); err != nil {
			return err
		}
		if err := tx.AddSegment(store.SiteSegment{Start: roll, FirstEpoch: 8}); err != nil {
			return err
		}
		if got := tx.Scope(); got.PackageSerial != 3 || len(got.Segments) != 1 {
			t.Errorf("Scope() after the changes: %+v", got)
		}
		return nil
	}))
	sc, err := ss.GetSiteScope(ctx, "r1", "north")
	must(t, err)
	if string(sc.Policy) != `{"digits":8}` || sc.MaxIssued != 7 || sc.PackageSerial != 3 || sc.RevocationSerial != 2 ||
		string(sc.RevocationList) != "signed list" || len(sc.Segments) != 1 || !sc.Segments[0].Start.Equal(stored(roll)) || sc.Segments[0].FirstEpoch != 8 {
		t.Errorf("GetSiteScope = %+v", sc)
	}
	// A second create finds it: nothing is replaced.
	must(t, siteTx(t, ss, "r1", "north", true, func(tx store.SiteTx) error {
		if tx.Created() || tx.Scope().PackageSerial != 3 {
			t.Errorf("existing scope: created %v, %+v", tx.Created(), tx.Scope())
		}
		// Segments come back in time order, whatever the insertion order.
		return tx.AddSegment(store.SiteSegment{Start: when.Add(30 * time.Minute), FirstEpoch: 4})
	}))
	sc, _ = ss.GetSiteScope(ctx, "r1", "north")
	if len(sc.Segments) != 2 || sc.Segments[0].FirstEpoch != 4 || sc.Segments[1].FirstEpoch != 8 {
		t.Errorf("segments %+v", sc.Segments)
	}
	// The same instant twice is refused, and refuses the whole transaction.
	err = siteTx(t, ss, "r1", "north", false, func(tx store.SiteTx) error {
		sc := tx.Scope()
		sc.PackageSerial = 99
		if err := tx.SaveScope(sc); err != nil {
			return err
		}
		return tx.AddSegment(store.SiteSegment{Start: roll, FirstEpoch: 9})
	})
	wantErr(t, err, store.ErrExists)
	if sc, _ := ss.GetSiteScope(ctx, "r1", "north"); sc.PackageSerial != 3 {
		t.Errorf("a refused transaction changed the scope: %+v", sc)
	}
}

func testSiteRealms(t *testing.T, st store.Store, ss store.SiteStore) {
	must(t, siteTx(t, ss, "r1", "north", true, func(store.SiteTx) error { return nil }))
	_, err := ss.GetSiteScope(ctx, "r2", "north")
	wantErr(t, err, store.ErrNotFound)
	_, err = ss.ListSiteRevocations(ctx, "r2", "north")
	wantErr(t, err, store.ErrNotFound)
	_, err = ss.ListSiteNames(ctx, "r2", "north")
	wantErr(t, err, store.ErrNotFound)
	ran := false
	wantErr(t, siteTx(t, ss, "r2", "north", false, func(store.SiteTx) error { ran = true; return nil }), store.ErrNotFound)
	// Scope ids are unique across realms: another realm cannot create one that exists.
	wantErr(t, siteTx(t, ss, "r2", "north", true, func(store.SiteTx) error { ran = true; return nil }), store.ErrExists)
	if ran {
		t.Error("fn ran on another realm's scope")
	}
	if sc, err := ss.GetSiteScope(ctx, "r1", "north"); err != nil || sc.Realm != "r1" {
		t.Errorf("the owner's scope: %+v, %v", sc, err)
	}
}

// testSiteRollback: fn's own error comes back unchanged and undoes every
// write of the transaction, including its creation and audit entries; on
// SQLite, where writes of several callers share a commit, it fails no one else.
func testSiteRollback(t *testing.T, st store.Store, ss store.SiteStore) {
	boom := errors.New("boom: a rule of the caller")
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := st.AppendAudit(ctx, auditEntry(i))
			errs <- err
		}()
		go func() {
			defer wg.Done()
			err := siteTx(t, ss, "r1", fmt.Sprintf("scope-%d", i), true, func(tx store.SiteTx) error {
				if err := tx.PutRevocation(store.SiteRevocation{Tech: "alice", Through: 3, RevokedAt: when}); err != nil {
					return err
				}
				if err := tx.AddPackage(store.SitePackage{Serial: 1, Site: "cab-1", IssuedAt: when, Epochs: []uint32{2, 3}}); err != nil {
					return err
				}
				if _, err := tx.AppendAudit(eventlog.Entry{Kind: "site.provision", Actor: "test", Subject: "x"}); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				errs <- fmt.Errorf("SiteScopeTx = %v, want fn's error", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i := range 20 {
		if _, err := ss.GetSiteScope(ctx, "r1", fmt.Sprintf("scope-%d", i)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a failed transaction left scope-%d: %v", i, err)
		}
	}
	all := readAudit(t, st, 100)
	if len(all) != 20 {
		t.Errorf("%d audit entries, want the 20 plain appends", len(all))
	}
	if _, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		t.Error(err)
	}
}

func testSiteRevocations(t *testing.T, st store.Store, ss store.SiteStore) {
	techs := []string{"tech-9", "Tech-1", "tech-10", "_x", "a", "B", "tech_1"}
	must(t, siteTx(t, ss, "r1", "north", true, func(tx store.SiteTx) error {
		for i, tech := range techs {
			if err := tx.PutRevocation(store.SiteRevocation{Tech: tech, Through: uint32(i), RevokedAt: when, Reason: "lost phone"}); err != nil {
				return err
			}
		}
		// Replacing keeps one row per technician.
		if err := tx.PutRevocation(store.SiteRevocation{Tech: "a", Through: 40, RevokedAt: when.Add(time.Hour), Reason: "again"}); err != nil {
			return err
		}
		r, found, err := tx.Revocation("a")
		if err != nil || !found || r.Through != 40 || r.Reason != "again" || !r.RevokedAt.Equal(stored(when.Add(time.Hour))) {
			t.Errorf("Revocation(a) = %+v, %v, %v", r, found, err)
		}
		if _, found, err := tx.Revocation("nobody"); found || err != nil {
			t.Errorf("Revocation(nobody): %v, %v", found, err)
		}
		ok, err := tx.DeleteRevocation("tech_1")
		if !ok || err != nil {
			t.Errorf("DeleteRevocation: %v, %v", ok, err)
		}
		ok, err = tx.DeleteRevocation("tech_1")
		if ok || err != nil {
			t.Errorf("DeleteRevocation twice: %v, %v", ok, err)
		}
		return nil
	}))
	rs, err := ss.ListSiteRevocations(ctx, "r1", "north")
	must(t, err)
	var got []string
	for _, r := range rs {
		got = append(got, r.Tech)
	}
	// Byte order, whatever the database's collation: revocation lists are signed sorted.
	want := []string{"B", "Tech-1", "_x", "a", "tech-10", "tech-9"}
	if !slices.Equal(got, want) {
		t.Errorf("revocations in order %v, want %v", got, want)
	}
}

func testSitePackages(t *testing.T, st store.Store, ss store.SiteStore) {
	sites := []string{"cab-2", "cab-10", "Cab-1", "cab-2"}
	must(t, siteTx(t, ss, "r1", "north", true, func(tx store.SiteTx) error {
		for i, s := range sites {
			if err := tx.AddPackage(store.SitePackage{Serial: uint64(i + 1), Site: s, IssuedAt: when, Epochs: []uint32{2, 3}}); err != nil {
				return err
			}
		}
		got, err := tx.Sites()
		if err != nil || !slices.Equal(got, []string{"Cab-1", "cab-10", "cab-2"}) {
			t.Errorf("Sites() = %v, %v", got, err)
		}
		return nil
	}))
	names, err := ss.ListSiteNames(ctx, "r1", "north")
	if err != nil || !slices.Equal(names, []string{"Cab-1", "cab-10", "cab-2"}) {
		t.Errorf("ListSiteNames = %v, %v", names, err)
	}
	// A serial used twice is the caller's mistake: ErrExists at once, not retried.
	start := time.Now()
	err = siteTx(t, ss, "r1", "north", false, func(tx store.SiteTx) error {
		return tx.AddPackage(store.SitePackage{Serial: 2, Site: "cab-9", IssuedAt: when, Epochs: []uint32{4}})
	})
	wantErr(t, err, store.ErrExists)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a duplicate package took %v: retried as a race?", d)
	}
}

// testSiteConcurrent: transactions of one scope from many goroutines run one
// after the other, so each reads the serial the previous one wrote, and their
// audit entries join plain appends in one unbroken chain.
func testSiteConcurrent(t *testing.T, st store.Store, ss store.SiteStore) {
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- siteTx(t, ss, "r1", "north", true, func(tx store.SiteTx) error {
				sc := tx.Scope()
				sc.PackageSerial++
				if err := tx.SaveScope(sc); err != nil {
					return err
				}
				if err := tx.AddPackage(store.SitePackage{Serial: sc.PackageSerial, Site: fmt.Sprintf("cab-%d", i), IssuedAt: when, Epochs: []uint32{1}}); err != nil {
					return err
				}
				_, err := tx.AppendAudit(eventlog.Entry{Kind: "site.provision", Actor: "test", Subject: "north"})
				return err
			})
		}()
		go func() {
			defer wg.Done()
			_, err := st.AppendAudit(ctx, auditEntry(i))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	sc, err := ss.GetSiteScope(ctx, "r1", "north")
	must(t, err)
	names, _ := ss.ListSiteNames(ctx, "r1", "north")
	if sc.PackageSerial != n || len(names) != n {
		t.Errorf("after %d concurrent transactions: serial %d, %d sites", n, sc.PackageSerial, len(names))
	}
	all := readAudit(t, st, 7)
	if len(all) != 2*n {
		t.Errorf("%d audit entries, want %d", len(all), 2*n)
	}
	if _, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		t.Error(err)
	}
}

func siteRecord(id string, serial uint64) store.SiteScopeRecord {
	return store.SiteScopeRecord{
		Scope: store.SiteScope{ID: id, CreatedAt: when, Policy: sitePolicy, MaxIssued: 5, PackageSerial: serial, RevocationSerial: 2,
			RevocationList: []byte("list"), Segments: []store.SiteSegment{{Start: when.Add(time.Hour), FirstEpoch: 4}}},
		Revocations: []store.SiteRevocation{{Tech: "tech-7", Through: 3, RevokedAt: when, Reason: "lost phone"}},
		Packages:    []store.SitePackage{{Serial: 1, Site: "cab-1", IssuedAt: when, Epochs: []uint32{2, 3}}},
	}
}

func testSiteImport(t *testing.T, st store.Store, ss store.SiteStore) {
	entry := eventlog.Entry{Kind: "site.migrate", Actor: "test", Subject: "sites.db"}
	got, err := ss.ImportSiteScopes(ctx, "r1", []store.SiteScopeRecord{siteRecord("north", 1), siteRecord("south", 1)}, entry)
	if err != nil || !slices.Equal(got, []string{"north", "south"}) {
		t.Fatalf("ImportSiteScopes = %v, %v", got, err)
	}
	sc, err := ss.GetSiteScope(ctx, "r1", "north")
	must(t, err)
	rs, _ := ss.ListSiteRevocations(ctx, "r1", "north")
	names, _ := ss.ListSiteNames(ctx, "r1", "north")
	if sc.PackageSerial != 1 || sc.MaxIssued != 5 || string(sc.RevocationList) != "list" || len(sc.Segments) != 1 ||
		len(rs) != 1 || rs[0].Reason != "lost phone" || !slices.Equal(names, []string{"cab-1"}) {
		t.Errorf("imported scope %+v, revocations %+v, sites %v", sc, rs, names)
	}
	if a := readAudit(t, st, 10); len(a) != 1 || a[0].Kind != "site.migrate" {
		t.Errorf("audit after the import: %+v", a)
	}
	// The same import again (a crash before the file was renamed) changes nothing.
	got, err = ss.ImportSiteScopes(ctx, "r1", []store.SiteScopeRecord{siteRecord("north", 1), siteRecord("south", 1)}, entry)
	if err != nil || len(got) != 0 {
		t.Errorf("second import = %v, %v", got, err)
	}
	if a := readAudit(t, st, 10); len(a) != 1 {
		t.Errorf("a second import added audit entries: %d", len(a))
	}
	// A scope that changed since, or lives in another realm, stops the whole import.
	_, err = ss.ImportSiteScopes(ctx, "r1", []store.SiteScopeRecord{siteRecord("east", 1), siteRecord("north", 7)}, entry)
	wantErr(t, err, store.ErrExists)
	_, err = ss.ImportSiteScopes(ctx, "r2", []store.SiteScopeRecord{siteRecord("west", 1), siteRecord("south", 1)}, entry)
	wantErr(t, err, store.ErrExists)
	for _, id := range []string{"east", "west"} {
		if _, err := ss.GetSiteScope(ctx, "r1", id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a refused import stored %s: %v", id, err)
		}
	}
}

func testSiteInvalid(t *testing.T, st store.Store, ss store.SiteStore) {
	bad := []*store.SiteScope{
		{CreatedAt: when},
		{CreatedAt: when, Policy: make([]byte, store.MaxSitePolicyLen+1)},
	}
	for _, c := range bad {
		wantErr(t, ss.SiteScopeTx(ctx, "r1", "north", c, func(store.SiteTx) error { return nil }), store.ErrInvalid)
	}
	wantErr(t, ss.SiteScopeTx(ctx, "r1", "", newScope(), func(store.SiteTx) error { return nil }), store.ErrInvalid)
	wantErr(t, ss.SiteScopeTx(ctx, "", "north", newScope(), func(store.SiteTx) error { return nil }), store.ErrInvalid)
	must(t, siteTx(t, ss, "r1", "north", true, func(tx store.SiteTx) error {
		checks := []error{
			tx.PutRevocation(store.SiteRevocation{Tech: "", Through: 1}),
			tx.PutRevocation(store.SiteRevocation{Tech: "t", Reason: "two\nlines"}),
			tx.AddPackage(store.SitePackage{Serial: 0, Site: "cab", Epochs: []uint32{1}}),
			tx.AddPackage(store.SitePackage{Serial: 1, Site: "cab"}),
			tx.AddPackage(store.SitePackage{Serial: 1, Site: "", Epochs: []uint32{1}}),
			tx.SaveScope(store.SiteScope{}),
			tx.AddSegment(store.SiteSegment{}),
		}
		for i, err := range checks {
			if !errors.Is(err, store.ErrInvalid) {
				t.Errorf("check %d: %v, want ErrInvalid", i, err)
			}
		}
		_, err := tx.AppendAudit(eventlog.Entry{})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("AppendAudit of an empty entry: %v", err)
		}
		return nil
	}))
}
