package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// RunRoster runs the contract suite of store.RosterStore. Every store Open
// returns implements it.
func RunRoster(t *testing.T, open func(t *testing.T) store.Store) {
	runEngine(t, open, []engineCase[store.RosterStore]{
		{"PutGetList", testRosterPutGetList},
		{"State", testRosterState},
		{"AbortWritesNothing", testRosterAbort},
		{"Expected", testRosterExpected},
		{"Vouchers", testRosterVouchers},
		{"PutVouches", testRosterPutVouches},
		{"InSync", testRosterInSync},
		{"Invalid", testRosterInvalid},
	})
}

func newVouch(realm, staff string, seq uint64, serial string) store.Vouch {
	return store.Vouch{Realm: realm, StaffDevice: staff, DeviceSeq: seq, Serial: serial, Model: "gw-100", KeyType: "p256",
		SPKI: []byte("spki-" + serial), Site: "site-1", Location: "52.1,4.3", VouchedAt: when.Add(time.Duration(seq) * time.Second),
		ReceivedAt: when.Add(time.Hour), ExpiresAt: when.Add(90 * 24 * time.Hour), State: "live", UpdatedAt: when.Add(time.Hour)}
}

func rosterEntry(kind, subject string) eventlog.Entry {
	return eventlog.Entry{Time: when, Kind: kind, Actor: "admin", Subject: subject}
}

func testRosterPutGetList(t *testing.T, st store.Store, rs store.RosterStore) {
	seed(t, st, "r1")
	seed(t, st, "r2")
	var added []bool
	must(t, rs.RosterTx(ctx, func(tx store.RosterTx) error {
		for _, v := range []store.Vouch{newVouch("r1", "dev-1", 3, "SN-2"), newVouch("r1", "dev-1", 2, "SN-1"),
			newVouch("r1", "dev-2", 7, "SN-1"), newVouch("r1", "dev-1", 2, "SN-1"), newVouch("r2", "dev-9", 1, "SN-1"),
			newVouch("r1", "dev-1", 4, "SN-3")} {
			ok, err := put(tx, v)
			if err != nil {
				return err
			}
			added = append(added, ok)
		}
		_, err := tx.AppendAudit(rosterEntry("roster.vouch", "SN-1"))
		return err
	}))
	if want := []bool{true, true, true, false, true, true}; !equalBools(added, want) {
		t.Fatalf("PutVouch added %v, want %v (the same entry twice is one vouch)", added, want)
	}
	must(t, rs.RosterTx(ctx, func(tx store.RosterTx) error {
		of, err := tx.VouchesOf("r1", []string{"SN-1", "SN-3", "SN-9"})
		if err == nil && len(of) != 3 {
			t.Errorf("VouchesOf(SN-1, SN-3, SN-9) = %d vouches, want 3", len(of))
		}
		return err
	}))
	got, err := rs.GetVouches(ctx, "r1", "SN-1")
	must(t, err)
	if len(got) != 2 || got[0].StaffDevice != "dev-1" || got[1].StaffDevice != "dev-2" {
		t.Fatalf("GetVouches(r1, SN-1) = %+v", got)
	}
	want := newVouch("r1", "dev-1", 2, "SN-1")
	want.VouchedAt, want.ReceivedAt, want.ExpiresAt, want.UpdatedAt = stored(want.VouchedAt), stored(want.ReceivedAt), stored(want.ExpiresAt), stored(want.UpdatedAt)
	if g := got[0]; g.Serial != want.Serial || string(g.SPKI) != string(want.SPKI) || !g.VouchedAt.Equal(want.VouchedAt) ||
		!g.ExpiresAt.Equal(want.ExpiresAt) || g.Site != want.Site || g.Location != want.Location || g.State != "live" || g.KeyType != "p256" {
		t.Errorf("GetVouches[0] = %+v, want %+v", g, want)
	}
	none, err := rs.GetVouches(ctx, "r2", "SN-2")
	must(t, err)
	if none == nil || len(none) != 0 {
		t.Errorf("GetVouches of an unknown serial = %#v, want an empty list", none)
	}
	page, err := rs.ListVouches(ctx, "r1", "", 1)
	must(t, err)
	if len(page) != 2 || page[0].Serial != "SN-1" || page[1].Serial != "SN-1" {
		t.Fatalf("ListVouches limit 1 = %+v, want both vouches of SN-1", page)
	}
	page, err = rs.ListVouches(ctx, "r1", "SN-1", 10)
	must(t, err)
	if len(page) != 2 || page[0].Serial != "SN-2" || page[1].Serial != "SN-3" {
		t.Fatalf("ListVouches after SN-1 = %+v", page)
	}
	_, err = rs.ListVouches(ctx, "r1", "", 0)
	wantErr(t, err, store.ErrInvalid)
	if kinds := auditKinds(t, st); len(kinds) != 1 || kinds[0] != "roster.vouch SN-1" {
		t.Errorf("audit = %v", kinds)
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testRosterState(t *testing.T, st store.Store, rs store.RosterStore) {
	seed(t, st, "r1")
	must(t, rs.RosterTx(ctx, func(tx store.RosterTx) error {
		_, err := put(tx, newVouch("r1", "dev-1", 1, "SN-1"))
		return err
	}))
	var first, second bool
	must(t, rs.RosterTx(ctx, func(tx store.RosterTx) error {
		var err error
		if first, err = tx.SetVouchState("r1", "dev-1", 1, "live", "withdrawn", "by admin", when.Add(2*time.Hour)); err != nil {
			return err
		}
		second, err = tx.SetVouchState("r1", "dev-1", 1, "live", "enrolled", "", when)
		return err
	}))
	if !first || second {
		t.Fatalf("SetVouchState = %v then %v, want true then false (the state was no longer live)", first, second)
	}
	got, err := rs.GetVouches(ctx, "r1", "SN-1")
	must(t, err)
	if got[0].State != "withdrawn" || got[0].Reason != "by admin" || !got[0].UpdatedAt.Equal(stored(when.Add(2*time.Hour))) {
		t.Errorf("after SetVouchState: %+v", got[0])
	}
}

func testRosterAbort(t *testing.T, st store.Store, rs store.RosterStore) {
	seed(t, st, "r1")
	mine := errors.New("refused by the caller")
	err := rs.RosterTx(ctx, func(tx store.RosterTx) error {
		if _, err := put(tx, newVouch("r1", "dev-1", 1, "SN-1")); err != nil {
			return err
		}
		if _, err := tx.AppendAudit(rosterEntry("roster.vouch", "SN-1")); err != nil {
			return err
		}
		return mine
	})
	if !errors.Is(err, mine) {
		t.Fatalf("RosterTx = %v, want the callback's error", err)
	}
	got, err := rs.GetVouches(ctx, "r1", "SN-1")
	must(t, err)
	if len(got) != 0 || len(auditKinds(t, st)) != 0 {
		t.Fatalf("an aborted transaction wrote %v and audit %v", got, auditKinds(t, st))
	}
}

func testRosterExpected(t *testing.T, st store.Store, rs store.RosterStore) {
	seed(t, st, "r1")
	seed(t, st, "r2")
	check := func(realm, serial string, wantExp, wantAny bool) {
		t.Helper()
		must(t, rs.RosterTx(ctx, func(tx store.RosterTx) error {
			of, err := tx.ExpectedOf(realm, []string{serial})
			if err != nil {
				return err
			}
			exp := len(of) == 1
			anyExp, err := tx.AnyExpected(realm)
			if err == nil && (exp != wantExp || anyExp != wantAny) {
				t.Errorf("Expected(%s, %s) = %v, any %v, want %v, %v", realm, serial, exp, anyExp, wantExp, wantAny)
			}
			return err
		}))
	}
	check("r1", "SN-1", false, false)
	var n1, n2 int
	must(t, rs.RosterTx(ctx, func(tx store.RosterTx) error {
		var err error
		if n1, err = tx.PutExpected("r1", []string{"SN-1", "SN-2"}, "PO-7", when); err != nil {
			return err
		}
		n2, err = tx.PutExpected("r1", []string{"SN-2", "SN-3"}, "PO-8", when)
		return err
	}))
	if n1 != 2 || n2 != 1 {
		t.Errorf("PutExpected added %d and %d, want 2 and 1", n1, n2)
	}
	check("r1", "SN-3", true, true)
	must(t, rs.RosterTx(ctx, func(tx store.RosterTx) error {
		got, err := tx.ExpectedOf("r1", []string{"SN-9", "SN-3", "SN-1"})
		slices.Sort(got)
		if err == nil && !slices.Equal(got, []string{"SN-1", "SN-3"}) {
			t.Errorf("ExpectedOf = %v, want SN-1 and SN-3", got)
		}
		return err
	}))
	check("r1", "SN-9", false, true)
	check("r2", "SN-1", false, false)
	err := rs.RosterTx(ctx, func(tx store.RosterTx) error {
		_, err := tx.PutExpected("r1", []string{"ok", "bad serial"}, "", when)
		return err
	})
	wantErr(t, err, store.ErrInvalid)
	err = rs.RosterTx(ctx, func(tx store.RosterTx) error {
		_, err := tx.PutExpected("nope", []string{"SN-1"}, "", when)
		return err
	})
	wantErr(t, err, store.ErrInvalid)
}

func testRosterVouchers(t *testing.T, st store.Store, rs store.RosterStore) {
	seed(t, st, "r1")
	seed(t, st, "r2")
	var steps []bool
	must(t, rs.RosterTx(ctx, func(tx store.RosterTx) error {
		for _, f := range []func() (bool, error){
			func() (bool, error) { return tx.Voucher("r1", "dev-1") },
			func() (bool, error) { return tx.SetVoucher("r1", "dev-1", true, when) },
			func() (bool, error) { return tx.SetVoucher("r1", "dev-1", true, when) },
			func() (bool, error) { return tx.Voucher("r1", "dev-1") },
			func() (bool, error) { return tx.Voucher("r2", "dev-1") },
			func() (bool, error) { return tx.SetVoucher("r1", "dev-1", false, when) },
			func() (bool, error) { return tx.Voucher("r1", "dev-1") },
		} {
			ok, err := f()
			if err != nil {
				return err
			}
			steps = append(steps, ok)
		}
		return nil
	}))
	if want := []bool{false, true, false, true, false, true, false}; !equalBools(steps, want) {
		t.Errorf("voucher steps = %v, want %v", steps, want)
	}
}

// testRosterInSync stores a vouch inside a sync's transaction: it commits
// with the sync, or not at all.
func testRosterInSync(t *testing.T, st store.Store, rs store.RosterStore) {
	seed(t, st, "r1")
	ss := st.(store.SyncStore)
	must(t, ss.CreateDevice(ctx, activeDevice("r1", "dev-1", 1)))
	boom := errors.New("sync refused")
	err := ss.SyncDevice(ctx, "r1", "dev-1", when, func(tx store.SyncTx) error {
		if _, err := put(tx.Roster(), newVouch("r1", "dev-1", 1, "SN-1")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("SyncDevice = %v", err)
	}
	if got, _ := rs.GetVouches(ctx, "r1", "SN-1"); len(got) != 0 {
		t.Fatalf("a failed sync stored its vouch: %+v", got)
	}
	must(t, ss.SyncDevice(ctx, "r1", "dev-1", when, func(tx store.SyncTx) error {
		_, err := put(tx.Roster(), newVouch("r1", "dev-1", 1, "SN-1"))
		return err
	}))
	if got, _ := rs.GetVouches(ctx, "r1", "SN-1"); len(got) != 1 {
		t.Fatalf("after the sync: %+v", got)
	}
}

func testRosterInvalid(t *testing.T, st store.Store, rs store.RosterStore) {
	seed(t, st, "r1")
	for name, mutate := range map[string]func(*store.Vouch){
		"bad serial":   func(v *store.Vouch) { v.Serial = "bad serial" },
		"no staff":     func(v *store.Vouch) { v.StaffDevice = "" },
		"seq 0":        func(v *store.Vouch) { v.DeviceSeq = 0 },
		"no key":       func(v *store.Vouch) { v.SPKI = nil },
		"huge key":     func(v *store.Vouch) { v.SPKI = make([]byte, store.MaxRosterSPKI+1) },
		"no state":     func(v *store.Vouch) { v.State = "" },
		"no expiry":    func(v *store.Vouch) { v.ExpiresAt = time.Time{} },
		"bad location": func(v *store.Vouch) { v.Location = "a\x00b" },
		"no realm":     func(v *store.Vouch) { v.Realm = "nope" },
	} {
		v := newVouch("r1", "dev-1", 1, "SN-1")
		mutate(&v)
		err := rs.RosterTx(ctx, func(tx store.RosterTx) error {
			_, err := put(tx, v)
			return err
		})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: PutVouch = %v, want ErrInvalid", name, err)
		}
	}
}

func testRosterPutVouches(t *testing.T, st store.Store, rs store.RosterStore) {
	seed(t, st, "r1")
	var vs []store.Vouch
	for i := range 300 { // more than one multi-row statement
		vs = append(vs, newVouch("r1", "dev-1", uint64(i+1), fmt.Sprintf("SN-%d", i)))
	}
	var n1, n2 int
	must(t, rs.RosterTx(ctx, func(tx store.RosterTx) error {
		var err error
		if n1, err = tx.PutVouches(vs); err != nil {
			return err
		}
		n2, err = tx.PutVouches(vs[:5])
		return err
	}))
	if n1 != 300 || n2 != 0 {
		t.Fatalf("PutVouches stored %d then %d, want 300 then 0", n1, n2)
	}
	got, err := rs.GetVouches(ctx, "r1", "SN-299")
	must(t, err)
	if len(got) != 1 || got[0].DeviceSeq != 300 || string(got[0].SPKI) != "spki-SN-299" {
		t.Fatalf("GetVouches(SN-299) = %+v", got)
	}
	bad := newVouch("r1", "dev-1", 999, "bad serial")
	err = rs.RosterTx(ctx, func(tx store.RosterTx) error {
		_, err := tx.PutVouches([]store.Vouch{newVouch("r1", "dev-1", 998, "SN-ok"), bad})
		return err
	})
	wantErr(t, err, store.ErrInvalid)
	wantErr(t, store.CheckVouch(bad), store.ErrInvalid)
	if got, _ := rs.GetVouches(ctx, "r1", "SN-ok"); len(got) != 0 {
		t.Fatal("a refused batch stored part of itself")
	}
}

// put stores one vouch, reporting whether it was new.
func put(tx store.RosterTx, v store.Vouch) (bool, error) {
	n, err := tx.PutVouches([]store.Vouch{v})
	return n == 1, err
}
