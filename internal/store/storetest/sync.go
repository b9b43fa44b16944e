package storetest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// RunSync runs the contract suite of store.SyncStore (field-device sync).
// Every store Open returns implements it.
func RunSync(t *testing.T, open func(t *testing.T) store.Store) {
	runEngine(t, open, []engineCase[store.SyncStore]{
		{"Devices", testDevices},
		{"Enrolment", testEnrolment},
		{"SyncTx", testSyncTx},
		{"SyncRollback", testSyncRollback},
		{"SyncConcurrent", testSyncConcurrent},
		{"SyncLargeAudit", testSyncLargeAudit},
		{"FindAudit", testFindAudit},
		{"Refills", testRefills},
		{"IssuedBundles", testIssuedBundles},
	})
}

func devKey(i int) ed25519.PublicKey {
	seed := sha256.Sum256([]byte(fmt.Sprint("device key ", i)))
	return ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
}

func activeDevice(realm, id string, i int) store.Device {
	return store.Device{Realm: realm, ID: id, Status: store.DeviceActive, PublicKey: devKey(i), KeyID: fmt.Sprintf("ed25519:%016x", i), CreatedAt: when}
}

func testDevices(t *testing.T, st store.Store, ss store.SyncStore) {
	seed(t, st, "r1")
	seed(t, st, "r2")
	d := activeDevice("r1", "dev-1", 1)
	must(t, ss.CreateDevice(ctx, d))
	got, err := ss.GetDevice(ctx, "dev-1")
	must(t, err)
	if got.Realm != "r1" || got.Status != store.DeviceActive || !bytes.Equal(got.PublicKey, d.PublicKey) || got.KeyID != d.KeyID ||
		!got.CreatedAt.Equal(stored(when)) || got.AckedSeq != 0 || got.AckedHash != nil || got.UploadSerial != 0 || !got.RevokedAt.IsZero() {
		t.Errorf("GetDevice = %+v", got)
	}
	byKey, err := ss.GetDeviceByKeyID(ctx, d.KeyID)
	must(t, err)
	if byKey.ID != "dev-1" {
		t.Errorf("GetDeviceByKeyID = %+v", byKey)
	}
	// Ids are unique across realms (bundles name a device by id alone), keys too.
	wantErr(t, ss.CreateDevice(ctx, activeDevice("r2", "dev-1", 2)), store.ErrExists)
	same := activeDevice("r1", "dev-2", 1)
	wantErr(t, ss.CreateDevice(ctx, same), store.ErrExists)
	wantErr(t, ss.CreateDevice(ctx, activeDevice("nope", "dev-3", 3)), store.ErrNotFound)
	_, err = ss.GetDevice(ctx, "dev-9")
	wantErr(t, err, store.ErrNotFound)
	_, err = ss.GetDeviceByKeyID(ctx, "ed25519:none")
	wantErr(t, err, store.ErrNotFound)
	for _, bad := range []store.Device{
		{Realm: "r1", ID: "", Status: store.DeviceActive, PublicKey: devKey(5), KeyID: "k"},
		{Realm: "r1", ID: "x", Status: "lost", PublicKey: devKey(5), KeyID: "k"},
		{Realm: "r1", ID: "x", Status: store.DeviceActive, PublicKey: []byte("short"), KeyID: "k"},
		{Realm: "r1", ID: "x", Status: store.DevicePending, EnrolHash: []byte("short")},
	} {
		wantErr(t, ss.CreateDevice(ctx, bad), store.ErrInvalid)
	}

	for i := 10; i < 15; i++ {
		must(t, ss.CreateDevice(ctx, activeDevice("r1", fmt.Sprint("dev-", i), i)))
	}
	must(t, ss.CreateDevice(ctx, activeDevice("r2", "other", 99)))
	var ids []string
	after := ""
	for {
		page, err := ss.ListDevices(ctx, "r1", after, 2)
		must(t, err)
		if len(page) == 0 {
			break
		}
		for _, d := range page {
			ids = append(ids, d.ID)
		}
		after = page[len(page)-1].ID
	}
	if want := []string{"dev-1", "dev-10", "dev-11", "dev-12", "dev-13", "dev-14"}; !slices.Equal(ids, want) {
		t.Errorf("listed %v, want %v", ids, want)
	}

	must(t, ss.RevokeDevice(ctx, "r1", "dev-1", when.Add(time.Hour)))
	must(t, ss.RevokeDevice(ctx, "r1", "dev-1", when.Add(2*time.Hour))) // idempotent: keeps the first time
	got, err = ss.GetDevice(ctx, "dev-1")
	must(t, err)
	if got.Status != store.DeviceRevoked || !got.RevokedAt.Equal(stored(when.Add(time.Hour))) {
		t.Errorf("revoked device = %+v", got)
	}
	wantErr(t, ss.RevokeDevice(ctx, "r2", "dev-1", when), store.ErrNotFound)
}

func testEnrolment(t *testing.T, st store.Store, ss store.SyncStore) {
	seed(t, st, "r1")
	h := sha256.Sum256([]byte("CODE"))
	other := sha256.Sum256([]byte("OTHER"))
	must(t, ss.CreateDevice(ctx, store.Device{Realm: "r1", ID: "new", Status: store.DevicePending, EnrolHash: h[:], EnrolUntil: when.Add(time.Hour)}))
	must(t, ss.CreateDevice(ctx, store.Device{Realm: "r1", ID: "late", Status: store.DevicePending, EnrolHash: h[:], EnrolUntil: when}))
	got, err := ss.GetDevice(ctx, "new")
	must(t, err)
	if got.Status != store.DevicePending || !bytes.Equal(got.EnrolHash, h[:]) || got.PublicKey != nil || got.KeyID != "" {
		t.Errorf("pending device = %+v", got)
	}
	pub := devKey(7)
	wantErr(t, ss.ActivateDevice(ctx, "new", other[:], pub, "kid-7", when), store.ErrNotFound)               // wrong code
	wantErr(t, ss.ActivateDevice(ctx, "late", h[:], pub, "kid-7", when.Add(time.Second)), store.ErrNotFound) // expired
	wantErr(t, ss.ActivateDevice(ctx, "nobody", h[:], pub, "kid-7", when), store.ErrNotFound)
	must(t, ss.ActivateDevice(ctx, "new", h[:], pub, "kid-7", when))
	wantErr(t, ss.ActivateDevice(ctx, "new", h[:], devKey(8), "kid-8", when), store.ErrNotFound) // once only
	got, err = ss.GetDevice(ctx, "new")
	must(t, err)
	if got.Status != store.DeviceActive || !bytes.Equal(got.PublicKey, pub) || got.KeyID != "kid-7" || got.EnrolHash != nil {
		t.Errorf("activated device = %+v", got)
	}
	wantErr(t, ss.ActivateDevice(ctx, "late", h[:], pub, "kid-7", when.Add(-time.Hour)), store.ErrExists) // key taken

	must(t, ss.ResetEnrolment(ctx, "r1", "late", other[:], when.Add(2*time.Hour)))
	must(t, ss.ActivateDevice(ctx, "late", other[:], devKey(9), "kid-9", when.Add(time.Hour)))
	wantErr(t, ss.ResetEnrolment(ctx, "r1", "late", other[:], when), store.ErrNotFound) // no longer pending
}

// syncFixture: realm r1, user alice with an HOTP token h1 used up to 5, device dev-1.
func syncFixture(t *testing.T, st store.Store, ss store.SyncStore) {
	t.Helper()
	seed(t, st, "r1", "alice")
	must(t, st.CreateToken(ctx, hotp("r1", "alice", "h1")))
	must(t, st.AdvanceToken(ctx, "r1", "alice", "h1", 5))
	must(t, ss.CreateDevice(ctx, activeDevice("r1", "dev-1", 1)))
}

func testSyncTx(t *testing.T, st store.Store, ss store.SyncStore) {
	syncFixture(t, st, ss)
	wantErr(t, ss.SyncDevice(ctx, "r1", "nope", when, func(store.SyncTx) error { return nil }), store.ErrNotFound)
	_, err := st.AppendAudit(ctx, auditEntry(0))
	must(t, err)

	ackHash := bytes.Repeat([]byte{7}, 32)
	must(t, ss.SyncDevice(ctx, "r1", "dev-1", when, func(tx store.SyncTx) error {
		if d := tx.Device(); d.ID != "dev-1" || d.AckedSeq != 0 {
			return fmt.Errorf("device %+v", d)
		}
		tok, err := tx.LockToken("r1", "alice", "h1")
		if err != nil || tok.LastUsed != 5 || !tok.Used {
			return fmt.Errorf("LockToken = %+v, %v", tok, err)
		}
		if _, err := tx.LockToken("r1", "alice", "zz"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("LockToken of a missing token: %v", err)
		}
		for _, c := range []struct {
			used int64
			want bool
		}{{3, false}, {5, false}, {9, true}, {9, false}, {7, false}} {
			ok, err := tx.RaiseToken("r1", "alice", "h1", c.used)
			if err != nil || ok != c.want {
				return fmt.Errorf("RaiseToken(%d) = %v, %v; want %v", c.used, ok, err, c.want)
			}
		}
		dt, found, err := tx.DeviceToken("r1", "alice", "h1")
		if err != nil || found || dt.OfflineUsed != -1 || dt.ReportedUsed != -1 {
			return fmt.Errorf("new DeviceToken = %+v %v %v", dt, found, err)
		}
		dt.Serial, dt.Type, dt.First, dt.Last, dt.NotAfter, dt.OfflineUsed, dt.UsedSerial = 42, "hotp", 6, 105, when.Add(24*time.Hour), 9, 42
		dt.ReportedUsed, dt.Failures, dt.UpdatedAt = 9, 2, when
		if err := tx.PutDeviceToken(dt); err != nil {
			return err
		}
		dt.Failures = 3
		if err := tx.PutDeviceToken(dt); err != nil { // upsert
			return err
		}
		uses := []store.OfflineUse{
			{Realm: "r1", UserID: "alice", TokenID: "h1", Counter: 9, Device: "dev-1", DeviceSeq: 4, AuditSeq: 2, At: when},
			{Realm: "r1", UserID: "alice", TokenID: "h1", Counter: 9, Device: "dev-1", DeviceSeq: 4, AuditSeq: 2, At: when}, // duplicate: ignored
			{Realm: "r1", UserID: "alice", TokenID: "h1", Counter: 8, Device: "dev-1", DeviceSeq: 3, AuditSeq: 1, At: when},
		}
		if err := tx.AddOfflineUses(uses); err != nil {
			return err
		}
		got, err := tx.OfflineUses("r1", "alice", "h1", 9)
		if err != nil || len(got) != 1 || got[0].DeviceSeq != 4 || got[0].AuditSeq != 2 || !got[0].At.Equal(stored(when)) {
			return fmt.Errorf("OfflineUses = %+v, %v", got, err)
		}
		stored, err := tx.AppendAudit([]eventlog.Entry{auditEntry(1), auditEntry(2)})
		if err != nil || len(stored) != 2 || stored[0].Seq != 2 || stored[1].Seq != 3 {
			return fmt.Errorf("AppendAudit = %+v, %v", stored, err)
		}
		found2, err := tx.FindAudit("verify.ok", "alice-2", 0, 10)
		if err != nil || len(found2) != 1 || found2[0].Seq != 3 {
			return fmt.Errorf("FindAudit in the transaction = %+v, %v", found2, err)
		}
		return tx.SaveDevice(17, ackHash, 3, []byte("payload hash"))
	}))
	d, err := ss.GetDevice(ctx, "dev-1")
	must(t, err)
	if d.AckedSeq != 17 || !bytes.Equal(d.AckedHash, ackHash) || d.UploadSerial != 3 || string(d.UploadHash) != "payload hash" || !d.LastSync.Equal(stored(when)) {
		t.Errorf("device after sync = %+v", d)
	}
	tok, err := st.GetToken(ctx, "r1", "alice", "h1")
	must(t, err)
	if tok.LastUsed != 9 {
		t.Errorf("token last used %d, want 9", tok.LastUsed)
	}
	wantErr(t, st.AdvanceToken(ctx, "r1", "alice", "h1", 9), store.ErrReplayed)
	// Outside a transaction too: the lookup that names a replay's first use.
	if got, err := ss.OfflineUses(ctx, "r1", "alice", "h1", 9); err != nil || len(got) != 1 || got[0].Device != "dev-1" || got[0].AuditSeq != 2 {
		t.Errorf("OfflineUses = %+v, %v", got, err)
	}
	if got, err := ss.OfflineUses(ctx, "r1", "alice", "h1", 7); err != nil || len(got) != 0 {
		t.Errorf("OfflineUses of an unused counter = %+v, %v", got, err)
	}
	dts, err := ss.ListDeviceTokens(ctx, "r1", "dev-1")
	must(t, err)
	if len(dts) != 1 || dts[0].Serial != 42 || dts[0].Failures != 3 || dts[0].Last != 105 || !dts[0].NotAfter.Equal(stored(when.Add(24*time.Hour))) {
		t.Errorf("device tokens = %+v", dts)
	}
	// The sync's audit entries continue the one chain.
	_, err = st.AppendAudit(ctx, auditEntry(3))
	must(t, err)
	all := readAudit(t, st, 100)
	if len(all) != 4 {
		t.Fatalf("%d audit entries, want 4", len(all))
	}
	if i, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		t.Fatalf("chain broken at %d: %v", i, err)
	}
}

func testSyncRollback(t *testing.T, st store.Store, ss store.SyncStore) {
	syncFixture(t, st, ss)
	boom := errors.New("boom")
	err := ss.SyncDevice(ctx, "r1", "dev-1", when, func(tx store.SyncTx) error {
		if _, err := tx.RaiseToken("r1", "alice", "h1", 50); err != nil {
			return err
		}
		if _, err := tx.AppendAudit([]eventlog.Entry{auditEntry(1)}); err != nil {
			return err
		}
		if err := tx.SaveDevice(9, bytes.Repeat([]byte{1}, 32), 1, nil); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("SyncDevice = %v, want fn's error", err)
	}
	// A caller's own io.ErrUnexpectedEOF (a truncated input) is its error,
	// not a connection the database lost (store.ErrUnavailable, a 503).
	err = ss.SyncDevice(ctx, "r1", "dev-1", when, func(store.SyncTx) error { return fmt.Errorf("reading the upload: %w", io.ErrUnexpectedEOF) })
	if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("SyncDevice with fn's io.ErrUnexpectedEOF = %v, want that error and not ErrUnavailable", err)
	}
	tok, err := st.GetToken(ctx, "r1", "alice", "h1")
	must(t, err)
	d, err := ss.GetDevice(ctx, "dev-1")
	must(t, err)
	if tok.LastUsed != 5 || d.AckedSeq != 0 || d.UploadSerial != 0 || len(readAudit(t, st, 10)) != 0 {
		t.Errorf("a failed sync left changes: token %d, device %+v", tok.LastUsed, d)
	}
}

// testSyncConcurrent: syncs of several devices and plain audit appends at
// once keep one unbroken chain, lose nothing, and raise the shared token to
// the maximum.
func testSyncConcurrent(t *testing.T, st store.Store, ss store.SyncStore) {
	syncFixture(t, st, ss)
	const devices, rounds, per = 6, 4, 5
	for i := 1; i < devices; i++ {
		must(t, ss.CreateDevice(ctx, activeDevice("r1", fmt.Sprint("dev-", i+1), i+1)))
	}
	var mu sync.Mutex
	var errs []error
	parallel(devices+2, func(w int) {
		for r := range rounds {
			var err error
			if w >= devices { // plain appenders racing the syncs
				_, err = st.AppendAudit(ctx, eventlog.Entry{Time: when, Kind: "plain", Subject: fmt.Sprint("p", w, "-", r)})
			} else {
				id := fmt.Sprint("dev-", w+1)
				err = ss.SyncDevice(ctx, "r1", id, when, func(tx store.SyncTx) error {
					if _, err := tx.LockToken("r1", "alice", "h1"); err != nil {
						return err
					}
					if _, err := tx.RaiseToken("r1", "alice", "h1", int64(10+w*rounds+r)); err != nil {
						return err
					}
					es := make([]eventlog.Entry, per)
					for i := range es {
						es[i] = eventlog.Entry{Time: when, Kind: "offline.verify.ok", Actor: "device:" + id, Subject: fmt.Sprint(id, "-", r, "-", i),
							Data: json.RawMessage(`{}`)}
					}
					if _, err := tx.AppendAudit(es); err != nil {
						return err
					}
					d := tx.Device()
					return tx.SaveDevice(d.AckedSeq+per, bytes.Repeat([]byte{byte(r)}, 32), d.UploadSerial+1, nil)
				})
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}
	})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	all := readAudit(t, st, 1000)
	if want := devices*rounds*per + 2*rounds; len(all) != want {
		t.Fatalf("%d audit entries, want %d", len(all), want)
	}
	if i, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		t.Fatalf("chain broken at %d: %v", i, err)
	}
	subjects := map[string]bool{}
	for _, e := range all {
		subjects[e.Subject] = true
	}
	if len(subjects) != len(all) {
		t.Errorf("%d distinct entries of %d: some were doubled", len(subjects), len(all))
	}
	for i := range devices {
		d, err := ss.GetDevice(ctx, fmt.Sprint("dev-", i+1))
		must(t, err)
		if d.AckedSeq != rounds*per || d.UploadSerial != rounds {
			t.Errorf("%s: acked %d serial %d, want %d and %d", d.ID, d.AckedSeq, d.UploadSerial, rounds*per, rounds)
		}
	}
	tok, err := st.GetToken(ctx, "r1", "alice", "h1")
	must(t, err)
	if want := int64(10 + (devices-1)*rounds + rounds - 1); tok.LastUsed != want {
		t.Errorf("token at %d, want the maximum %d", tok.LastUsed, want)
	}
}

func testFindAudit(t *testing.T, st store.Store, ss store.SyncStore) {
	for i := range 6 {
		_, err := st.AppendAudit(ctx, eventlog.Entry{Time: when, Kind: []string{"a", "b"}[i%2], Subject: []string{"x", "y", "z"}[i%3]})
		must(t, err)
	}
	seqs := func(es []eventlog.Entry) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	for _, c := range []struct {
		kind, subject string
		before        uint64
		limit         int
		want          []uint64
	}{
		{"a", "", 0, 10, []uint64{5, 3, 1}},
		{"a", "", 5, 10, []uint64{3, 1}},
		{"a", "", 0, 2, []uint64{5, 3}},
		{"b", "x", 0, 10, []uint64{4}},
		{"b", "y", 0, 10, []uint64{2}},
		{"a", "y", 5, 10, []uint64{}},
		{"c", "", 0, 10, []uint64{}},
	} {
		got, err := ss.FindAudit(ctx, c.kind, c.subject, c.before, c.limit)
		must(t, err)
		if g := seqs(got); !slices.Equal(g, c.want) && !(len(g) == 0 && len(c.want) == 0) {
			t.Errorf("FindAudit(%q, %q, %d, %d) = %v, want %v", c.kind, c.subject, c.before, c.limit, g, c.want)
		}
	}
	_, err := ss.FindAudit(ctx, "a", "", 0, 0)
	wantErr(t, err, store.ErrInvalid)
}

func testRefills(t *testing.T, st store.Store, ss store.SyncStore) {
	r := store.Refill{Realm: "r1", Device: "dev-1", UserID: "alice", TokenID: "h1", FromSerial: 7, Serial: 8, Bundle: []byte(`{"bundle":1}`), IssuedAt: when}
	must(t, ss.PutRefill(ctx, r))
	wantErr(t, ss.PutRefill(ctx, r), store.ErrExists)
	got, err := ss.GetRefill(ctx, "r1", "dev-1", "alice", "h1", 7)
	must(t, err)
	if got.Serial != 8 || !bytes.Equal(got.Bundle, r.Bundle) || !got.IssuedAt.Equal(stored(when)) {
		t.Errorf("GetRefill = %+v", got)
	}
	_, err = ss.GetRefill(ctx, "r1", "dev-1", "alice", "h1", 8)
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, ss.PutRefill(ctx, store.Refill{Realm: "r1", Device: "dev-1", UserID: "alice", TokenID: "h1", FromSerial: 9}), store.ErrInvalid)
	// CountRefills counts one token on one device, from since on.
	for i, at := range []time.Time{when.Add(time.Hour), when.Add(2 * time.Hour)} {
		r := r
		r.FromSerial, r.Serial, r.IssuedAt = uint64(20+i), uint64(30+i), at
		must(t, ss.PutRefill(ctx, r))
	}
	other := r
	other.Device, other.FromSerial = "dev-2", 40
	must(t, ss.PutRefill(ctx, other))
	for _, c := range []struct {
		device, token string
		since         time.Time
		want          int
	}{
		{"dev-1", "h1", time.Time{}, 3},
		{"dev-1", "h1", when, 3},
		{"dev-1", "h1", when.Add(time.Hour), 2},
		{"dev-1", "h1", when.Add(3 * time.Hour), 0},
		{"dev-2", "h1", when, 1},
		{"dev-1", "h2", when, 0},
	} {
		if n, err := ss.CountRefills(ctx, "r1", c.device, "alice", c.token, c.since); err != nil || n != c.want {
			t.Errorf("CountRefills(%s, %s, since %s) = %d, %v; want %d", c.device, c.token, c.since, n, err, c.want)
		}
	}
}

// testSyncLargeAudit: an upload's audit entries, many at once (COPY on
// PostgreSQL), continue the one chain and read back exactly.
func testSyncLargeAudit(t *testing.T, st store.Store, ss store.SyncStore) {
	syncFixture(t, st, ss)
	_, err := st.AppendAudit(ctx, auditEntry(0))
	must(t, err)
	const n = 300
	in := make([]eventlog.Entry, n)
	for i := range in {
		in[i] = auditEntry(i + 1)
	}
	var stored []eventlog.Entry
	must(t, ss.SyncDevice(ctx, "r1", "dev-1", when, func(tx store.SyncTx) error {
		var err error
		stored, err = tx.AppendAudit(in)
		return err
	}))
	all := readAudit(t, st, 1000)
	if len(all) != n+1 {
		t.Fatalf("%d audit entries, want %d", len(all), n+1)
	}
	if i, err := eventlog.VerifyChain(nil, all, nil); err != nil {
		t.Fatalf("chain broken at %d: %v", i, err)
	}
	for i := range stored {
		got := all[i+1]
		if got.Seq != stored[i].Seq || !bytes.Equal(got.Hash, stored[i].Hash) || !bytes.Equal(got.Data, stored[i].Data) || got.Subject != stored[i].Subject {
			t.Fatalf("entry %d read back as %+v, stored %+v", i, got, stored[i])
		}
	}
}

// testIssuedBundles: the server's record of bundles issued to a device is
// read inside that device's sync only, by serial and as a span.
func testIssuedBundles(t *testing.T, st store.Store, ss store.SyncStore) {
	syncFixture(t, st, ss)
	must(t, ss.CreateDevice(ctx, activeDevice("r1", "dev-2", 2)))
	b := store.IssuedBundle{Realm: "r1", Device: "dev-1", UserID: "alice", TokenID: "h1", Serial: 7, Type: "hotp", First: 6, Last: 25,
		NotAfter: when.Add(24 * time.Hour), PIN: true, Secrets: 2, IssuedAt: when}
	must(t, ss.PutIssuedBundle(ctx, b))
	wantErr(t, ss.PutIssuedBundle(ctx, b), store.ErrExists)
	later := b
	later.Serial, later.First, later.Last, later.PIN, later.Secrets = 9, 26, 45, false, 0
	must(t, ss.PutIssuedBundle(ctx, later))
	for _, bad := range []func(*store.IssuedBundle){
		func(b *store.IssuedBundle) { b.Device = "" },
		func(b *store.IssuedBundle) { b.Type = "sms" },
		func(b *store.IssuedBundle) { b.Serial = 0 },
		func(b *store.IssuedBundle) { b.First, b.Last = 9, 8 },
		func(b *store.IssuedBundle) { b.Last = 1 << 63 },
		func(b *store.IssuedBundle) { b.Secrets = -1 },
	} {
		x := b
		x.Serial = 99
		bad(&x)
		wantErr(t, ss.PutIssuedBundle(ctx, x), store.ErrInvalid)
	}
	must(t, ss.SyncDevice(ctx, "r1", "dev-1", when, func(tx store.SyncTx) error {
		got, found, err := tx.IssuedBundle("r1", "alice", "h1", 7)
		if err != nil || !found || got.Type != "hotp" || got.First != 6 || got.Last != 25 || !got.PIN || got.Secrets != 2 ||
			!got.NotAfter.Equal(stored(b.NotAfter)) || !got.IssuedAt.Equal(stored(when)) || got.Device != "dev-1" {
			return fmt.Errorf("IssuedBundle = %+v %v %v", got, found, err)
		}
		for _, serial := range []uint64{8, 1 << 63} {
			if _, found, err := tx.IssuedBundle("r1", "alice", "h1", serial); err != nil || found {
				return fmt.Errorf("IssuedBundle of serial %d: %v %v", serial, found, err)
			}
		}
		lo, hi, found, err := tx.IssuedSpan("r1", "alice", "h1")
		if err != nil || !found || lo != 6 || hi != 45 {
			return fmt.Errorf("IssuedSpan = %d..%d %v %v", lo, hi, found, err)
		}
		if _, _, found, err := tx.IssuedSpan("r1", "alice", "h2"); err != nil || found {
			return fmt.Errorf("IssuedSpan of an unissued token: %v %v", found, err)
		}
		return nil
	}))
	// Another device sees none of dev-1's bundles.
	must(t, ss.SyncDevice(ctx, "r1", "dev-2", when, func(tx store.SyncTx) error {
		if _, found, err := tx.IssuedBundle("r1", "alice", "h1", 7); err != nil || found {
			return fmt.Errorf("dev-2 sees dev-1's bundle: %v %v", found, err)
		}
		if _, _, found, err := tx.IssuedSpan("r1", "alice", "h1"); err != nil || found {
			return fmt.Errorf("dev-2 sees dev-1's span: %v %v", found, err)
		}
		return nil
	}))
}
