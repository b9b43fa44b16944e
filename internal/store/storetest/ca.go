package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// RunCA runs the contract suite of store.CAStore. Every store Open returns
// implements it.
func RunCA(t *testing.T, open func(t *testing.T) store.Store) {
	runEngine(t, open, []engineCase[store.CAStore]{
		{"InitCA", testInitCA},
		{"InitCAConcurrent", testInitCAConcurrent},
		{"Challenges", testChallenges},
		{"ChallengeConcurrent", testChallengeConcurrent},
		{"IssueRevoke", testIssueRevoke},
		{"Invalid", testCAInvalid},
	})
}

func caEntry(kind, subject string) eventlog.Entry {
	return eventlog.Entry{Time: when, Kind: kind, Actor: "test", Subject: subject}
}

func testInitCA(t *testing.T, st store.Store, cs store.CAStore) {
	_, _, err := cs.CAKeys(ctx)
	wantErr(t, err, store.ErrNotFound)
	root := store.CAKey{Name: "root", Cert: []byte("root-der"), SealedKey: []byte("sealed-root"), CreatedAt: when}
	iss := store.CAKey{Name: "issuing", Cert: []byte("iss-der"), SealedKey: []byte("sealed-iss"), CreatedAt: when}
	created, err := cs.InitCA(ctx, root, iss, caEntry("ca.init", "ca"))
	must(t, err)
	if !created {
		t.Fatal("first InitCA did not create")
	}
	other := root
	other.Cert = []byte("another root")
	created, err = cs.InitCA(ctx, other, iss, caEntry("ca.init", "ca"))
	must(t, err)
	if created {
		t.Fatal("second InitCA replaced the CA")
	}
	r, i, err := cs.CAKeys(ctx)
	must(t, err)
	if !bytes.Equal(r.Cert, root.Cert) || !bytes.Equal(i.SealedKey, iss.SealedKey) || !r.CreatedAt.Equal(stored(when)) {
		t.Errorf("CAKeys = %+v %+v", r, i)
	}
	if got := auditKinds(t, st); len(got) != 1 || got[0] != "ca.init ca" {
		t.Errorf("audit = %v, want one ca.init", got)
	}
}

// testInitCAConcurrent: replicas starting at once store one CA, and all
// of them read that one back.
func testInitCAConcurrent(t *testing.T, st store.Store, cs store.CAStore) {
	var created atomic.Int32
	parallel(8, func(i int) {
		root := store.CAKey{Name: "root", Cert: []byte(fmt.Sprint("root-", i)), SealedKey: []byte("k"), CreatedAt: when}
		iss := store.CAKey{Name: "issuing", Cert: []byte(fmt.Sprint("iss-", i)), SealedKey: []byte("k"), CreatedAt: when}
		c, err := cs.InitCA(ctx, root, iss, caEntry("ca.init", "ca"))
		if err != nil {
			t.Error(err)
		}
		if c {
			created.Add(1)
		}
	})
	if created.Load() != 1 {
		t.Errorf("%d replicas created a CA, want 1", created.Load())
	}
	r, i, err := cs.CAKeys(ctx)
	must(t, err)
	if string(r.Cert)[5:] != string(i.Cert)[4:] {
		t.Errorf("the stored root %q and issuing CA %q come from different replicas", r.Cert, i.Cert)
	}
	if got := auditKinds(t, st); len(got) != 1 {
		t.Errorf("audit = %v, want one ca.init", got)
	}
}

func nonceHash(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 32) }

func testChallenges(t *testing.T, st store.Store, cs store.CAStore) {
	c := store.Challenge{NonceHash: nonceHash(1), Realm: "r1", Serial: "SN-1", Expires: when.Add(5 * time.Minute)}
	must(t, cs.CreateChallenge(ctx, c, when))
	wantErr(t, cs.CreateChallenge(ctx, c, when), store.ErrExists)
	// Another serial, realm or a time past expiry does not consume it.
	wantErr(t, cs.ConsumeChallenge(ctx, c.NonceHash, "r1", "SN-2", when), store.ErrNotFound)
	wantErr(t, cs.ConsumeChallenge(ctx, c.NonceHash, "r2", "SN-1", when), store.ErrNotFound)
	wantErr(t, cs.ConsumeChallenge(ctx, c.NonceHash, "r1", "SN-1", when.Add(5*time.Minute)), store.ErrNotFound)
	must(t, cs.ConsumeChallenge(ctx, c.NonceHash, "r1", "SN-1", when))
	wantErr(t, cs.ConsumeChallenge(ctx, c.NonceHash, "r1", "SN-1", when), store.ErrNotFound)

	// Creating prunes the expired ones.
	old := store.Challenge{NonceHash: nonceHash(2), Realm: "r1", Serial: "SN-1", Expires: when.Add(time.Minute)}
	must(t, cs.CreateChallenge(ctx, old, when))
	must(t, cs.CreateChallenge(ctx, store.Challenge{NonceHash: nonceHash(3), Realm: "r1", Serial: "SN-1", Expires: when.Add(time.Hour)}, when.Add(2*time.Minute)))
	wantErr(t, cs.ConsumeChallenge(ctx, old.NonceHash, "r1", "SN-1", when), store.ErrNotFound)
}

// testChallengeConcurrent: of many concurrent consumers one wins.
func testChallengeConcurrent(t *testing.T, st store.Store, cs store.CAStore) {
	c := store.Challenge{NonceHash: nonceHash(9), Realm: "r1", Serial: "SN-1", Expires: when.Add(time.Minute)}
	must(t, cs.CreateChallenge(ctx, c, when))
	var wins atomic.Int32
	parallel(16, func(int) {
		switch err := cs.ConsumeChallenge(ctx, c.NonceHash, "r1", "SN-1", when); {
		case err == nil:
			wins.Add(1)
		case !errors.Is(err, store.ErrNotFound):
			t.Error(err)
		}
	})
	if wins.Load() != 1 {
		t.Errorf("%d consumers won, want 1", wins.Load())
	}
}

func caDevice(realm, serial string, spki string) store.CADevice {
	return store.CADevice{Realm: realm, Serial: serial, SPKI: []byte(spki), UpdatedAt: when}
}

func caCert(realm, device string, n int, kind string) store.CACert {
	return store.CACert{Serial: fmt.Sprintf("%032x", n), Realm: realm, Device: device, Kind: kind,
		NotBefore: when, NotAfter: when.Add(24 * time.Hour), DER: []byte("der")}
}

func testIssueRevoke(t *testing.T, st store.Store, cs store.CAStore) {
	seed(t, st, "r1")
	seed(t, st, "r2")
	wantErr(t, cs.RecordIssue(ctx, caDevice("nope", "SN-1", "k1"), caCert("nope", "SN-1", 1, "enrol"), caEntry("device.enrol", "SN-1")), store.ErrNotFound)
	must(t, cs.RecordIssue(ctx, caDevice("r1", "SN-1", "k1"), caCert("r1", "SN-1", 1, "enrol"), caEntry("device.enrol", "SN-1")))
	must(t, cs.RecordIssue(ctx, caDevice("r1", "SN-1", "k1"), caCert("r1", "SN-1", 2, "renew"), caEntry("device.renew", "SN-1")))
	// Another key for the serial: refused, nothing written.
	wantErr(t, cs.RecordIssue(ctx, caDevice("r1", "SN-1", "k2"), caCert("r1", "SN-1", 3, "enrol"), caEntry("device.enrol", "SN-1")), store.ErrConflict)
	// The same serial in another realm is another device.
	must(t, cs.RecordIssue(ctx, caDevice("r2", "SN-1", "k2"), caCert("r2", "SN-1", 4, "enrol"), caEntry("device.enrol", "SN-1")))
	must(t, cs.RecordIssue(ctx, caDevice("r1", "SN-0", "k0"), caCert("r1", "SN-0", 5, "enrol"), caEntry("device.enrol", "SN-0")))

	d, err := cs.GetCADevice(ctx, "r1", "SN-1")
	must(t, err)
	if d.Status != store.CADeviceActive || d.Certs != 2 || string(d.SPKI) != "k1" || !d.NotAfter.Equal(stored(when.Add(24*time.Hour))) {
		t.Errorf("device = %+v", d)
	}
	ds, err := cs.ListCADevices(ctx, "r1", "", 10)
	must(t, err)
	if len(ds) != 2 || ds[0].Serial != "SN-0" || ds[1].Serial != "SN-1" {
		t.Errorf("ListCADevices = %+v", ds)
	}
	certs, err := cs.ListCACerts(ctx, "r1", "", "", 10)
	must(t, err)
	if len(certs) != 3 {
		t.Errorf("ListCACerts(r1) = %d certs, want 3", len(certs))
	}
	certs, err = cs.ListCACerts(ctx, "r1", "SN-1", "", 1)
	must(t, err)
	if len(certs) != 1 || certs[0].Kind != "enrol" || certs[0].Device != "SN-1" {
		t.Errorf("ListCACerts(r1, SN-1, limit 1) = %+v", certs)
	}

	must(t, cs.RevokeCADevice(ctx, "r1", "SN-1", when, caEntry("device.revoke", "SN-1")))
	wantErr(t, cs.RevokeCADevice(ctx, "r1", "SN-1", when, caEntry("device.revoke", "SN-1")), store.ErrConflict)
	wantErr(t, cs.RevokeCADevice(ctx, "r1", "SN-9", when, caEntry("device.revoke", "SN-9")), store.ErrNotFound)
	// A revoked device gets nothing more.
	wantErr(t, cs.RecordIssue(ctx, caDevice("r1", "SN-1", "k1"), caCert("r1", "SN-1", 6, "renew"), caEntry("device.renew", "SN-1")), store.ErrConflict)
	if d, _ := cs.GetCADevice(ctx, "r2", "SN-1"); d.Status != store.CADeviceActive {
		t.Errorf("revoking r1/SN-1 revoked r2/SN-1: %+v", d)
	}
	kinds := auditKinds(t, st)
	if len(kinds) != 5 || kinds[4] != "device.revoke SN-1" {
		t.Errorf("audit = %v", kinds)
	}
}

func testCAInvalid(t *testing.T, st store.Store, cs store.CAStore) {
	seed(t, st, "r1")
	tests := []struct {
		name string
		call func() error
	}{
		{"CA key name", func() error {
			_, err := cs.InitCA(ctx, store.CAKey{Name: "x", Cert: []byte{1}, SealedKey: []byte{1}}, store.CAKey{Name: "issuing", Cert: []byte{1}, SealedKey: []byte{1}}, caEntry("ca.init", "ca"))
			return err
		}},
		{"short nonce hash", func() error {
			return cs.CreateChallenge(ctx, store.Challenge{NonceHash: []byte{1}, Realm: "r1", Serial: "SN-1", Expires: when}, when)
		}},
		{"bad serial", func() error {
			return cs.CreateChallenge(ctx, store.Challenge{NonceHash: nonceHash(1), Realm: "r1", Serial: "", Expires: when}, when)
		}},
		{"no key", func() error {
			return cs.RecordIssue(ctx, caDevice("r1", "SN-1", ""), caCert("r1", "SN-1", 1, "enrol"), caEntry("x", "y"))
		}},
		{"cert of another device", func() error {
			return cs.RecordIssue(ctx, caDevice("r1", "SN-1", "k"), caCert("r1", "SN-2", 1, "enrol"), caEntry("x", "y"))
		}},
		{"kind", func() error {
			return cs.RecordIssue(ctx, caDevice("r1", "SN-1", "k"), caCert("r1", "SN-1", 1, "steal"), caEntry("x", "y"))
		}},
		{"limit", func() error { _, err := cs.ListCACerts(ctx, "r1", "", "", 0); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.call(), store.ErrInvalid) })
	}
	if ds, _ := cs.ListCADevices(ctx, "r1", "", 10); len(ds) != 0 {
		t.Errorf("rejected records were stored: %+v", ds)
	}
}
