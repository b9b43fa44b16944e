package siteissue

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/keyexport"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/sitewire"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/otp"
	"github.com/outpost-auth/outpost/site"
)

var testKDF = keys.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1}

var (
	admin = Actor{Realm: "default", Name: "test:admin"}
	other = Actor{Realm: "other", Name: "test:other"}
)

// engines names each engine with a function giving a fresh, empty database
// (PostgreSQL only when OUTPOST_TEST_POSTGRES_DSN is set).
func engines() map[string]func(t testing.TB) string {
	m := map[string]func(t testing.TB) string{"sqlite": storetest.SQLitePath}
	if os.Getenv(storetest.PostgresEnv) != "" {
		m["postgres"] = storetest.PostgresDSN
	}
	return m
}

func newIssuerOn(t *testing.T, dsn string, now *time.Time) (*Issuer, store.Store) {
	t.Helper()
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.Open(t, dsn)
	is := New(st.(store.SiteStore), m)
	is.Now, is.KDF = func() time.Time { return *now }, testKDF
	return is, st
}

func newIssuer(t *testing.T, now *time.Time) *Issuer {
	is, _ := newIssuerOn(t, storetest.SQLitePath(t), now)
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

func cred(tech string, sel EpochSel) CredentialRequest {
	return CredentialRequest{Scope: "north", Tech: tech, Epoch: sel}
}

func TestPolicyAndScopes(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	is := newIssuer(t, &now)
	if _, err := is.Scope(ctx, admin, "north"); !errors.Is(err, ErrUnknownScope) {
		t.Fatalf("unknown scope: %v", err)
	}
	p := site.DefaultPolicy()
	p.Digits, p.Window = 8, 2
	sc, err := is.SetPolicy(ctx, admin, "north", p)
	if err != nil || sc.Policy != p || sc.Current.N != 2 || sc.Next.N != 3 {
		t.Fatalf("SetPolicy: %+v, %v", sc, err)
	}
	c, err := is.Credential(ctx, admin, cred("tech-1", Current))
	if err != nil || c.Key.Digits != 8 || c.Key.Issuer != "Outpost north epoch 2" || c.Key.Account != "tech-1" || len(c.Key.Secret) != 20 {
		t.Fatalf("credential %+v, %v", c, err)
	}
	p.Digits = 6
	if _, err := is.SetPolicy(ctx, admin, "north", p); !errors.Is(err, ErrPolicyFixed) {
		t.Fatalf("changing digits after issuing: %v", err)
	}
	p.Digits, p.Lockout = 8, time.Hour
	if _, err := is.SetPolicy(ctx, admin, "north", p); err != nil {
		t.Fatalf("changing the lockout: %v", err)
	}
	// A partial change keeps the other values.
	w := 3
	if sc, err := is.UpdatePolicy(ctx, admin, "north", PolicyChange{Window: &w}); err != nil || sc.Policy.Window != 3 || sc.Policy.Lockout != time.Hour || sc.Policy.Digits != 8 {
		t.Fatalf("UpdatePolicy: %+v, %v", sc.Policy, err)
	}
	bad := p
	bad.Window = 99
	if _, err := is.SetPolicy(ctx, admin, "north", bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid policy: %v", err)
	}
	neg := int64(-5)
	if _, err := is.UpdatePolicy(ctx, admin, "north", PolicyChange{LockoutS: &neg}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative lockout: %v", err)
	}
	for _, name := range []string{"", "a/b", "../x", ".hidden"} {
		if _, err := is.SetPolicy(ctx, admin, name, p); !errors.Is(err, site.ErrBadID) {
			t.Fatalf("scope %q: %v", name, err)
		}
	}
	if _, err := is.Credential(ctx, admin, cred("tech-1", 1)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("credential for an epoch that is over: %v", err)
	}
	if _, err := is.Credential(ctx, admin, cred("tech-1", 9999)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("credential for an epoch far ahead: %v", err)
	}
	if _, err := is.Credential(ctx, admin, cred("bad id", Current)); !errors.Is(err, site.ErrBadID) {
		t.Fatalf("bad tech id: %v", err)
	}
	if _, err := is.Provision(ctx, admin, "north", "bad/site", []byte("passphrase!")); !errors.Is(err, site.ErrBadID) {
		t.Fatalf("bad site id: %v", err)
	}
	if _, err := is.Provision(ctx, admin, "north", "cab-1", []byte("short")); !errors.Is(err, keys.ErrWeakPassphrase) {
		t.Fatalf("weak passphrase: %v", err)
	}
	// A failed provision consumed nothing.
	if sc, _ := is.Scope(ctx, admin, "north"); sc.PackageSerial != 0 || len(sc.Sites) != 0 {
		t.Fatalf("failed provision left state: %+v", sc)
	}
	// The scope's JSON carries its policy in the wire form and reads back.
	raw, _ := json.Marshal(sc)
	var back Scope
	if err := json.Unmarshal(raw, &back); err != nil || back.Policy != sc.Policy || back.Current != sc.Current {
		t.Fatalf("Scope JSON round trip: %+v, %v (%s)", back, err, raw)
	}
}

func TestRevokeListsAndPrunes(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	is := newIssuer(t, &now)
	if _, err := is.Revoke(ctx, admin, "north", []string{"a"}, nil, ""); !errors.Is(err, ErrUnknownScope) {
		t.Fatalf("revoke in an unknown scope: %v", err)
	}
	if _, err := is.Provision(ctx, admin, "north", "cab-1", []byte("passphrase!")); err != nil {
		t.Fatal(err)
	}
	r, err := is.Revoke(ctx, admin, "north", []string{"old-tech"}, nil, "left the company")
	if err != nil || r.Serial != 2 || r.Through != 3 || r.Entries != 1 {
		t.Fatalf("revoke: %+v, %v", r, err)
	}
	if _, err := is.Revoke(ctx, admin, "north", nil, []string{"never-revoked"}, ""); !errors.Is(err, ErrNotRevoked) {
		t.Fatalf("undo of a technician who is not revoked: %v", err)
	}
	if _, err := is.Revoke(ctx, admin, "north", []string{"x"}, nil, "two\nlines"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("multi-line reason: %v", err)
	}
	same, err := is.Revoke(ctx, admin, "north", nil, nil, "")
	if err != nil || same.Serial != 2 || !bytes.Equal(same.List, r.List) {
		t.Fatalf("no change should give the stored list: %+v, %v", same, err)
	}
	// Long after epoch 3 (and the largest overlap) ended, its entries leave new lists.
	now = Origin.Add(4*EpochLength + site.MaxOverlap + time.Hour)
	r2, err := is.Revoke(ctx, admin, "north", []string{"new-tech"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	l, err := sitewire.ReadRevocationList(r2.List, artifact.Keys{is.signer.Public}, "north")
	if err != nil {
		t.Fatal(err)
	}
	if r2.Serial != 3 || len(l.Revoked) != 1 || l.Revoked[0].Tech != "new-tech" || l.Revoked[0].Through != r2.Through {
		t.Fatalf("pruned list: %+v %+v", r2, l.Revoked)
	}
	// The issuer still remembers old-tech for credentials of old epochs.
	sc, _ := is.Scope(ctx, admin, "north")
	if len(sc.Revoked) != 2 {
		t.Fatalf("scope revocations: %+v", sc.Revoked)
	}
	// Revoking again keeps the first time and reason, and covers the later epochs too.
	r3, err := is.Revoke(ctx, admin, "north", []string{"old-tech"}, nil, "again")
	if err != nil || r3.Serial != 4 {
		t.Fatalf("revoke again: %+v, %v", r3, err)
	}
	sc, _ = is.Scope(ctx, admin, "north")
	if sc.Revoked[1].Tech != "old-tech" || sc.Revoked[1].Through != r3.Through || !sc.Revoked[1].At.Equal(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("re-revoked: %+v", sc.Revoked)
	}
}

// TestAuditEntries: every change is recorded with its kind, actor and
// subject, in the same transaction, and no entry holds a key, seed or
// passphrase.
func TestAuditEntries(t *testing.T) {
	for name, dsn := range engines() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
			is, st := newIssuerOn(t, dsn(t), &now)
			pass := []byte("a package passphrase")
			filePass := []byte("a key file passphrase")
			p := site.DefaultPolicy()
			p.Digits = 8
			_, err := is.SetPolicy(ctx, admin, "north", p)
			ok(t, err)
			prov, err := is.Provision(ctx, admin, "north", "cab-1", pass)
			if err != nil {
				t.Fatal(err)
			}
			c, err := is.Credential(ctx, admin, CredentialRequest{Scope: "north", Tech: "tech-1", Epoch: Next, Passphrase: filePass})
			if err != nil {
				t.Fatal(err)
			}
			_, err = is.Revoke(ctx, admin, "north", []string{"tech-7"}, nil, "lost phone")
			ok(t, err)
			_, err = is.Revoke(ctx, admin, "north", nil, nil, "") // reading the list changes nothing
			ok(t, err)
			now = now.Add(time.Minute)
			_, err = is.Roll(ctx, admin, "north")
			ok(t, err)
			// A refused action leaves no entry.
			if _, err := is.Credential(ctx, admin, cred("tech-7", Current)); !errors.Is(err, ErrRevoked) {
				t.Fatalf("revoked technician: %v", err)
			}
			entries, err := st.ListAudit(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			want := []struct{ kind, subject string }{{"site.policy", "north"}, {"site.provision", "north"}, {"site.credential", "tech-1"},
				{"site.revoke", "north"}, {"site.roll", "north"}}
			if len(entries) != len(want) {
				t.Fatalf("%d audit entries, want %d: %+v", len(entries), len(want), entries)
			}
			for i, w := range want {
				if e := entries[i]; e.Kind != w.kind || e.Subject != w.subject || e.Actor != admin.Name {
					t.Errorf("entry %d: %s %s by %s, want %s %s", i, e.Kind, e.Subject, e.Actor, w.kind, w.subject)
				}
			}
			var credData struct {
				Scope       string `json:"scope"`
				Epoch       uint32 `json:"epoch"`
				Fingerprint string `json:"fingerprint"`
				KeyFile     bool   `json:"key_file"`
			}
			if err := json.Unmarshal(entries[2].Data, &credData); err != nil || credData.Epoch != 3 || !credData.KeyFile || credData.Fingerprint != c.Fingerprint {
				t.Errorf("site.credential data %s", entries[2].Data)
			}
			if !strings.Contains(string(entries[1].Data), `"serial":1`) || !strings.Contains(string(entries[3].Data), `"reason":"lost phone"`) {
				t.Errorf("provision %s, revoke %s", entries[1].Data, entries[3].Data)
			}
			secrets := []string{string(pass), string(filePass), otp.EncodeSecret(c.Key.Secret), hex.EncodeToString(c.Key.Secret)}
			for _, e := range prov.Epochs {
				secrets = append(secrets, hex.EncodeToString(ScopeKey(is.master, "north", e.N)))
			}
			for _, e := range entries {
				for _, s := range secrets {
					if strings.Contains(strings.ToLower(string(e.Data)), strings.ToLower(s)) {
						t.Errorf("entry %s holds a secret: %s", e.Kind, e.Data)
					}
				}
			}
			// The key file opens to the credential.
			sealed, secret, err := keys.Open(filePass, c.KeyFile)
			if err != nil || !bytes.Equal(secret, c.Key.Secret) || sealed.Meta["scope"] != "north" || sealed.Purpose != string(keys.PurposeTechnician) {
				t.Errorf("key file: %+v, %v", sealed, err)
			}
			if in := c.Info(); in.OTPAuthURI != "" || in.KeyFile == nil {
				t.Errorf("a credential with a key file also answers its URI: %+v", in)
			}
		})
	}
}

// ok fails the test on err.
func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRealms: a scope belongs to one realm; another realm neither sees it
// nor can create one with its id.
func TestRealms(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	is := newIssuer(t, &now)
	_, err := is.Credential(ctx, admin, cred("tech-1", Current))
	ok(t, err)
	if _, err := is.Scope(ctx, other, "north"); !errors.Is(err, ErrUnknownScope) {
		t.Errorf("another realm's scope: %v", err)
	}
	if _, err := is.Revoke(ctx, other, "north", []string{"tech-1"}, nil, ""); !errors.Is(err, ErrUnknownScope) {
		t.Errorf("revoke in another realm's scope: %v", err)
	}
	if _, err := is.Credential(ctx, other, cred("tech-1", Current)); !errors.Is(err, ErrScopeTaken) {
		t.Errorf("credential in another realm's scope: %v", err)
	}
	if _, err := is.Provision(ctx, other, "north", "cab-1", []byte("passphrase!")); !errors.Is(err, ErrScopeTaken) {
		t.Errorf("provision in another realm's scope: %v", err)
	}
}

func TestMasterPassphraseRefused(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	is := newIssuer(t, &now)
	is.MasterPassphrase = []byte("the master passphrase")
	if _, err := is.Provision(ctx, admin, "north", "cab-1", []byte("the master passphrase")); !errors.Is(err, keyexport.ErrMasterPassphrase) {
		t.Errorf("provision: %v", err)
	}
	req := cred("tech-1", Current)
	req.Passphrase = []byte("the master passphrase")
	if _, err := is.Credential(ctx, admin, req); !errors.Is(err, keyexport.ErrMasterPassphrase) {
		t.Errorf("credential: %v", err)
	}
	if _, err := is.Scope(ctx, admin, "north"); !errors.Is(err, ErrUnknownScope) {
		t.Errorf("a refused request created the scope: %v", err)
	}
}

// rollingStore rolls the scope the first time a transaction is opened,
// as an administrator might while a package is being sealed.
type rollingStore struct {
	store.SiteStore
	roll func()
}

func (r *rollingStore) SiteScopeTx(ctx context.Context, realm, id string, c *store.SiteScope, fn func(store.SiteTx) error) error {
	if f := r.roll; f != nil {
		r.roll = nil
		f()
	}
	return r.SiteStore.SiteScopeTx(ctx, realm, id, c, fn)
}

// TestProvisionAfterARollDuringSealing: a roll between sealing and locking
// makes Provision seal the new epochs' keys: a package never carries the
// keys the roll retired.
func TestProvisionAfterARollDuringSealing(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	is, st := newIssuerOn(t, storetest.SQLitePath(t), &now)
	_, err := is.Credential(ctx, admin, cred("tech-1", Next)) // epoch 3 handed out
	ok(t, err)
	rs := &rollingStore{SiteStore: st.(store.SiteStore)}
	rs.roll = func() {
		now = now.Add(time.Second)
		_, err := is.Roll(ctx, admin, "north")
		ok(t, err)
	}
	is.store = rs
	pass := []byte("package passphrase")
	p, err := is.Provision(ctx, admin, "north", "cab-1", pass)
	if err != nil {
		t.Fatal(err)
	}
	if p.Epochs[0].N != 4 || p.Epochs[1].N != 5 {
		t.Fatalf("package epochs %v, want 4 and 5 (after the roll)", p.Epochs)
	}
	pkg, err := sitewire.ReadPackage(p.Package, is.ring(), "cab-1", now, func(w sitewire.Policy) error {
		raw, err := json.Marshal(w)
		if err == nil {
			_, err = site.UnmarshalPolicy(raw)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := pkg.OpenKeys(pass)
	if err != nil || !bytes.Equal(ks[0], ScopeKey(is.master, "north", 4)) || !bytes.Equal(ks[1], ScopeKey(is.master, "north", 5)) {
		t.Fatalf("sealed keys are not those of epochs 4 and 5: %v", err)
	}
}
