package server

import (
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/store/storetest"
)

// TestDatabaseUnavailable: while PostgreSQL refuses the server's
// connections (at max_connections, restarting), a verification is answered
// 503 "unavailable" with Retry-After, not 500, and spends nothing: the same
// code verifies once the database accepts connections again. The log names
// the cause for the operator, without the code.
func TestDatabaseUnavailable(t *testing.T) {
	pg, f, verifier, code := outageFixture(t)
	// The verifier's API token is looked up (and cached) before the outage,
	// so that the refusal meets the verification itself.
	f.mustCall(401, verifier, "POST", "/v1/verify", map[string]string{"user": "nobody", "code": "000000"})
	mark := len(logBuf.String())

	pg.Refuse(true)
	refused := func() {
		t.Helper()
		r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "alice", "code": code})
		if r.status != 503 || r.errCode() != "unavailable" || r.header.Get("Retry-After") != "1" {
			t.Fatalf("while refused: %d %s Retry-After=%q", r.status, r.raw, r.header.Get("Retry-After"))
		}
	}
	for range 3 {
		refused()
	}
	logs := logBuf.String()[mark:]
	if !strings.Contains(logs, "database unavailable") || !strings.Contains(logs, "SQLSTATE") {
		t.Errorf("the log does not name the cause:\n%s", logs)
	}
	// One line a second, however many requests meet the outage; the next
	// second's says how many were left out.
	if n := strings.Count(logs, "database unavailable"); n != 1 {
		t.Errorf("%d log lines for 3 refusals within a second, want 1:\n%s", n, logs)
	}
	f.clock.Add(time.Second)
	refused()
	logs = logBuf.String()[mark:]
	if n := strings.Count(logs, "database unavailable"); n != 2 || !strings.Contains(logs, `"not_logged_before":2`) {
		t.Errorf("a second later: %d log lines, want 2, the second saying 2 were not logged:\n%s", n, logs)
	}
	// The outage's last refusals are counted once it is over (Housekeep's
	// flush), not with the next outage's first line.
	refused()
	f.srv.outage.flush(f.srv.log, f.clock.Now())
	if n := strings.Count(logBuf.String()[mark:], "database unavailable"); n != 2 {
		t.Errorf("flushed within the second: %d lines, want still 2", n)
	}
	f.clock.Add(time.Second)
	f.srv.outage.flush(f.srv.log, f.clock.Now())
	f.srv.outage.flush(f.srv.log, f.clock.Now())
	logs = logBuf.String()[mark:]
	if n := strings.Count(logs, "database unavailable"); n != 3 || !strings.Contains(logs, `"not_logged_before":1`) {
		t.Errorf("after the outage: %d lines, want 3, the last saying 1 was not logged:\n%s", n, logs)
	}
	if strings.Contains(logs, code) {
		t.Errorf("the log holds the code")
	}

	pg.Refuse(false)
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "alice", "code": code}); r.status != 200 {
		t.Fatalf("after: %d %s", r.status, r.raw)
	}
	if r := f.call(verifier, "POST", "/v1/verify", map[string]string{"user": "alice", "code": code}); r.status != 401 {
		t.Fatalf("replay after: %d %s", r.status, r.raw)
	}
}

// TestReadOnlyDatabaseHidesUsers: while PostgreSQL answers reads and
// refuses writes (a standby after a failover: SQLSTATE 25006), a known
// user's wrong code cannot be recorded and is answered 503; an unknown
// user's, which writes nothing, is answered 503 too rather than 401, so
// that the status does not tell which users exist (it writes the unknown
// users' tally instead, which is refused as well). Once the database takes
// writes again the first unknown user's tally ends that state: 401 at
// once. The right code was not spent.
func TestReadOnlyDatabaseHidesUsers(t *testing.T) {
	pg, f, verifier, code := outageFixture(t)
	verify := func(user, code string) resp {
		t.Helper()
		return f.call(verifier, "POST", "/v1/verify", map[string]string{"user": user, "code": code})
	}
	if r := verify("nobody", "000000"); r.status != 401 {
		t.Fatalf("unknown user before: %d %s", r.status, r.raw)
	}

	pg.ReadOnly(true, f.st)
	for _, tc := range []struct{ who, user, code string }{
		{"known user, wrong code", "alice", "000000"},
		{"unknown user", "nobody", "000000"},
		{"known user, right code", "alice", code},
		{"another unknown user", "nobody2", "123456"},
	} {
		if r := verify(tc.user, tc.code); r.status != 503 || r.errCode() != "unavailable" {
			t.Errorf("%s while writes are refused: %d %s", tc.who, r.status, r.raw)
		}
	}

	pg.ReadOnly(false, f.st)
	if r := verify("nobody", "000000"); r.status != 401 {
		t.Errorf("the first unknown user after: %d %s", r.status, r.raw)
	}
	if r := verify("alice", code); r.status != 200 {
		t.Fatalf("the right code after: %d %s", r.status, r.raw)
	}
	for _, user := range []string{"alice", "nobody"} {
		if r := verify(user, "000000"); r.status != 401 {
			t.Errorf("%s's wrong code after: %d %s", user, r.status, r.raw)
		}
	}
}

// outageFixture is a server on a Refusable PostgreSQL schema, a verifier's
// API token, and alice's first HOTP code, not yet used.
func outageFixture(t *testing.T) (*storetest.Refusable, *fixture, string, string) {
	pg := storetest.RefusablePostgres(t)
	f := newFixture(t, pg.DSN)
	verifier := f.client("verifier")
	uri := f.enrol("alice", map[string]any{"type": "hotp"})
	return pg, f, verifier, f.codeAt(uri, 1)
}
