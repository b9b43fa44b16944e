package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/store"
)

// testAcceptCode: AcceptCode keeps AdvanceToken's once-only promise under
// concurrency, and every acceptance (and only acceptances) leaves its audit
// entry in an intact chain.
func testAcceptCode(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	must(t, st.CreateToken(ctx, totp("r1", "alice", "t1")))
	entry := eventlog.Entry{Time: when, Kind: "verify.ok", Actor: "api:test", Subject: "alice", Data: []byte(`{"token":"t1"}`)}
	got, err := st.AcceptCode(ctx, "r1", "alice", "t1", 7, -1, entry)
	must(t, err)
	if got.Seq == 0 || got.Kind != "verify.ok" {
		t.Fatalf("AcceptCode returned entry %+v", got)
	}
	if _, err := st.AcceptCode(ctx, "r1", "alice", "t1", 7, -1, entry); !errors.Is(err, store.ErrReplayed) {
		t.Fatalf("second AcceptCode(7) = %v, want ErrReplayed", err)
	}
	if _, err := st.AcceptCode(ctx, "r1", "alice", "nope", 8, -1, entry); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("AcceptCode on a missing token = %v, want ErrNotFound", err)
	}
	if _, err := st.AcceptCode(ctx, "r1", "alice", "t1", -1, -1, entry); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("AcceptCode(-1) = %v, want ErrInvalid", err)
	}
	const n = 24
	errs := make([]error, n)
	parallel(n, func(i int) { _, errs[i] = st.AcceptCode(ctx, "r1", "alice", "t1", 9, -1, entry) })
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, store.ErrReplayed):
			t.Errorf("unexpected error %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent AcceptCode(9) succeeded, want exactly 1", wins, n)
	}
	tok, err := st.GetToken(ctx, "r1", "alice", "t1")
	must(t, err)
	if !tok.Used || tok.LastUsed != 9 {
		t.Fatalf("token after AcceptCode: used=%v last=%d, want 9", tok.Used, tok.LastUsed)
	}
	es, err := st.ListAudit(ctx, 0, 1000)
	must(t, err)
	if len(es) != 2 {
		t.Fatalf("%d audit entries, want 2 (one per acceptance, none for refusals)", len(es))
	}
	if i, err := eventlog.VerifyChain(nil, es, nil); err != nil {
		t.Fatalf("audit chain broken at %d: %v", i, err)
	}
	// Acceptances and other appends interleaved in the same batches: the
	// acceptances chain on from the batch's head in memory, and every other
	// append moves the head under them.
	seed(t, st, "r1", "mixed")
	for i := range n {
		must(t, st.CreateToken(ctx, totp("r1", "mixed", fmt.Sprintf("m%d", i))))
	}
	parallel(2*n, func(i int) {
		if i%2 == 0 {
			_, errs[i/2] = st.AcceptCode(ctx, "r1", "mixed", fmt.Sprintf("m%d", i/2), 1, -1, entry)
			return
		}
		if _, err := st.AppendAudit(ctx, eventlog.Entry{Time: when, Kind: "admin.test", Actor: "api:test", Subject: "mixed"}); err != nil {
			t.Error(err)
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("acceptance %d beside appends: %v", i, err)
		}
	}
	es, err = st.ListAudit(ctx, 0, 1000)
	must(t, err)
	if len(es) != 2+2*n {
		t.Fatalf("%d audit entries, want %d", len(es), 2+2*n)
	}
	if i, err := eventlog.VerifyChain(nil, es, nil); err != nil {
		t.Fatalf("audit chain broken at %d: %v", i, err)
	}
	// One client at a time (on PostgreSQL, acceptances in one statement on
	// the head last seen), with other appends moving the head now and then.
	must(t, st.CreateToken(ctx, totp("r1", "mixed", "seq")))
	const m = 60
	for i := range m {
		if i%7 == 3 {
			_, err := st.AppendAudit(ctx, eventlog.Entry{Time: when, Kind: "admin.test", Actor: "api:test", Subject: "mixed"})
			must(t, err)
		}
		if _, err := st.AcceptCode(ctx, "r1", "mixed", "seq", int64(i), -1, entry); err != nil {
			t.Fatalf("sequential acceptance %d: %v", i, err)
		}
		if _, err := st.AcceptCode(ctx, "r1", "mixed", "seq", int64(i), -1, entry); !errors.Is(err, store.ErrReplayed) {
			t.Fatalf("sequential acceptance %d again: %v, want ErrReplayed", i, err)
		}
	}
	es, err = st.ListAudit(ctx, 0, 1000)
	must(t, err)
	if want := 2 + 2*n + m + (m+3)/7; len(es) != want {
		t.Fatalf("%d audit entries, want %d", len(es), want)
	}
	if i, err := eventlog.VerifyChain(nil, es, nil); err != nil {
		t.Fatalf("audit chain broken at %d: %v", i, err)
	}
}

// testGetUserTokens: the joined read agrees with GetUser and ListTokens.
func testGetUserTokens(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice", "bob")
	must(t, st.CreateToken(ctx, totp("r1", "alice", "a1")))
	must(t, st.CreateToken(ctx, hotp("r1", "alice", "a2")))
	u, ts, err := st.GetUserTokens(ctx, "r1", "alice")
	must(t, err)
	want, _ := st.GetUser(ctx, "r1", "alice")
	wantTs, _ := st.ListTokens(ctx, "r1", "alice")
	if !userEqual(u, want) || len(ts) != len(wantTs) {
		t.Fatalf("GetUserTokens = %+v, %d tokens; want %+v, %d tokens", u, len(ts), want, len(wantTs))
	}
	for i := range ts {
		if !tokenEqual(ts[i], wantTs[i]) {
			t.Fatalf("token %d: %+v, want %+v", i, ts[i], wantTs[i])
		}
	}
	if u, ts, err := st.GetUserTokens(ctx, "r1", "bob"); err != nil || u.ID != "bob" || len(ts) != 0 {
		t.Fatalf("user without tokens: %+v %v %v", u, ts, err)
	}
	if _, _, err := st.GetUserTokens(ctx, "r1", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing user: %v", err)
	}
	if _, _, err := st.GetUserTokens(ctx, "r2", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other realm: %v", err)
	}
}

// testAcceptVersion: every change verification reads moves the user's
// Version; an acceptance does not; AcceptCode under a version that moved
// is ErrStale and writes nothing, under the current one it accepts.
func testAcceptVersion(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	must(t, st.CreateToken(ctx, totp("r1", "alice", "t1")))
	entry := eventlog.Entry{Time: when, Kind: "verify.ok", Actor: "api:test", Subject: "alice", Data: []byte(`{"token":"t1"}`)}
	version := func() int64 {
		t.Helper()
		u, _, err := st.GetUserTokens(ctx, "r1", "alice")
		must(t, err)
		got, err := st.GetUser(ctx, "r1", "alice")
		must(t, err)
		if got.Version != u.Version {
			t.Fatalf("GetUser version %d, GetUserTokens %d", got.Version, u.Version)
		}
		return u.Version
	}
	var used int64 = 1
	changes := []struct {
		name string
		do   func() error
	}{
		{"RecordFailure", func() error { _, err := st.RecordFailure(ctx, "r1", "alice", when); return err }},
		{"ResetFailures", func() error { return st.ResetFailures(ctx, "r1", "alice") }},
		{"SetPINHash", func() error {
			return st.SetPINHash(ctx, "r1", "alice", []byte("$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"))
		}},
		{"SetPINHash nil", func() error { return st.SetPINHash(ctx, "r1", "alice", nil) }},
		{"CreateToken", func() error { return st.CreateToken(ctx, totp("r1", "alice", "t2")) }},
		{"SetTokenStatus", func() error { return st.SetTokenStatus(ctx, "r1", "alice", "t2", store.TokenDisabled) }},
		{"DeleteToken", func() error { return st.DeleteToken(ctx, "r1", "alice", "t2") }},
	}
	for _, c := range changes {
		before := version()
		must(t, c.do())
		after := version()
		if after == before {
			t.Fatalf("%s left the user's version at %d", c.name, after)
		}
		used++
		if _, err := st.AcceptCode(ctx, "r1", "alice", "t1", used, before, entry); !errors.Is(err, store.ErrStale) {
			t.Fatalf("after %s: AcceptCode under the old version = %v, want ErrStale", c.name, err)
		}
		if tok, _ := st.GetToken(ctx, "r1", "alice", "t1"); tok.LastUsed == used {
			t.Fatalf("after %s: a stale AcceptCode advanced the token", c.name)
		}
		if _, err := st.AcceptCode(ctx, "r1", "alice", "t1", used, after, entry); err != nil {
			t.Fatalf("after %s: AcceptCode under the current version: %v", c.name, err)
		}
		if v := version(); v != after {
			t.Fatalf("AcceptCode moved the version from %d to %d", after, v)
		}
		if _, err := st.AcceptCode(ctx, "r1", "alice", "t1", used, after, entry); !errors.Is(err, store.ErrReplayed) {
			t.Fatalf("after %s: the same value again = %v, want ErrReplayed", c.name, err)
		}
	}
	es, err := st.ListAudit(ctx, 0, 1000)
	must(t, err)
	if len(es) != len(changes) {
		t.Fatalf("%d audit entries, want %d (stale and replayed acceptances write none)", len(es), len(changes))
	}
	must(t, st.DeleteUser(ctx, "r1", "alice"))
	if _, err := st.AcceptCode(ctx, "r1", "alice", "t1", used+1, version0, entry); !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrStale) {
		t.Fatalf("AcceptCode for a deleted user = %v, want ErrNotFound or ErrStale", err)
	}
}

const version0 = 0
