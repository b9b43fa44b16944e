package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/store"
)

// Run runs the contract suite. open returns a new, empty store for each
// subtest (and arranges for it to be closed).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st store.Store)
	}{
		{"Engine", testEngine},
		{"Realms", testRealms},
		{"Users", testUsers},
		{"ListUsers", testListUsers},
		{"DeleteUser", testDeleteUser},
		{"PINHash", testPINHash},
		{"Failures", testFailures},
		{"FailuresConcurrent", testFailuresConcurrent},
		{"Tokens", testTokens},
		{"ListTokens", testListTokens},
		{"TokenStatusAndDelete", testTokenStatusAndDelete},
		{"AdvanceToken", testAdvanceToken},
		{"AdvanceTokenSameValue", testAdvanceSameValue},
		{"AdvanceTokenIncreasing", testAdvanceIncreasing},
		{"AcceptCode", testAcceptCode},
		{"AcceptVersion", testAcceptVersion},
		{"GetUserTokens", testGetUserTokens},
		{"APIClients", testAPIClients},
		{"Audit", testAudit},
		{"AuditConcurrent", testAuditConcurrent},
		{"RealmIsolation", testRealmIsolation},
		{"Invalid", testInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

var ctx = context.Background()

// when is a fixed time with nanoseconds, which the store keeps to the microsecond.
var when = time.Date(2026, 3, 4, 5, 6, 7, 891234567, time.UTC)

func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

// seed creates realm and user (each at most once per store).
func seed(t *testing.T, st store.Store, realm string, users ...string) {
	t.Helper()
	if _, err := st.GetRealm(ctx, realm); errors.Is(err, store.ErrNotFound) {
		must(t, st.CreateRealm(ctx, store.Realm{ID: realm, Name: "Realm " + realm, CreatedAt: when}))
	}
	for _, u := range users {
		must(t, st.CreateUser(ctx, store.User{Realm: realm, ID: u, DisplayName: "User " + u, CreatedAt: when}))
	}
}

func totp(realm, user, id string) store.Token {
	return store.Token{Realm: realm, UserID: user, ID: id, Type: "totp", Algorithm: "SHA1", Digits: 6, Period: 30,
		SeedMode: store.SeedDerived, Epoch: 3, Status: store.TokenPending, CreatedAt: when}
}

func hotp(realm, user, id string) store.Token {
	return store.Token{Realm: realm, UserID: user, ID: id, Type: "hotp", Algorithm: "SHA512", Digits: 8,
		SeedMode: store.SeedRandom, SeedCiphertext: []byte("nonce+ciphertext\x00\xff"), Status: store.TokenActive, CreatedAt: when}
}

func testEngine(t *testing.T, st store.Store) {
	if e := st.Engine(); e != "sqlite" && e != "postgres" {
		t.Errorf("Engine() = %q, want sqlite or postgres", e)
	}
	must(t, st.Ping(ctx))
}

func testRealms(t *testing.T, st store.Store) {
	r := store.Realm{ID: "acme", Name: "ACME Field Services", CreatedAt: when}
	must(t, st.CreateRealm(ctx, r))
	got, err := st.GetRealm(ctx, "acme")
	must(t, err)
	if r.CreatedAt = stored(when); got != r {
		t.Errorf("GetRealm = %+v, want %+v", got, r)
	}
	wantErr(t, st.CreateRealm(ctx, store.Realm{ID: "acme", Name: "again"}), store.ErrExists)
	_, err = st.GetRealm(ctx, "nope")
	wantErr(t, err, store.ErrNotFound)

	// A zero CreatedAt becomes the time of creation.
	before := time.Now().Add(-time.Second)
	must(t, st.CreateRealm(ctx, store.Realm{ID: "fresh"}))
	got, err = st.GetRealm(ctx, "fresh")
	must(t, err)
	if got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("zero CreatedAt stored as %v, want about now", got.CreatedAt)
	}
}

func testUsers(t *testing.T, st store.Store) {
	seed(t, st, "r1")
	u := store.User{Realm: "r1", ID: "alice", DisplayName: "Alice Ärger", PINHash: []byte("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
		Failures: 2, LastFailure: when.Add(-time.Minute), CreatedAt: when}
	must(t, st.CreateUser(ctx, u))
	got, err := st.GetUser(ctx, "r1", "alice")
	must(t, err)
	u.LastFailure, u.CreatedAt = stored(u.LastFailure), stored(u.CreatedAt)
	if !userEqual(got, u) {
		t.Errorf("GetUser = %+v, want %+v", got, u)
	}

	// A new user without PIN or failures reads back with nil and zero values.
	must(t, st.CreateUser(ctx, store.User{Realm: "r1", ID: "bob", CreatedAt: when}))
	got, err = st.GetUser(ctx, "r1", "bob")
	must(t, err)
	if got.PINHash != nil || got.Failures != 0 || !got.LastFailure.IsZero() {
		t.Errorf("new user = %+v, want no PIN, no failures", got)
	}

	wantErr(t, st.CreateUser(ctx, store.User{Realm: "r1", ID: "alice"}), store.ErrExists)
	wantErr(t, st.CreateUser(ctx, store.User{Realm: "no-such-realm", ID: "carol"}), store.ErrNotFound)
	_, err = st.GetUser(ctx, "r1", "carol")
	wantErr(t, err, store.ErrNotFound)
}

func userEqual(a, b store.User) bool {
	return a.Realm == b.Realm && a.ID == b.ID && a.DisplayName == b.DisplayName && bytes.Equal(a.PINHash, b.PINHash) &&
		a.Failures == b.Failures && a.LastFailure.Equal(b.LastFailure) && a.CreatedAt.Equal(b.CreatedAt)
}

func testListUsers(t *testing.T, st store.Store) {
	seed(t, st, "r1")
	seed(t, st, "r2", "zz-other-realm")
	var want []string
	for i := 24; i >= 0; i-- { // created out of order
		id := fmt.Sprintf("user-%02d", i)
		want = append(want, id)
		seed(t, st, "r1", id)
	}
	slices.Sort(want)

	tests := []struct {
		limit int
		pages []int // sizes
	}{
		{10, []int{10, 10, 5, 0}},
		{25, []int{25, 0}},
		{1000, []int{25}},
		{1, slices.Repeat([]int{1}, 25)},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint("limit ", tc.limit), func(t *testing.T) {
			var got []string
			after := ""
			for i, size := range tc.pages {
				page, err := st.ListUsers(ctx, "r1", after, tc.limit)
				must(t, err)
				if len(page) != size {
					t.Fatalf("page %d has %d users, want %d", i, len(page), size)
				}
				for _, u := range page {
					if u.Realm != "r1" || u.DisplayName != "User "+u.ID {
						t.Errorf("listed %+v", u)
					}
					got = append(got, u.ID)
				}
				if size > 0 {
					after = page[size-1].ID
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("paged through %v, want %v", got, want)
			}
		})
	}
	page, err := st.ListUsers(ctx, "r1", "user-22", 10)
	must(t, err)
	if len(page) != 2 || page[0].ID != "user-23" {
		t.Errorf("after user-22: %v", page)
	}
	page, err = st.ListUsers(ctx, "empty-realm", "", 10)
	must(t, err)
	if len(page) != 0 {
		t.Errorf("unknown realm listed %v", page)
	}
	for _, limit := range []int{0, -1, store.MaxListLimit + 1} {
		_, err := st.ListUsers(ctx, "r1", "", limit)
		wantErr(t, err, store.ErrInvalid)
	}
}

func testDeleteUser(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice", "bob")
	for _, id := range []string{"t1", "t2"} {
		must(t, st.CreateToken(ctx, totp("r1", "alice", id)))
	}
	must(t, st.CreateToken(ctx, totp("r1", "bob", "t1")))

	must(t, st.DeleteUser(ctx, "r1", "alice"))
	_, err := st.GetUser(ctx, "r1", "alice")
	wantErr(t, err, store.ErrNotFound)
	_, err = st.GetToken(ctx, "r1", "alice", "t1")
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, st.DeleteUser(ctx, "r1", "alice"), store.ErrNotFound)

	// Bob keeps his token; a re-created alice starts with none.
	if _, err := st.GetToken(ctx, "r1", "bob", "t1"); err != nil {
		t.Errorf("bob's token: %v", err)
	}
	seed(t, st, "r1", "alice")
	toks, err := st.ListTokens(ctx, "r1", "alice")
	must(t, err)
	if len(toks) != 0 {
		t.Errorf("re-created user has tokens %v", toks)
	}
}

func testPINHash(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	hash := []byte("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g")
	must(t, st.SetPINHash(ctx, "r1", "alice", hash))
	u, err := st.GetUser(ctx, "r1", "alice")
	must(t, err)
	if !bytes.Equal(u.PINHash, hash) {
		t.Errorf("PINHash = %q", u.PINHash)
	}
	must(t, st.SetPINHash(ctx, "r1", "alice", nil))
	u, err = st.GetUser(ctx, "r1", "alice")
	must(t, err)
	if u.PINHash != nil {
		t.Errorf("cleared PINHash = %q, want nil", u.PINHash)
	}
	wantErr(t, st.SetPINHash(ctx, "r1", "nobody", hash), store.ErrNotFound)
}

func testFailures(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	for i := 1; i <= 3; i++ {
		n, err := st.RecordFailure(ctx, "r1", "alice", when.Add(time.Duration(i)*time.Second))
		must(t, err)
		if n != i {
			t.Errorf("failure %d: count %d", i, n)
		}
	}
	u, err := st.GetUser(ctx, "r1", "alice")
	must(t, err)
	if u.Failures != 3 || !u.LastFailure.Equal(stored(when.Add(3*time.Second))) {
		t.Errorf("after 3 failures: %d at %v", u.Failures, u.LastFailure)
	}
	must(t, st.ResetFailures(ctx, "r1", "alice"))
	u, err = st.GetUser(ctx, "r1", "alice")
	must(t, err)
	if u.Failures != 0 {
		t.Errorf("after reset: %d failures", u.Failures)
	}
	_, err = st.RecordFailure(ctx, "r1", "nobody", when)
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, st.ResetFailures(ctx, "r1", "nobody"), store.ErrNotFound)
}

// testFailuresConcurrent: RecordFailure is one atomic increment, so n
// concurrent calls return each of 1..n exactly once.
func testFailuresConcurrent(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	const n = 24
	counts := make([]int, n)
	parallel(n, func(i int) {
		c, err := st.RecordFailure(ctx, "r1", "alice", when)
		if err != nil {
			t.Error(err)
		}
		counts[i] = c
	})
	slices.Sort(counts)
	for i, c := range counts {
		if c != i+1 {
			t.Fatalf("counts returned %v, want 1..%d each once", counts, n)
		}
	}
}

func tokenEqual(a, b store.Token) bool {
	return a.Realm == b.Realm && a.UserID == b.UserID && a.ID == b.ID && a.Type == b.Type && a.Algorithm == b.Algorithm &&
		a.Digits == b.Digits && a.Period == b.Period && a.SeedMode == b.SeedMode && a.Epoch == b.Epoch &&
		bytes.Equal(a.SeedCiphertext, b.SeedCiphertext) && a.Status == b.Status && a.LastUsed == b.LastUsed &&
		a.Used == b.Used && a.CreatedAt.Equal(b.CreatedAt)
}

func testTokens(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	big := hotp("r1", "alice", "h1")
	big.Epoch, big.LastUsed, big.Used = 1<<32-1, 1<<62, true
	for _, tok := range []store.Token{totp("r1", "alice", "t1"), big} {
		must(t, st.CreateToken(ctx, tok))
		got, err := st.GetToken(ctx, "r1", "alice", tok.ID)
		must(t, err)
		tok.CreatedAt = stored(tok.CreatedAt)
		if !tokenEqual(got, tok) {
			t.Errorf("GetToken = %+v, want %+v", got, tok)
		}
	}
	got, err := st.GetToken(ctx, "r1", "alice", "t1")
	must(t, err)
	if got.SeedCiphertext != nil {
		t.Errorf("derived token has ciphertext %q, want nil", got.SeedCiphertext)
	}
	wantErr(t, st.CreateToken(ctx, totp("r1", "alice", "t1")), store.ErrExists)
	wantErr(t, st.CreateToken(ctx, totp("r1", "nobody", "t9")), store.ErrNotFound)
	wantErr(t, st.CreateToken(ctx, totp("no-realm", "alice", "t9")), store.ErrNotFound)
	_, err = st.GetToken(ctx, "r1", "alice", "t9")
	wantErr(t, err, store.ErrNotFound)
}

func testListTokens(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice", "bob")
	// Ordered by CreatedAt, then ID.
	specs := []struct {
		id string
		at time.Duration
	}{{"c", 2 * time.Second}, {"b", time.Second}, {"a", 2 * time.Second}, {"z", 0}}
	for _, s := range specs {
		tok := totp("r1", "alice", s.id)
		tok.CreatedAt = when.Add(s.at)
		must(t, st.CreateToken(ctx, tok))
	}
	must(t, st.CreateToken(ctx, totp("r1", "bob", "0")))
	toks, err := st.ListTokens(ctx, "r1", "alice")
	must(t, err)
	var ids []string
	for _, tok := range toks {
		ids = append(ids, tok.ID)
	}
	if want := []string{"z", "b", "a", "c"}; !slices.Equal(ids, want) {
		t.Errorf("ListTokens order %v, want %v", ids, want)
	}
	toks, err = st.ListTokens(ctx, "r1", "nobody")
	must(t, err)
	if len(toks) != 0 {
		t.Errorf("unknown user has tokens %v", toks)
	}
}

func testTokenStatusAndDelete(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	must(t, st.CreateToken(ctx, totp("r1", "alice", "t1")))
	for _, status := range []string{store.TokenActive, store.TokenDisabled, store.TokenActive} {
		must(t, st.SetTokenStatus(ctx, "r1", "alice", "t1", status))
		got, err := st.GetToken(ctx, "r1", "alice", "t1")
		must(t, err)
		if got.Status != status {
			t.Errorf("status %q, want %q", got.Status, status)
		}
	}
	wantErr(t, st.SetTokenStatus(ctx, "r1", "alice", "t1", "revoked"), store.ErrInvalid)
	wantErr(t, st.SetTokenStatus(ctx, "r1", "alice", "t9", store.TokenActive), store.ErrNotFound)
	must(t, st.DeleteToken(ctx, "r1", "alice", "t1"))
	_, err := st.GetToken(ctx, "r1", "alice", "t1")
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, st.DeleteToken(ctx, "r1", "alice", "t1"), store.ErrNotFound)
}

func testAdvanceToken(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	must(t, st.CreateToken(ctx, hotp("r1", "alice", "h1")))
	steps := []struct {
		used int64
		want error
	}{
		{0, nil}, // counter 0 is usable once: Used is false until then
		{0, store.ErrReplayed},
		{5, nil},
		{5, store.ErrReplayed},
		{3, store.ErrReplayed},
		{6, nil},
		{1<<63 - 1, nil},
		{1<<63 - 1, store.ErrReplayed},
	}
	for _, s := range steps {
		err := st.AdvanceToken(ctx, "r1", "alice", "h1", s.used)
		if !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Fatalf("AdvanceToken(%d) = %v, want %v", s.used, err, s.want)
		}
	}
	got, err := st.GetToken(ctx, "r1", "alice", "h1")
	must(t, err)
	if !got.Used || got.LastUsed != 1<<63-1 {
		t.Errorf("after advancing: Used %v LastUsed %d", got.Used, got.LastUsed)
	}
	wantErr(t, st.AdvanceToken(ctx, "r1", "alice", "nope", 1), store.ErrNotFound)
	wantErr(t, st.AdvanceToken(ctx, "r1", "bob", "h1", 1), store.ErrNotFound)
	wantErr(t, st.AdvanceToken(ctx, "r1", "alice", "h1", -1), store.ErrInvalid)
}

// parallel runs fn(0..n-1) in n goroutines released at once.
func parallel(n int, fn func(i int)) {
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Go(func() {
			start.Wait()
			fn(i)
		})
	}
	start.Done()
	done.Wait()
}

// testAdvanceSameValue: 32 goroutines offer the same step; exactly one wins.
func testAdvanceSameValue(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	for round, tok := range []store.Token{totp("r1", "alice", "fresh"), totp("r1", "alice", "used")} {
		must(t, st.CreateToken(ctx, tok))
		if round == 1 {
			must(t, st.AdvanceToken(ctx, "r1", "alice", tok.ID, 41))
		}
		const n = 32
		errs := make([]error, n)
		parallel(n, func(i int) { errs[i] = st.AdvanceToken(ctx, "r1", "alice", tok.ID, 42) })
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrReplayed):
				t.Errorf("%s: unexpected error %v", tok.ID, err)
			}
		}
		if wins != 1 {
			t.Errorf("%s: %d of %d concurrent AdvanceToken(42) succeeded, want exactly 1", tok.ID, wins, n)
		}
	}
}

// testAdvanceIncreasing: goroutines each offer 1..n in order, interleaved
// with each other. No value may be accepted twice, each goroutine's
// acceptances must increase, and the token must end at n.
func testAdvanceIncreasing(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	must(t, st.CreateToken(ctx, hotp("r1", "alice", "h1")))
	const workers, n = 8, 60
	accepted := make([][]int64, workers)
	parallel(workers, func(w int) {
		for v := int64(1); v <= n; v++ {
			switch err := st.AdvanceToken(ctx, "r1", "alice", "h1", v); {
			case err == nil:
				accepted[w] = append(accepted[w], v)
			case !errors.Is(err, store.ErrReplayed):
				t.Errorf("AdvanceToken(%d): %v", v, err)
			}
		}
	})
	seen := map[int64]int{}
	for w, vs := range accepted {
		if !slices.IsSorted(vs) {
			t.Errorf("worker %d accepted %v out of order", w, vs)
		}
		for _, v := range vs {
			seen[v]++
			if seen[v] > 1 {
				t.Errorf("value %d accepted %d times", v, seen[v])
			}
		}
	}
	if seen[n] != 1 {
		t.Errorf("the highest value %d was accepted %d times, want 1", n, seen[n])
	}
	tok, err := st.GetToken(ctx, "r1", "alice", "h1")
	must(t, err)
	if tok.LastUsed != n || !tok.Used {
		t.Errorf("final LastUsed %d (Used %v), want %d", tok.LastUsed, tok.Used, n)
	}
}

func testAPIClients(t *testing.T, st store.Store) {
	c := store.APIClient{ID: "ops", Realm: "r1", Name: "Operations", Scopes: []string{store.ScopeAdmin, store.ScopeVerifier},
		TokenHash: bytes.Repeat([]byte{0xa5}, 32), CreatedAt: when}
	must(t, st.CreateAPIClient(ctx, c))
	got, err := st.GetAPIClientByHash(ctx, c.TokenHash)
	must(t, err)
	c.CreatedAt = stored(c.CreatedAt)
	if !apiClientEqual(got, c) {
		t.Errorf("GetAPIClientByHash = %+v, want %+v", got, c)
	}
	_, err = st.GetAPIClientByHash(ctx, bytes.Repeat([]byte{0x5a}, 32))
	wantErr(t, err, store.ErrNotFound)

	dupID := c
	dupID.TokenHash = bytes.Repeat([]byte{1}, 32)
	wantErr(t, st.CreateAPIClient(ctx, dupID), store.ErrExists)
	dupHash := c
	dupHash.ID = "other"
	wantErr(t, st.CreateAPIClient(ctx, dupHash), store.ErrExists)

	// A client outside every realm (Realm "") is allowed; lists are per realm.
	global := store.APIClient{ID: "root", Name: "bootstrap", Scopes: []string{store.ScopeAdmin}, TokenHash: []byte{1, 2, 3}}
	must(t, st.CreateAPIClient(ctx, global))
	b := store.APIClient{ID: "issuer", Realm: "r1", Name: "Issuer", Scopes: []string{store.ScopeIssuer}, TokenHash: []byte{4, 5, 6}}
	must(t, st.CreateAPIClient(ctx, b))
	list, err := st.ListAPIClients(ctx, "r1")
	must(t, err)
	if len(list) != 2 || list[0].ID != "issuer" || list[1].ID != "ops" {
		t.Errorf("ListAPIClients(r1) = %+v", list)
	}
	list, err = st.ListAPIClients(ctx, "")
	must(t, err)
	if len(list) != 1 || list[0].ID != "root" {
		t.Errorf("ListAPIClients(\"\") = %+v", list)
	}

	must(t, st.DisableAPIClient(ctx, "r1", "ops"))
	got, err = st.GetAPIClientByHash(ctx, c.TokenHash)
	must(t, err)
	if !got.Disabled {
		t.Error("disabled client reads back enabled")
	}
	wantErr(t, st.DisableAPIClient(ctx, "r2", "ops"), store.ErrNotFound)
}

func apiClientEqual(a, b store.APIClient) bool {
	return a.ID == b.ID && a.Realm == b.Realm && a.Name == b.Name && slices.Equal(a.Scopes, b.Scopes) &&
		bytes.Equal(a.TokenHash, b.TokenHash) && a.CreatedAt.Equal(b.CreatedAt) && a.Disabled == b.Disabled
}

func auditEntry(i int) eventlog.Entry {
	return eventlog.Entry{Time: when.Add(time.Duration(i) * time.Millisecond), Kind: "verify.ok", Actor: "api:ops",
		Subject: fmt.Sprintf("alice-%d", i), Data: json.RawMessage(fmt.Sprintf(`{ "token": "t1",  "n": %d }`, i))}
}

// readAudit pages through the whole audit log, page entries at a time.
func readAudit(t *testing.T, st store.Store, page int) []eventlog.Entry {
	t.Helper()
	var all []eventlog.Entry
	for {
		p, err := st.ListAudit(ctx, uint64(len(all)), page)
		must(t, err)
		if len(p) == 0 {
			return all
		}
		all = append(all, p...)
	}
}

func testAudit(t *testing.T, st store.Store) {
	if got := readAudit(t, st, 10); len(got) != 0 {
		t.Fatalf("new store has audit entries %v", got)
	}
	var appended []eventlog.Entry
	for i := range 7 {
		e, err := st.AppendAudit(ctx, auditEntry(i))
		must(t, err)
		if e.Seq != uint64(i+1) {
			t.Errorf("entry %d got seq %d", i, e.Seq)
		}
		appended = append(appended, e)
	}
	// An entry without data, and one without a time (the store stamps it).
	e, err := st.AppendAudit(ctx, eventlog.Entry{Kind: "lockout", Subject: "bob"})
	must(t, err)
	if e.Time.IsZero() || e.Data != nil {
		t.Errorf("bare entry stored as %+v", e)
	}
	appended = append(appended, e)

	for _, page := range []int{1, 3, 1000} {
		got := readAudit(t, st, page)
		if i, err := eventlog.VerifyChain(nil, got, nil); err != nil {
			t.Fatalf("page %d: chain broken at %d: %v", page, i, err)
		}
		if len(got) != len(appended) {
			t.Fatalf("read %d entries, appended %d", len(got), len(appended))
		}
		for i := range got {
			a, b := got[i], appended[i]
			if a.Seq != b.Seq || !a.Time.Equal(b.Time) || a.Kind != b.Kind || a.Actor != b.Actor || a.Subject != b.Subject ||
				!bytes.Equal(a.Data, b.Data) || !bytes.Equal(a.Prev, b.Prev) || !bytes.Equal(a.Hash, b.Hash) {
				t.Errorf("entry %d read back as %+v, appended %+v", i, a, b)
			}
		}
	}
	mid, err := st.ListAudit(ctx, 5, 2)
	must(t, err)
	if len(mid) != 2 || mid[0].Seq != 6 || mid[1].Seq != 7 {
		t.Errorf("ListAudit(5, 2) = %v", mid)
	}
	if i, err := eventlog.VerifyChain(&appended[4], mid, nil); err != nil {
		t.Errorf("a middle page does not follow its predecessor (%d): %v", i, err)
	}

	bad := auditEntry(0)
	bad.Data = json.RawMessage("{not json")
	_, err = st.AppendAudit(ctx, bad)
	wantErr(t, err, store.ErrInvalid)
	_, err = st.AppendAudit(ctx, eventlog.Entry{Kind: strings.Repeat("k", eventlog.MaxKindLen+1)})
	wantErr(t, err, store.ErrInvalid)
	for _, limit := range []int{0, store.MaxListLimit + 1} {
		_, err = st.ListAudit(ctx, 0, limit)
		wantErr(t, err, store.ErrInvalid)
	}
	if got := readAudit(t, st, 100); len(got) != len(appended) {
		t.Errorf("rejected entries changed the log: %d entries, want %d", len(got), len(appended))
	}
}

// testAuditConcurrent: 16 goroutines append at once; the log ends with
// contiguous sequence numbers and a chain that verifies.
func testAuditConcurrent(t *testing.T, st store.Store) {
	const workers, each = 16, 5
	parallel(workers, func(w int) {
		for i := range each {
			if _, err := st.AppendAudit(ctx, auditEntry(w*each+i)); err != nil {
				t.Error(err)
			}
		}
	})
	got := readAudit(t, st, 7)
	if len(got) != workers*each {
		t.Fatalf("%d entries, want %d", len(got), workers*each)
	}
	if i, err := eventlog.VerifyChain(nil, got, nil); err != nil {
		t.Fatalf("chain broken at %d: %v", i, err)
	}
	subjects := map[string]bool{}
	for _, e := range got {
		subjects[e.Subject] = true
	}
	if len(subjects) != workers*each {
		t.Errorf("%d distinct entries, want %d: some were lost or doubled", len(subjects), workers*each)
	}
}

// testRealmIsolation: the same IDs in two realms are two records, and no
// call scoped to one realm reaches the other.
func testRealmIsolation(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	seed(t, st, "r2", "alice")
	must(t, st.CreateToken(ctx, hotp("r1", "alice", "h1")))
	must(t, st.CreateToken(ctx, hotp("r2", "alice", "h1")))

	must(t, st.AdvanceToken(ctx, "r1", "alice", "h1", 10))
	must(t, st.AdvanceToken(ctx, "r2", "alice", "h1", 10)) // not a replay: another realm's token
	must(t, st.SetPINHash(ctx, "r1", "alice", []byte("hash")))
	_, err := st.RecordFailure(ctx, "r1", "alice", when)
	must(t, err)
	must(t, st.SetTokenStatus(ctx, "r1", "alice", "h1", store.TokenDisabled))

	u, err := st.GetUser(ctx, "r2", "alice")
	must(t, err)
	if u.PINHash != nil || u.Failures != 0 {
		t.Errorf("r2/alice changed by r1 calls: %+v", u)
	}
	tok, err := st.GetToken(ctx, "r2", "alice", "h1")
	must(t, err)
	if tok.Status != store.TokenActive {
		t.Errorf("r2 token status %q changed by an r1 call", tok.Status)
	}
	must(t, st.DeleteUser(ctx, "r1", "alice"))
	if _, err := st.GetToken(ctx, "r2", "alice", "h1"); err != nil {
		t.Errorf("deleting r1/alice removed r2/alice's token: %v", err)
	}
	list, err := st.ListUsers(ctx, "r2", "", 10)
	must(t, err)
	if len(list) != 1 || list[0].Realm != "r2" {
		t.Errorf("ListUsers(r2) = %+v", list)
	}
}

// testInvalid: every malformed record is ErrInvalid and changes nothing.
func testInvalid(t *testing.T, st store.Store) {
	seed(t, st, "r1", "alice")
	long := strings.Repeat("x", ident.MaxLen+1)
	tok := func(f func(*store.Token)) store.Token {
		tk := totp("r1", "alice", "bad")
		f(&tk)
		return tk
	}
	client := func(f func(*store.APIClient)) store.APIClient {
		c := store.APIClient{ID: "bad", Realm: "r1", Name: "x", Scopes: []string{store.ScopeAdmin}, TokenHash: []byte{9}}
		f(&c)
		return c
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"empty realm ID", func() error { return st.CreateRealm(ctx, store.Realm{}) }},
		{"long realm ID", func() error { return st.CreateRealm(ctx, store.Realm{ID: long}) }},
		{"control char in realm name", func() error { return st.CreateRealm(ctx, store.Realm{ID: "r9", Name: "a\nb"}) }},
		{"invalid UTF-8 user ID", func() error { return st.CreateUser(ctx, store.User{Realm: "r1", ID: "\xff"}) }},
		{"empty user ID", func() error { return st.CreateUser(ctx, store.User{Realm: "r1"}) }},
		{"negative failures", func() error { return st.CreateUser(ctx, store.User{Realm: "r1", ID: "bad", Failures: -1}) }},
		{"huge PIN hash", func() error {
			return st.CreateUser(ctx, store.User{Realm: "r1", ID: "bad", PINHash: make([]byte, store.MaxBlobLen+1)})
		}},
		{"huge PIN hash set", func() error { return st.SetPINHash(ctx, "r1", "alice", make([]byte, store.MaxBlobLen+1)) }},
		{"token type", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.Type = "sms" })) }},
		{"token type case", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.Type = "TOTP" })) }},
		{"algorithm", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.Algorithm = "MD5" })) }},
		{"algorithm case", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.Algorithm = "sha1" })) }},
		{"digits", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.Digits = 5 })) }},
		{"TOTP period 0", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.Period = 0 })) }},
		{"HOTP with period", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.Type = "hotp" })) }},
		{"seed mode", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.SeedMode = "plain" })) }},
		{"random without ciphertext", func() error {
			return st.CreateToken(ctx, tok(func(t *store.Token) { t.SeedMode = store.SeedRandom }))
		}},
		{"derived with ciphertext", func() error {
			return st.CreateToken(ctx, tok(func(t *store.Token) { t.SeedCiphertext = []byte{1} }))
		}},
		{"status", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.Status = "new" })) }},
		{"negative last used", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.LastUsed = -1 })) }},
		{"empty token ID", func() error { return st.CreateToken(ctx, tok(func(t *store.Token) { t.ID = "" })) }},
		{"no scopes", func() error { return st.CreateAPIClient(ctx, client(func(c *store.APIClient) { c.Scopes = nil })) }},
		{"unknown scope", func() error {
			return st.CreateAPIClient(ctx, client(func(c *store.APIClient) { c.Scopes = []string{"root"} }))
		}},
		{"repeated scope", func() error {
			return st.CreateAPIClient(ctx, client(func(c *store.APIClient) { c.Scopes = []string{"admin", "admin"} }))
		}},
		{"no token hash", func() error { return st.CreateAPIClient(ctx, client(func(c *store.APIClient) { c.TokenHash = nil })) }},
		{"empty client ID", func() error { return st.CreateAPIClient(ctx, client(func(c *store.APIClient) { c.ID = "" })) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.call(), store.ErrInvalid) })
	}
	users, err := st.ListUsers(ctx, "r1", "", 10)
	must(t, err)
	toks, err := st.ListTokens(ctx, "r1", "alice")
	must(t, err)
	clients, err := st.ListAPIClients(ctx, "r1")
	must(t, err)
	if len(users) != 1 || len(toks) != 0 || len(clients) != 0 {
		t.Errorf("rejected records were stored: %d users, %d tokens, %d clients", len(users), len(toks), len(clients))
	}
	if _, err := st.GetRealm(ctx, "r9"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("rejected realm was stored: %v", err)
	}
}
