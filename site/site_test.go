package site_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/siteissue"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/store/storetest"
	"github.com/outpost-auth/outpost/otp"
	"github.com/outpost-auth/outpost/site"
)

// testKDF is the cheapest argon2id cost keys.Seal accepts: tests need speed, not strength.
var testKDF = keys.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1}

var (
	pass = []byte("correct horse battery staple")
	// t0 is in epoch 2 (2026-03-02 to 2026-04-01); epoch 3 is next.
	t0 = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
)

// by is the administrator every test acts as.
var by = siteissue.Actor{Realm: "default", Name: "test"}

// world is a server data directory's issuer and one site, sharing a fake clock.
type world struct {
	t      *testing.T
	now    time.Time
	master *keys.Master
	is     *siteissue.Issuer
	pub    ed25519.PublicKey
	sdir   string
	s      *site.Site
}

func newWorld(t *testing.T) *world {
	t.Helper()
	m, err := keys.GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, now: t0, master: m, sdir: filepath.Join(t.TempDir(), "site")}
	st := storetest.Open(t, storetest.SQLitePath(t))
	w.is = siteissue.New(st.(store.SiteStore), m)
	w.is.Now, w.is.KDF = w.clock, testKDF
	w.pub = m.Signer(0).Public
	return w
}

func (w *world) clock() time.Time { return w.now }

func (w *world) provision(siteID string) []byte {
	w.t.Helper()
	p, err := w.is.Provision(context.Background(), by, "north", siteID, pass)
	if err != nil {
		w.t.Fatal(err)
	}
	return p.Package
}

func (w *world) init(pkg []byte) {
	w.t.Helper()
	s, err := site.Init(context.Background(), w.sdir, site.InitConfig{SiteID: "cab-17", ServerKey: w.pub, Package: pkg, Passphrase: pass, Now: w.clock})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { s.Close() })
	w.s = s
}

func (w *world) cred(tech string, sel siteissue.EpochSel) siteissue.Credential {
	w.t.Helper()
	c, err := w.is.Credential(context.Background(), by, siteissue.CredentialRequest{Scope: "north", Tech: tech, Epoch: sel})
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// code is what an authenticator app shows for c at the world's time.
func (w *world) code(c siteissue.Credential) string {
	w.t.Helper()
	s, err := c.Key.Generate(c.Key.Secret, 0, w.now)
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// status is the site's status (t: the test or subtest asking).
func (w *world) status(t *testing.T) site.Status {
	t.Helper()
	st, err := w.s.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (w *world) verify(tech, code string) (site.Decision, error) {
	return w.s.Verify(context.Background(), tech, code)
}

func (w *world) mustAccept(tech, code string) site.Decision {
	w.t.Helper()
	d, err := w.verify(tech, code)
	if err != nil || !d.OK {
		w.t.Fatalf("verify %s at %s: %+v, %v", tech, w.now.Format(time.RFC3339), d, err)
	}
	return d
}

func (w *world) mustRefuse(tech, code string, want ...error) site.Decision {
	w.t.Helper()
	d, err := w.verify(tech, code)
	if err == nil || d.OK {
		w.t.Fatalf("verify %s at %s was accepted: %+v", tech, w.now.Format(time.RFC3339), d)
	}
	for _, target := range want {
		if !errors.Is(err, target) {
			w.t.Fatalf("verify %s: err = %v, want it to wrap %v", tech, err, target)
		}
	}
	return d
}

// uriCodes is what an authenticator app that read each otpauth URI shows
// at time at: the URI parsed and the code made by the otp package
// (otp/interop_test.go checks both against pyotp and oathtool).
func uriCodes(t *testing.T, at time.Time, uris ...string) []string {
	t.Helper()
	codes := make([]string, len(uris))
	for i, u := range uris {
		k, err := otp.ParseURI(u)
		if err != nil {
			t.Fatal(err)
		}
		if codes[i], err = k.Generate(k.Secret, 0, at); err != nil {
			t.Fatal(err)
		}
	}
	return codes
}

func TestTechniciansCreatedAfterProvisioning(t *testing.T) {
	w := newWorld(t)
	w.init(w.provision("cab-17"))

	// A month later (still epoch 2's successor window), technicians the
	// server never heard of when the site was provisioned get credentials.
	w.now = t0.Add(5 * 24 * time.Hour)
	techs := []string{"tech-001", "jane.doe@example.com", "Tech-001", "x"}
	var uris []string
	for _, tech := range techs {
		c := w.cred(tech, siteissue.Current)
		uris = append(uris, c.Key.URI())
	}
	codes := uriCodes(t, w.now, uris...)
	for i, tech := range techs {
		d := w.mustAccept(tech, codes[i])
		if d.Epoch != 2 || d.Step != uint64(w.now.Unix()/30) {
			t.Errorf("%s: decision %+v", tech, d)
		}
		// One use per code per technician.
		w.mustRefuse(tech, codes[i], site.ErrRefused, site.ErrReplayed)
	}
	// The next step's code is accepted; an earlier one is not.
	w.now = w.now.Add(30 * time.Second)
	next := uriCodes(t, w.now, uris[0])[0]
	prev := uriCodes(t, w.now.Add(-60*time.Second), uris[0])[0]
	w.mustRefuse(techs[0], prev, site.ErrRefused)
	w.now = w.now.Add(3 * time.Second) // past the 2 s delay a failure imposes
	w.mustAccept(techs[0], next)

	// A code from the window's edges (one step back and forward) is accepted.
	w.now = w.now.Add(2 * time.Minute)
	edge := uriCodes(t, w.now.Add(-30*time.Second), uris[1])[0]
	w.mustAccept(techs[1], edge)
	w.now = w.now.Add(2 * time.Minute)
	w.mustRefuse(techs[2], uriCodes(t, w.now.Add(-90*time.Second), uris[2])[0], site.ErrWrongCode)

	if bad, err := w.s.VerifyLog(context.Background()); err != nil {
		t.Fatalf("log: bad entry %d: %v", bad, err)
	}
}

func TestRevocationListUpdates(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.init(w.provision("cab-17"))
	alice, bob := w.cred("alice", siteissue.Current), w.cred("bob", siteissue.Current)
	w.mustAccept("alice", w.code(alice))

	r1, err := w.is.Revoke(ctx, by, "north", []string{"alice"}, nil, "lost phone")
	if err != nil {
		t.Fatal(err)
	}
	if r1.Serial != 2 || r1.Through != 3 || r1.Entries != 1 {
		t.Fatalf("revoke: %+v", r1)
	}
	// Without the list the site still accepts alice (docs/sites.md says so).
	w.now = w.now.Add(time.Minute)
	w.mustAccept("alice", w.code(alice))

	u, err := w.s.Update(ctx, r1.List, nil)
	if err != nil {
		t.Fatal(err)
	}
	if u.Type != site.TypeRevocationList || u.RevocationSerial != 2 || u.Revoked != 1 {
		t.Fatalf("update: %+v", u)
	}
	w.now = w.now.Add(time.Minute)
	d := w.mustRefuse("alice", w.code(alice), site.ErrRefused, site.ErrRevoked)
	if d.Failures != 0 {
		t.Fatalf("a revoked technician's attempt counted as a failure: %+v", d)
	}
	// Her credential for the next epoch is revoked too (it may have been issued).
	w.mustRefuse("alice", w.code(w.cred("bob", siteissue.Next)), site.ErrRevoked)
	w.mustAccept("bob", w.code(bob))

	// The same list again, and any older list, are refused and change nothing.
	if _, err := w.s.Update(ctx, r1.List, nil); !errors.Is(err, site.ErrNotNewer) {
		t.Fatalf("same list: %v", err)
	}
	r2, err := w.is.Revoke(ctx, by, "north", nil, []string{"alice"}, "")
	if err != nil {
		t.Fatal(err)
	}
	carol := w.cred("carol", siteissue.Current)
	r3, err := w.is.Revoke(ctx, by, "north", []string{"carol"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.s.Update(ctx, r3.List, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.s.Update(ctx, r2.List, nil); !errors.Is(err, site.ErrNotNewer) || !strings.Contains(err.Error(), "older") {
		t.Fatalf("older list: %v", err)
	}
	st := w.status(t)
	if st.RevocationSerial != 4 || st.Revoked != 1 {
		t.Fatalf("status after refused older list: %+v", st)
	}
	// r3 no longer lists alice (undone in r2): she is accepted again.
	w.now = w.now.Add(time.Minute)
	w.mustAccept("alice", w.code(alice))
	w.mustRefuse("carol", w.code(carol), site.ErrRevoked)

	// The issuer refuses carol a credential for a revoked epoch, and
	// reinstates her only for a later epoch and only when told to.
	if _, err := w.is.Credential(ctx, by, siteissue.CredentialRequest{Scope: "north", Tech: "carol", Epoch: siteissue.Next, Reinstate: true}); !errors.Is(err, siteissue.ErrRevoked) {
		t.Fatalf("credential for a revoked epoch: %v", err)
	}
	if _, err := w.is.Credential(ctx, by, siteissue.CredentialRequest{Scope: "north", Tech: "carol", Epoch: 4}); !errors.Is(err, siteissue.ErrRevoked) {
		t.Fatalf("reinstatement without --reinstate: %v", err)
	}
	if _, err := w.is.Credential(ctx, by, siteissue.CredentialRequest{Scope: "north", Tech: "carol", Epoch: 4, Reinstate: true}); err != nil {
		t.Fatal(err)
	}
	// A list of another scope is refused.
	if _, err := w.is.Provision(ctx, by, "south", "cab-99", pass); err != nil {
		t.Fatal(err)
	}
	rs, err := w.is.Revoke(ctx, by, "south", []string{"alice"}, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.s.Update(ctx, rs.List, nil); !errors.Is(err, site.ErrBadPackage) || !errors.Is(err, artifact.ErrWrongBound) {
		t.Fatalf("list of another scope: %v", err)
	}
}

func TestScheduledEpochRollNeedsNoFlagDay(t *testing.T) {
	w := newWorld(t)
	w.init(w.provision("cab-17")) // epochs 2 (to Apr 1) and 3 (to May 1)
	cur, next := w.cred("tech-1", siteissue.Current), w.cred("tech-1", siteissue.Next)
	if cur.Epoch.N != 2 || next.Epoch.N != 3 || !cur.Epoch.End.Equal(next.Epoch.Start) {
		t.Fatalf("epochs %v, %v", cur.Epoch, next.Epoch)
	}
	if bytes.Equal(cur.Key.Secret, next.Key.Secret) {
		t.Fatal("two epochs gave the same seed")
	}
	boundary := cur.Epoch.End
	// Overlap (7 days either side): both credentials work, before and after the boundary.
	for i, at := range []time.Time{boundary.Add(-3 * 24 * time.Hour), boundary.Add(-time.Hour), boundary.Add(time.Hour), boundary.Add(6 * 24 * time.Hour)} {
		w.now = at
		d := w.mustAccept("tech-1", w.code(cur))
		if d.Epoch != 2 {
			t.Fatalf("%d: epoch %d", i, d.Epoch)
		}
		w.now = at.Add(30 * time.Second)
		if d := w.mustAccept("tech-1", w.code(next)); d.Epoch != 3 {
			t.Fatalf("%d: epoch %d", i, d.Epoch)
		}
	}
	// Before the overlap the next epoch is not open; after it the old one is closed.
	w2 := newWorld(t)
	w2.init(w2.provision("cab-17"))
	n2 := w2.cred("tech-2", siteissue.Next)
	w2.now = boundary.Add(-8 * 24 * time.Hour)
	w2.mustRefuse("tech-2", w2.code(n2), site.ErrWrongCode)
	w.now = boundary.Add(7*24*time.Hour + time.Minute)
	w.mustRefuse("tech-1", w.code(cur), site.ErrWrongCode)
	w.now = w.now.Add(3 * time.Second)
	w.mustAccept("tech-1", w.code(next))

	// After the last epoch (and its overlap) nothing is accepted until a new package.
	w.now = next.Epoch.End.Add(7*24*time.Hour + time.Second)
	w.mustRefuse("tech-1", w.code(next), site.ErrNoEpoch)
	newer := w.provision("cab-17") // epochs 4 and 5
	if _, err := w.s.Update(context.Background(), newer, func() ([]byte, error) { return pass, nil }); err != nil {
		t.Fatal(err)
	}
	w.mustAccept("tech-1", w.code(w.cred("tech-1", siteissue.Current)))
}

func TestEmergencyRoll(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.init(w.provision("cab-17"))
	old, oldNext := w.cred("tech-1", siteissue.Current), w.cred("tech-1", siteissue.Next)
	w.mustAccept("tech-1", w.code(old))

	w.now = w.now.Add(time.Hour)
	r, err := w.is.Roll(ctx, by, "north")
	if err != nil {
		t.Fatal(err)
	}
	// The new epoch skips 3, which every package so far carried.
	if r.Previous.N != 2 || r.Current.N != 4 || !r.Current.Start.Equal(w.now) || len(r.Sites) != 1 || r.Sites[0] != "cab-17" {
		t.Fatalf("roll: %+v", r)
	}
	if _, err := w.is.Credential(ctx, by, siteissue.CredentialRequest{Scope: "north", Tech: "tech-1", Epoch: 3}); !errors.Is(err, siteissue.ErrSkipped) {
		t.Fatalf("credential for a skipped epoch: %v", err)
	}
	fresh := w.cred("tech-1", siteissue.Current)
	// Until the site gets a new package it knows nothing of the roll.
	w.now = w.now.Add(time.Minute)
	w.mustAccept("tech-1", w.code(old))
	w.now = w.now.Add(time.Minute)
	w.mustRefuse("tech-1", w.code(fresh), site.ErrWrongCode)

	w.now = w.now.Add(time.Minute)
	u, err := w.s.Update(ctx, w.provision("cab-17"), func() ([]byte, error) { return pass, nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Epochs) != 2 || u.Epochs[0].N != 4 || u.Epochs[1].N != 5 {
		t.Fatalf("update: %+v", u)
	}
	w.now = w.now.Add(time.Minute)
	w.mustRefuse("tech-1", w.code(old), site.ErrWrongCode)
	w.now = w.now.Add(5 * time.Second) // second failure in a row: a 4 s delay
	w.mustRefuse("tech-1", w.code(oldNext), site.ErrWrongCode)
	w.now = w.now.Add(time.Minute)
	w.mustAccept("tech-1", w.code(fresh))
	nextCred := w.cred("tech-1", siteissue.Next)
	w.now = fresh.Epoch.End.Add(-24 * time.Hour) // inside the overlap before epoch 5
	if d := w.mustAccept("tech-1", w.code(nextCred)); d.Epoch != 5 {
		t.Fatalf("epoch %d", d.Epoch)
	}
}

func TestBadPackages(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	good := w.provision("cab-17")
	otherServer := newWorld(t)
	foreign := otherServer.provision("cab-17")
	forOther := w.provision("cab-18")
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x01

	for _, tc := range []struct {
		name string
		pkg  []byte
		pass []byte
		now  time.Time
		want []error
	}{
		{"another site", forOther, pass, t0, []error{site.ErrBadPackage, artifact.ErrWrongBound}},
		{"flipped bit", flipped, pass, t0, []error{site.ErrBadPackage, artifact.ErrInvalid}},
		{"truncated", good[:len(good)/3], pass, t0, []error{site.ErrBadPackage, artifact.ErrInvalid}},
		{"unknown server", foreign, pass, t0, []error{site.ErrBadPackage, artifact.ErrUnknownKey}},
		{"epochs over", good, pass, time.Date(2026, 5, 9, 0, 0, 0, 0, time.UTC), []error{site.ErrBadPackage, artifact.ErrExpired}},
		{"not yet valid", good, pass, time.Date(2026, 2, 20, 0, 0, 0, 0, time.UTC), []error{site.ErrBadPackage, artifact.ErrNotYetValid}},
		{"wrong passphrase", good, []byte("not the passphrase"), t0, []error{site.ErrBadPackage, keys.ErrWrongPassphrase}},
		{"a revocation list", mustList(t, w), pass, t0, []error{site.ErrBadPackage, artifact.ErrWrongType}},
		{"empty", nil, pass, t0, []error{site.ErrBadPackage}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s")
			_, err := site.Init(ctx, dir, site.InitConfig{SiteID: "cab-17", ServerKey: w.pub, Package: tc.pkg, Passphrase: tc.pass,
				Now: func() time.Time { return tc.now }})
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Fatalf("err = %v, want it to wrap %v", err, want)
				}
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused package left files behind: %v", err)
			}
		})
	}

	// The same files offered as updates to an installed site change nothing.
	w.init(good)
	before := w.status(t)
	older := good
	newer := w.provision("cab-17")
	if _, err := w.s.Update(ctx, newer, func() ([]byte, error) { return pass, nil }); err != nil {
		t.Fatal(err)
	}
	south, err := w.is.Provision(ctx, by, "south", "cab-17", pass)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		data []byte
		want error
	}{
		"older package":      {older, site.ErrNotNewer},
		"same package":       {newer, site.ErrNotNewer},
		"another site":       {forOther, artifact.ErrWrongBound},
		"flipped bit":        {flipped, artifact.ErrInvalid},
		"unknown server":     {foreign, artifact.ErrUnknownKey},
		"another scope":      {south.Package, site.ErrBadPackage},
		"garbage":            {[]byte("{}\n"), site.ErrBadPackage},
		"trailing data":      {append(bytes.Clone(newer), "{}"...), artifact.ErrInvalid},
		"wrong passphrase":   {w.provision("cab-17"), keys.ErrWrongPassphrase},
		"no passphrase func": {w.provision("cab-17"), nil},
	} {
		t.Run("update "+name, func(t *testing.T) {
			pf := func() ([]byte, error) { return []byte("wrong passphrase!"), nil }
			if name == "no passphrase func" {
				pf = nil
			}
			_, err := w.s.Update(ctx, tc.data, pf)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			st := w.status(t)
			if st.PackageSerial == before.PackageSerial || st.LogEntries != before.LogEntries+1 {
				t.Fatalf("a refused update changed the site: %+v", st)
			}
		})
	}
}

func mustList(t *testing.T, w *world) []byte {
	r, err := w.is.Revoke(context.Background(), by, "north", nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	return r.List
}

func TestMalformedCodesCountAsFailures(t *testing.T) {
	w := newWorld(t)
	w.init(w.provision("cab-17"))
	for i, code := range []string{"", "12345", "1234567", "12a456", " 23456", "１２３４５６", "123456\n"} {
		w.now = w.now.Add(time.Hour) // past any delay
		d := w.mustRefuse(fmt.Sprintf("tech-%d", i), code, site.ErrRefused, otp.ErrMalformedCode)
		if d.Failures != 1 || d.Reason != site.ReasonMalformedCode {
			t.Fatalf("%q: %+v", code, d)
		}
	}
	for _, tech := range []string{"", "has space", strings.Repeat("a", 129), "tab\t", "ünï"} {
		if _, err := w.verify(tech, "123456"); !errors.Is(err, site.ErrBadID) {
			t.Fatalf("tech %q: %v", tech, err)
		}
	}
}

func TestLockoutAndDelay(t *testing.T) {
	w := newWorld(t)
	w.init(w.provision("cab-17"))
	c := w.cred("tech-1", siteissue.Current)
	wrong := func() string {
		good := w.code(c)
		return fmt.Sprintf("%06d", (atoi(good)+1)%1000000)
	}
	// Failure 1: then a 2 s delay; an attempt inside it is refused unchecked.
	d := w.mustRefuse("tech-1", wrong(), site.ErrWrongCode)
	if !d.RetryAt.Equal(w.now.Add(2 * time.Second)) {
		t.Fatalf("retry at %v", d.RetryAt)
	}
	w.now = w.now.Add(time.Second)
	d = w.mustRefuse("tech-1", w.code(c), site.ErrLocked)
	if d.Failures != 1 || d.Reason != site.ReasonLocked {
		t.Fatalf("attempt inside the delay: %+v", d)
	}
	// Failures 2..5 with doubling delays; the fifth locks for 15 minutes.
	for i, wait := range []time.Duration{time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second} {
		w.now = w.now.Add(wait)
		d = w.mustRefuse("tech-1", wrong(), site.ErrWrongCode)
		if d.Failures != i+2 {
			t.Fatalf("failures %d", d.Failures)
		}
	}
	if !d.RetryAt.Equal(w.now.Add(15 * time.Minute)) {
		t.Fatalf("lockout until %v", d.RetryAt)
	}
	w.now = w.now.Add(14 * time.Minute)
	w.mustRefuse("tech-1", w.code(c), site.ErrLocked)
	// Another technician is not affected.
	w.mustAccept("tech-2", w.code(w.cred("tech-2", siteissue.Current)))
	w.now = w.now.Add(time.Minute + time.Second)
	d = w.mustAccept("tech-1", w.code(c))
	if d.Failures != 0 {
		t.Fatalf("success did not reset the counter: %+v", d)
	}
}

func TestSiteWideFailureBudget(t *testing.T) {
	w := newWorld(t)
	w.init(w.provision("cab-17"))
	// An attacker trying fresh technician ids escapes per-technician
	// lockout; the site-wide budget (20 an hour) stops them.
	for i := range 20 {
		w.mustRefuse(fmt.Sprintf("guess-%d", i), "000000", site.ErrWrongCode)
	}
	d := w.mustRefuse("guess-x", "000000", site.ErrLocked)
	if d.Reason != site.ReasonSiteLocked || !d.RetryAt.Equal(w.now.Add(3*time.Minute)) {
		t.Fatalf("site lock: %+v", d)
	}
	// Even a right code waits (and is not consumed).
	c := w.cred("tech-1", siteissue.Current)
	w.mustRefuse("tech-1", w.code(c), site.ErrLocked)
	w.now = w.now.Add(3 * time.Minute)
	w.mustAccept("tech-1", w.code(c))
}

func TestClockHighWaterMark(t *testing.T) {
	w := newWorld(t)
	w.init(w.provision("cab-17"))
	c := w.cred("tech-1", siteissue.Current)
	w.now = t0.Add(time.Hour)
	w.mustAccept("tech-1", w.code(c))
	// Set back within the tolerance (5 min): fine.
	w.now = t0.Add(time.Hour - 4*time.Minute)
	w.mustAccept("tech-2", w.code(w.cred("tech-2", siteissue.Current)))
	// Set back further: refused, nothing counted.
	w.now = t0.Add(time.Hour - 10*time.Minute)
	d := w.mustRefuse("tech-3", w.code(w.cred("tech-3", siteissue.Current)), site.ErrRefused, site.ErrClockBack)
	if d.Failures != 0 || d.Reason != site.ReasonClockBack {
		t.Fatalf("%+v", d)
	}
	st := w.status(t)
	if !st.ClockHighWater.Equal(t0.Add(time.Hour)) {
		t.Fatalf("high water %v", st.ClockHighWater)
	}
}

func TestConcurrentVerifiesAcceptOnce(t *testing.T) {
	w := newWorld(t)
	w.init(w.provision("cab-17"))
	code := w.code(w.cred("tech-1", siteissue.Current))
	other, err := site.Open(context.Background(), w.sdir) // a second process on the same directory
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.Now = w.clock
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, replayed := 0, 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := w.s
			if i%2 == 1 {
				s = other
			}
			_, err := s.Verify(context.Background(), "tech-1", code)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, site.ErrReplayed):
				replayed++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 || replayed != 7 {
		t.Fatalf("accepted %d times, replayed %d", ok, replayed)
	}
}

func TestLogRecordsEveryDecisionWithoutSecrets(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.init(w.provision("cab-17"))
	c := w.cred("tech-1", siteissue.Current)
	code := w.code(c)
	w.mustAccept("tech-1", code)
	w.mustRefuse("tech-1", code, site.ErrReplayed)
	w.now = w.now.Add(time.Minute)
	w.mustRefuse("tech-1", "000000")
	w.mustRefuse("tech-1", "000000", site.ErrLocked)

	entries, err := w.s.Log(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range entries {
		kinds = append(kinds, e.Kind)
		if bytes.Contains(e.Data, []byte(`"code"`)) || bytes.Contains(e.Data, c.Key.Secret) {
			t.Fatalf("log entry %d holds a secret: %s", e.Seq, e.Data)
		}
		if e.Kind != site.KindInit && (e.Actor != "cab-17" || e.Subject != "tech-1") {
			t.Fatalf("entry %d: actor %q subject %q", e.Seq, e.Actor, e.Subject)
		}
	}
	want := []string{site.KindInit, site.KindVerifyOK, site.KindRefused, site.KindRefused, site.KindLocked}
	if strings.Join(kinds, " ") != strings.Join(want, " ") {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}
	var data map[string]any
	if err := json.Unmarshal(entries[2].Data, &data); err != nil {
		t.Fatal(err)
	}
	if data["reason"] != site.ReasonReplayed {
		t.Fatalf("replay entry %s", entries[2].Data)
	}
	chain := make([]eventlog.Entry, len(entries))
	for i, e := range entries {
		chain[i] = eventlog.Entry(e)
	}
	if _, err := eventlog.VerifyChain(nil, chain, w.s.DevicePublicKey()); err != nil {
		t.Fatal(err)
	}
}

func TestInitAndOpen(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	pkg := w.provision("cab-17")
	if _, err := site.Open(ctx, w.sdir); !errors.Is(err, site.ErrNotInitialised) {
		t.Fatalf("open before init: %v", err)
	}
	w.init(pkg)
	st, err := w.s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Site != "cab-17" || st.Scope != "north" || len(st.Epochs) != 2 || st.PackageSerial != 1 || st.RevocationSerial != 1 ||
		st.LogEntries != 1 || st.ServerKey != keys.KeyID(w.pub) || !st.AcceptsUntil.Equal(time.Date(2026, 5, 8, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("status %+v", st)
	}
	_, err = site.Init(ctx, w.sdir, site.InitConfig{SiteID: "cab-17", ServerKey: w.pub, Package: pkg, Passphrase: pass, Now: w.clock})
	if !errors.Is(err, site.ErrAlreadyInitialised) {
		t.Fatalf("second init: %v", err)
	}
	s2, err := site.Open(ctx, w.sdir)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	for _, bad := range []string{"", "a b", "-x", strings.Repeat("s", 65)} {
		if _, err := site.Init(ctx, t.TempDir(), site.InitConfig{SiteID: bad, ServerKey: w.pub, Package: pkg, Passphrase: pass}); !errors.Is(err, site.ErrBadID) {
			t.Fatalf("site id %q: %v", bad, err)
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
