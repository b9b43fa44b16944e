package fieldsync_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/bundle"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/fieldsync"
	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
	"github.com/outpost-auth/outpost/otp"
)

// The holder of a field device holds its key: these uploads are forged and
// signed with the device's OWN key, as its holder could. Each claim goes
// beyond what the server issued to the device; each must be recorded as an
// incident and change no state, while the honest part of the upload applies.

// forge returns the device's next upload with forged events appended to its
// log (chained and signed with the device's own key) and forged token
// states added or replacing the device's.
func (d *device) forge(states []syncproto.TokenState, events ...eventlog.Entry) []byte {
	d.h.t.Helper()
	hdr, u := d.decodeUpload(d.upload())
	log := d.log()
	prev := &log[len(log)-1]
	key := d.identity().Private
	for _, e := range events {
		e.Time, e.Actor = d.h.clock.Now(), d.id
		n, err := eventlog.Next(prev, e, key)
		must(d.h.t, err)
		u.Entries = append(u.Entries, n)
		prev = &u.Entries[len(u.Entries)-1]
	}
	u.Head, u.HeadHash = prev.Seq, prev.Hash
	at := map[syncproto.TokenKey]int{}
	for i := range u.Tokens {
		at[u.Tokens[i].Key()] = i
	}
	for _, st := range states {
		if i, ok := at[st.Key()]; ok {
			u.Tokens[i] = st
		} else {
			u.Tokens = append(u.Tokens, st)
		}
	}
	return d.craft(hdr.Serial, u)
}

// event is a device log entry about a token.
func event(kind, user, token string, data map[string]any) eventlog.Entry {
	data["realm"], data["token"] = realm, token
	raw, _ := json.Marshal(data)
	return eventlog.Entry{Kind: kind, Subject: user, Data: raw}
}

// victim is a token whose state a forged upload must not change.
type victim struct {
	user string
	tok  store.Token
	seed []byte
	p    otp.Params
}

func (h *harness) victim(user string, p otp.Params) victim {
	h.t.Helper()
	must(h.t, h.st.CreateUser(ctx, store.User{Realm: realm, ID: user}))
	tok, seed := h.enrol(user, p)
	return victim{user: user, tok: tok, seed: seed, p: p}
}

func (h *harness) tokenOf(v victim) store.Token {
	h.t.Helper()
	tok, err := h.st.GetToken(ctx, realm, v.user, v.tok.ID)
	must(h.t, err)
	return tok
}

// offlineUses returns the recorded offline uses of counters of a token.
func (h *harness) offlineUses(dev string, user, token string, counters ...uint64) int {
	h.t.Helper()
	n := 0
	must(h.t, h.ss.SyncDevice(ctx, realm, dev, h.clock.Now(), func(tx store.SyncTx) error {
		for _, c := range counters {
			uses, err := tx.OfflineUses(realm, user, token, c)
			if err != nil {
				return err
			}
			n += len(uses)
		}
		return nil
	}))
	return n
}

func TestForgedUploads(t *testing.T) {
	hotp := otp.Params{Type: otp.TypeHOTP, Algorithm: otp.SHA1, Digits: 6}
	totp := otp.Params{Type: otp.TypeTOTP, Algorithm: otp.SHA1, Digits: 6, Period: 30}
	type attack struct {
		d      *device
		h      *harness
		serial uint64 // of the bundle of alice's token honestly issued to the device
		bob    victim // a token never issued to the device
		carol  victim // a TOTP token issued to the device for a period
		cSer   uint64
		cLast  uint64
	}
	for _, tc := range []struct {
		name     string
		incident string
		// forge makes the upload and returns the token that must not change
		// and the counters that must not be recorded as offline uses.
		forge func(a *attack) ([]byte, victim, []uint64)
	}{
		{"a: huge last used for another user's token", fieldsync.IncidentUnissued, func(a *attack) ([]byte, victim, []uint64) {
			st := syncproto.TokenState{Realm: realm, User: "bob", Token: a.bob.tok.ID, LastUsed: 1 << 40, Type: "hotp", Serial: 77, First: 1, Last: 1 << 40}
			return a.d.forge([]syncproto.TokenState{st}), a.bob, nil
		}},
		{"b: planted acceptances and a conflict for a token never issued", fieldsync.IncidentUnissued, func(a *attack) ([]byte, victim, []uint64) {
			_, err := a.h.on.Verify(ctx, realm, "bob", code(a.h.t, a.bob, 3), "", "test")
			must(a.h.t, err)
			return a.d.forge(nil,
				event("verify.ok", "bob", a.bob.tok.ID, map[string]any{"serial": 77, "counter": 3}),
				event("verify.ok", "bob", a.bob.tok.ID, map[string]any{"serial": 77, "counter": 9})), a.bob, []uint64{3, 9}
		}},
		{"c: import of a bundle never issued", fieldsync.IncidentUnissuedBundle, func(a *attack) ([]byte, victim, []uint64) {
			forged := a.serial + 1000
			st := syncproto.TokenState{Realm: realm, User: "alice", Token: a.h.tok.ID, LastUsed: 5000, Type: "hotp", Serial: forged, First: 1, Last: 100000}
			return a.d.forge([]syncproto.TokenState{st},
				event("import", "alice", a.h.tok.ID, map[string]any{"serial": forged, "type": "hotp", "first": 1, "last": 100000}),
				event("verify.ok", "alice", a.h.tok.ID, map[string]any{"serial": forged, "counter": 5000})), a.h.alice(), []uint64{5000}
		}},
		{"c: import naming an issued serial with a wider range", fieldsync.IncidentUnissuedBundle, func(a *attack) ([]byte, victim, []uint64) {
			st := syncproto.TokenState{Realm: realm, User: "alice", Token: a.h.tok.ID, LastUsed: 50000, Type: "hotp", Serial: a.serial, First: 1, Last: 100000}
			return a.d.forge([]syncproto.TokenState{st},
				event("import", "alice", a.h.tok.ID, map[string]any{"serial": a.serial, "type": "hotp", "first": 1, "last": 100000}),
				event("verify.ok", "alice", a.h.tok.ID, map[string]any{"serial": a.serial, "counter": 50000})), a.h.alice(), []uint64{50000}
		}},
		{"d: counter beyond the issued range", fieldsync.IncidentOutOfRange, func(a *attack) ([]byte, victim, []uint64) {
			st := syncproto.TokenState{Realm: realm, User: "alice", Token: a.h.tok.ID, LastUsed: 500, Type: "hotp", Serial: a.serial, First: 1, Last: 20}
			return a.d.forge([]syncproto.TokenState{st},
				event("verify.ok", "alice", a.h.tok.ID, map[string]any{"serial": a.serial, "counter": 500})), a.h.alice(), []uint64{500}
		}},
		{"d: TOTP step beyond the issued period", fieldsync.IncidentOutOfRange, func(a *attack) ([]byte, victim, []uint64) {
			st := syncproto.TokenState{Realm: realm, User: "carol", Token: a.carol.tok.ID, LastUsed: int64(a.cLast + 100), Type: "totp", Serial: a.cSer,
				First: a.cLast - 19, Last: a.cLast}
			return a.d.forge([]syncproto.TokenState{st},
				event("verify.ok", "carol", a.carol.tok.ID, map[string]any{"serial": a.cSer, "counter": a.cLast + 100})), a.carol, []uint64{a.cLast + 100}
		}},
		{"e: refill for another user's token", fieldsync.IncidentUnissued, func(a *attack) ([]byte, victim, []uint64) {
			st := syncproto.TokenState{Realm: realm, User: "bob", Token: a.bob.tok.ID, LastUsed: 4, Type: "hotp", Serial: 77, First: 1, Last: 4}
			return a.d.forge([]syncproto.TokenState{st},
				event("import", "bob", a.bob.tok.ID, map[string]any{"serial": 77, "type": "hotp", "first": 1, "last": 4}),
				event("verify.ok", "bob", a.bob.tok.ID, map[string]any{"serial": 77, "counter": 4})), a.bob, []uint64{4}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEngine(t, func(t *testing.T, h *harness) {
				var refills atomic.Int32
				h.svc.Refill = func(context.Context, fieldsync.RefillNeed) ([]byte, error) {
					refills.Add(1)
					return nil, errors.New("no refill in this test")
				}
				a := &attack{h: h, d: h.device("dev-1"), bob: h.victim("bob", hotp), carol: h.victim("carol", totp)}
				a.serial = a.d.bundle(1, 20, nil).Serial
				now := h.clock.Now()
				cb := h.issue(bundle.Request{Realm: realm, User: "carol", TokenID: a.carol.tok.ID, Params: totp, Secret: a.carol.seed, Device: "dev-1",
					From: now, Until: now.Add(10 * time.Minute), KDF: testKDF, Override: true, Now: now, Serial: a.serial + 1})
				res, err := a.d.s.Import(ctx, cb)
				must(t, err)
				a.cSer, a.cLast = res.Serial, res.Last
				must(t, a.d.verify(1)) // the honest part of the upload: alice's counter 1
				data, v, counters := tc.forge(a)
				want := h.tokenOf(v).LastUsed
				if v.user == "alice" {
					want = 1 // the honest part of the upload
				}

				out, err := h.svc.Receive(ctx, data, "test")
				must(t, err)
				h.svc.WaitRefills()
				if got := h.tokenOf(v).LastUsed; got != want {
					t.Errorf("%s's token stands at %d, want %d", v.user, got, want)
				}
				if h.lastUsed() != 1 {
					t.Errorf("the honest acceptance of alice's counter 1 was not applied: %d", h.lastUsed())
				}
				if n := h.offlineUses("dev-1", v.user, v.tok.ID, counters...); n != 0 {
					t.Errorf("%d forged offline uses recorded", n)
				}
				if cs := h.audit(fieldsync.KindConflict); len(cs) != 0 {
					t.Errorf("forged conflicts recorded: %s", cs[0].Data)
				}
				if n := refills.Load(); n != 0 {
					t.Errorf("%d refills asked for", n)
				}
				wantIncident(t, h, tc.incident, v.user)
				if !ignoredIn(out.Response, tc.incident) {
					t.Errorf("the answer does not say the claim was ignored: %+v", out.Response.Ignored)
				}
				if v.p.Type == otp.TypeHOTP {
					next := uint64(want) + 1
					if _, err := h.on.Verify(ctx, realm, v.user, code(t, v, next), "", "test"); err != nil {
						t.Errorf("%s cannot verify online after the attack: %v", v.user, err)
					}
				}
			})
		})
	}
}

func (h *harness) alice() victim {
	return victim{user: "alice", tok: h.tok, seed: h.seed, p: h.params}
}

func code(t testing.TB, v victim, counter uint64) string {
	t.Helper()
	c, err := v.p.CodeAt(v.seed, counter)
	must(t, err)
	return c
}

// wantIncident checks the audit log holds an incident of kind about user.
func wantIncident(t *testing.T, h *harness, kind, user string) {
	t.Helper()
	for _, e := range h.audit(fieldsync.KindIncident) {
		if e.Subject == user && strings.Contains(string(e.Data), fmt.Sprintf(`"incident":%q`, kind)) {
			if h.count(kind) == 0 {
				t.Errorf("incident %s recorded but not counted", kind)
			}
			return
		}
	}
	t.Errorf("no %s incident about %s in the audit log", kind, user)
}

func ignoredIn(r syncproto.Response, kind string) bool {
	for _, c := range r.Ignored {
		if c.Incident == kind {
			return true
		}
	}
	return false
}
