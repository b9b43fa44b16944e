package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"

	"github.com/outpost-auth/outpost/internal/clock"
	"github.com/outpost-auth/outpost/internal/eventlog"
)

// sqlStore is the one implementation of Store, over either engine.
type sqlStore struct {
	e engine
	// audit appends the entries of this process one batch at a time (see
	// AppendAudit), so that its appenders queue instead of colliding on the
	// sequence number and retrying.
	audit *committer[*auditAppend]
	// now stamps records written without a time (see WithClock).
	now func() time.Time
}

func newSQLStore(e engine) *sqlStore {
	s := &sqlStore{e: e, now: clock.System}
	s.audit = newCommitter(s.appendBatch)
	return s
}

func (s *sqlStore) Engine() string                 { return s.e.name() }
func (s *sqlStore) Ping(ctx context.Context) error { return s.e.ping(ctx) }
func (s *sqlStore) Close() error {
	s.closePGAcceptor()
	s.audit.close()
	return s.e.close()
}

// exec runs one write statement and returns the number of rows it changed.
func (s *sqlStore) exec(ctx context.Context, stmt string, args ...any) (int64, error) {
	var n int64
	err := s.e.write(ctx, func(q querier) error {
		var err error
		n, err = q.exec(ctx, stmt, args...)
		return err
	})
	if err != nil { // n only once the write is done: after a cancelled wait it may still be running
		return 0, err
	}
	return n, nil
}

// execReturning runs one write statement with a RETURNING clause and scans
// the row it returns into dest.
func (s *sqlStore) execReturning(ctx context.Context, dest []any, stmt string, args ...any) error {
	return s.e.write(ctx, func(q querier) error { return q.queryRow(ctx, stmt, args...).Scan(dest...) })
}

// micros and fromMicros convert times; the zero time is stored as 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// stamp returns t, or the store clock's time when t is zero, in Unix microseconds.
func (s *sqlStore) stamp(t time.Time) int64 {
	if t.IsZero() {
		t = s.now()
	}
	return t.UnixMicro()
}

// nullBytes stores an empty slice as NULL, so that nil and empty read back alike.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// noRows turns "no rows" into ErrNotFound with a message naming what is missing.
func (s *sqlStore) noRows(err error, format string, args ...any) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: "+format, append([]any{ErrNotFound}, args...)...)
	}
	return classify(s.e, err)
}

// mustChange returns ErrNotFound when a write changed no row.
func (s *sqlStore) mustChange(n int64, err error, format string, args ...any) error {
	if err != nil {
		return classify(s.e, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: "+format, append([]any{ErrNotFound}, args...)...)
	}
	return nil
}

// --- realms

func (s *sqlStore) CreateRealm(ctx context.Context, r Realm) error {
	if err := checkRealm(&r); err != nil {
		return err
	}
	_, err := s.exec(ctx, `INSERT INTO realms (id, name, created_us) VALUES ($1, $2, $3)`,
		r.ID, r.Name, s.stamp(r.CreatedAt))
	if err = classify(s.e, err); errors.Is(err, ErrExists) {
		return fmt.Errorf("%w: realm %q", ErrExists, r.ID)
	}
	return err
}

func (s *sqlStore) GetRealm(ctx context.Context, id string) (Realm, error) {
	r := Realm{ID: id}
	var created int64
	err := s.e.reader().queryRow(ctx, `SELECT name, created_us FROM realms WHERE id = $1`, id).Scan(&r.Name, &created)
	if err != nil {
		return Realm{}, s.noRows(err, "realm %q", id)
	}
	r.CreatedAt = fromMicros(created)
	return r, nil
}

// --- users

// userColumns are the columns CreateUser writes; userSelect adds the
// version the store keeps.
const (
	userColumns = `realm, id, display_name, pin_hash, failures, last_failure_us, created_us`
	userSelect  = userColumns + `, version`
)

func scanUser(r row) (User, error) {
	var u User
	var failures, lastFailure, created int64
	if err := r.Scan(&u.Realm, &u.ID, &u.DisplayName, &u.PINHash, &failures, &lastFailure, &created, &u.Version); err != nil {
		return User{}, err
	}
	u.Failures, u.LastFailure, u.CreatedAt = int(failures), fromMicros(lastFailure), fromMicros(created)
	return u, nil
}

func (s *sqlStore) CreateUser(ctx context.Context, u User) error {
	if err := checkUser(&u); err != nil {
		return err
	}
	_, err := s.exec(ctx, `INSERT INTO users (`+userColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		u.Realm, u.ID, u.DisplayName, nullBytes(u.PINHash), int64(u.Failures), micros(u.LastFailure), s.stamp(u.CreatedAt))
	switch err = classify(s.e, err); {
	case errors.Is(err, ErrExists):
		return fmt.Errorf("%w: user %q in realm %q", ErrExists, u.ID, u.Realm)
	case errors.Is(err, errForeignKey):
		return fmt.Errorf("%w: realm %q (create it first)", ErrNotFound, u.Realm)
	}
	return err
}

func (s *sqlStore) GetUser(ctx context.Context, realm, id string) (User, error) {
	u, err := scanUser(s.e.reader().queryRow(ctx, `SELECT `+userSelect+` FROM users WHERE realm = $1 AND id = $2`, realm, id))
	if err != nil {
		return User{}, s.noRows(err, "user %q in realm %q", id, realm)
	}
	return u, nil
}

func (s *sqlStore) ListUsers(ctx context.Context, realm, after string, limit int) ([]User, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	rs, err := s.e.reader().query(ctx, `SELECT `+userSelect+` FROM users WHERE realm = $1 AND id > $2 ORDER BY id LIMIT $3`,
		realm, after, int64(limit))
	return collect(s, rs, err, scanUser)
}

func (s *sqlStore) DeleteUser(ctx context.Context, realm, id string) error {
	return inTx(ctx, s.e, isConflict, func(q querier) error {
		if _, err := q.exec(ctx, `DELETE FROM tokens WHERE realm = $1 AND user_id = $2`, realm, id); err != nil {
			return err
		}
		n, err := q.exec(ctx, `DELETE FROM users WHERE realm = $1 AND id = $2`, realm, id)
		return s.mustChange(n, err, "user %q in realm %q", id, realm)
	})
}

func (s *sqlStore) SetPINHash(ctx context.Context, realm, id string, hash []byte) error {
	if err := checkBlob("PIN hash", hash); err != nil {
		return err
	}
	n, err := s.exec(ctx, `UPDATE users SET pin_hash = $1, version = version + 1 WHERE realm = $2 AND id = $3`, nullBytes(hash), realm, id)
	return s.mustChange(n, err, "user %q in realm %q", id, realm)
}

func (s *sqlStore) RecordFailure(ctx context.Context, realm, id string, now time.Time) (int, error) {
	var n int64
	err := s.execReturning(ctx, []any{&n}, `UPDATE users SET failures = failures + 1, last_failure_us = $1, version = version + 1 WHERE realm = $2 AND id = $3 RETURNING failures`,
		micros(now), realm, id)
	if err != nil {
		return 0, s.noRows(err, "user %q in realm %q", id, realm)
	}
	return int(n), nil
}

func (s *sqlStore) ResetFailures(ctx context.Context, realm, id string) error {
	n, err := s.exec(ctx, `UPDATE users SET failures = 0, version = version + 1 WHERE realm = $1 AND id = $2`, realm, id)
	return s.mustChange(n, err, "user %q in realm %q", id, realm)
}

// --- tokens

const tokenColumns = `realm, user_id, id, otp_type, algorithm, digits, period, seed_mode, epoch, seed_ciphertext, status, last_used, used, created_us`

func scanToken(r row) (Token, error) {
	var t Token
	var digits, period, epoch, created int64
	if err := r.Scan(&t.Realm, &t.UserID, &t.ID, &t.Type, &t.Algorithm, &digits, &period, &t.SeedMode, &epoch,
		&t.SeedCiphertext, &t.Status, &t.LastUsed, &t.Used, &created); err != nil {
		return Token{}, err
	}
	t.Digits, t.Period, t.Epoch, t.CreatedAt = int(digits), int(period), uint32(epoch), fromMicros(created)
	return t, nil
}

func (s *sqlStore) CreateToken(ctx context.Context, t Token) error {
	if err := checkToken(&t); err != nil {
		return err
	}
	err := s.tokenChange(ctx, t.Realm, t.UserID, t.ID, `INSERT INTO tokens (`+tokenColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		t.Realm, t.UserID, t.ID, t.Type, t.Algorithm, int64(t.Digits), int64(t.Period), t.SeedMode, int64(t.Epoch),
		nullBytes(t.SeedCiphertext), t.Status, t.LastUsed, t.Used, s.stamp(t.CreatedAt))
	switch err = classify(s.e, err); {
	case errors.Is(err, ErrExists):
		return fmt.Errorf("%w: token %q of user %q in realm %q", ErrExists, t.ID, t.UserID, t.Realm)
	case errors.Is(err, errForeignKey):
		return fmt.Errorf("%w: user %q in realm %q", ErrNotFound, t.UserID, t.Realm)
	}
	return err
}

func (s *sqlStore) GetToken(ctx context.Context, realm, user, id string) (Token, error) {
	t, err := scanToken(s.e.reader().queryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE realm = $1 AND user_id = $2 AND id = $3`, realm, user, id))
	if err != nil {
		return Token{}, s.noRows(err, "token %q of user %q in realm %q", id, user, realm)
	}
	return t, nil
}

func (s *sqlStore) ListTokens(ctx context.Context, realm, user string) ([]Token, error) {
	rs, err := s.e.reader().query(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE realm = $1 AND user_id = $2 ORDER BY created_us, id`, realm, user)
	return collect(s, rs, err, scanToken)
}

func (s *sqlStore) DeleteToken(ctx context.Context, realm, user, id string) error {
	return s.tokenChange(ctx, realm, user, id, `DELETE FROM tokens WHERE realm = $1 AND user_id = $2 AND id = $3`, realm, user, id)
}

func (s *sqlStore) SetTokenStatus(ctx context.Context, realm, user, id, status string) error {
	if err := checkStatus(status); err != nil {
		return err
	}
	return s.tokenChange(ctx, realm, user, id, `UPDATE tokens SET status = $1 WHERE realm = $2 AND user_id = $3 AND id = $4`, status, realm, user, id)
}

// tokenChange runs stmt, a change to token id of user in realm that
// verification reads, and moves the user's Version in the same
// transaction. ErrNotFound when stmt changed no row; the statement's
// own errors come back classified for the caller to name.
func (s *sqlStore) tokenChange(ctx context.Context, realm, user, id, stmt string, args ...any) error {
	return inTx(ctx, s.e, isConflict, func(q querier) error {
		n, err := q.exec(ctx, stmt, args...)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%w: token %q of user %q in realm %q", ErrNotFound, id, user, realm)
		}
		_, err = q.exec(ctx, `UPDATE users SET version = version + 1 WHERE realm = $1 AND id = $2`, realm, user)
		return err
	})
}

// AdvanceToken is the replay rule: one conditional UPDATE, which the
// database applies atomically against the row's latest committed state, so
// that of any number of concurrent callers offering the same value (in this
// process or in other replicas) exactly one changes the row. Only when it
// changes nothing is a second statement needed, to tell a replay from a
// missing token.
func (s *sqlStore) AdvanceToken(ctx context.Context, realm, user, id string, used int64) error {
	if used < 0 {
		return invalid("step or counter %d is negative", used)
	}
	n, err := s.exec(ctx, `UPDATE tokens SET last_used = $1, used = TRUE WHERE realm = $2 AND user_id = $3 AND id = $4 AND (used = FALSE OR last_used < $1)`,
		used, realm, user, id)
	if err != nil || n > 0 {
		return classify(s.e, err)
	}
	var one int64
	err = s.e.reader().queryRow(ctx, `SELECT 1 FROM tokens WHERE realm = $1 AND user_id = $2 AND id = $3`, realm, user, id).Scan(&one)
	if err != nil {
		return s.noRows(err, "token %q of user %q in realm %q", id, user, realm)
	}
	return ErrReplayed
}

// --- API clients

const apiClientColumns = `realm, id, name, scopes, token_hash, disabled, created_us`

func scanAPIClient(r row) (APIClient, error) {
	var c APIClient
	var scopes string
	var created int64
	if err := r.Scan(&c.Realm, &c.ID, &c.Name, &scopes, &c.TokenHash, &c.Disabled, &created); err != nil {
		return APIClient{}, err
	}
	c.Scopes, c.CreatedAt = strings.Fields(scopes), fromMicros(created)
	return c, nil
}

func (s *sqlStore) CreateAPIClient(ctx context.Context, c APIClient) error {
	if err := checkAPIClient(&c); err != nil {
		return err
	}
	_, err := s.exec(ctx, `INSERT INTO api_clients (`+apiClientColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		c.Realm, c.ID, c.Name, strings.Join(c.Scopes, " "), c.TokenHash, c.Disabled, s.stamp(c.CreatedAt))
	if err = classify(s.e, err); errors.Is(err, ErrExists) {
		return fmt.Errorf("%w: API client %q in realm %q, or one with the same token", ErrExists, c.ID, c.Realm)
	}
	return err
}

// GetAPIClientByHash looks the hash up through a unique index. The lookup
// is not constant-time, and needs not be: the hash is an HMAC under a server
// key, so its timing tells an attacker nothing about a token they could send.
func (s *sqlStore) GetAPIClientByHash(ctx context.Context, hash []byte) (APIClient, error) {
	c, err := scanAPIClient(s.e.reader().queryRow(ctx, `SELECT `+apiClientColumns+` FROM api_clients WHERE token_hash = $1`, hash))
	if err != nil {
		return APIClient{}, s.noRows(err, "no API client has this token")
	}
	return c, nil
}

func (s *sqlStore) ListAPIClients(ctx context.Context, realm string) ([]APIClient, error) {
	rs, err := s.e.reader().query(ctx, `SELECT `+apiClientColumns+` FROM api_clients WHERE realm = $1 ORDER BY id`, realm)
	return collect(s, rs, err, scanAPIClient)
}

func (s *sqlStore) DisableAPIClient(ctx context.Context, realm, id string) error {
	n, err := s.exec(ctx, `UPDATE api_clients SET disabled = TRUE WHERE realm = $1 AND id = $2`, realm, id)
	return s.mustChange(n, err, "API client %q in realm %q", id, realm)
}

// --- audit log

const auditColumns = `seq, at_us, kind, actor, subject, data, prev, hash`

func scanAudit(r row) (eventlog.Entry, error) {
	var e eventlog.Entry
	var seq, at int64
	var data []byte
	if err := r.Scan(&seq, &at, &e.Kind, &e.Actor, &e.Subject, &data, &e.Prev, &e.Hash); err != nil {
		return eventlog.Entry{}, err
	}
	e.Seq, e.Time = uint64(seq), time.UnixMicro(at).UTC()
	if len(data) > 0 {
		e.Data = data
	}
	return e, nil
}

// isAuditRace is AppendAudit's retry rule: another appender took the
// sequence number (a unique violation on PostgreSQL), or the transaction
// lost a serialisation race (CockroachDB, or SQLite's lock held by another
// process past the busy timeout).
func isAuditRace(err error) bool { return errors.Is(err, ErrExists) || errors.Is(err, ErrConflict) }

type auditAppend struct {
	in, out eventlog.Entry
}

// AppendAudit queues e for this process's appender, which takes every entry
// queued while its previous transaction was committing and appends them in
// one: it reads the last entry, chains each new one with eventlog.Next, and
// inserts them under the sequence number's primary key. When another
// replica appended first, an insert fails with a unique violation and the
// whole transaction is retried from the new last entry.
func (s *sqlStore) AppendAudit(ctx context.Context, e eventlog.Entry) (eventlog.Entry, error) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	if _, err := eventlog.Next(nil, e, nil); err != nil { // check the fields before queueing
		return eventlog.Entry{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	a := &auditAppend{in: e}
	if err := s.audit.do(ctx, a); err != nil {
		return eventlog.Entry{}, fmt.Errorf("store: appending to the audit log: %w", err)
	}
	return a.out, nil
}

func (s *sqlStore) appendBatch(batch []*pending[*auditAppend]) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		var prev *eventlog.Entry
		last, err := scanAudit(q.queryRow(ctx, `SELECT `+auditColumns+` FROM audit_log ORDER BY seq DESC LIMIT 1`))
		switch {
		case err == nil:
			prev = &last
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		rows := make([]any, 0, 8*len(batch))
		for _, p := range batch {
			a := p.req
			if a.out, err = eventlog.Next(prev, a.in, nil); err != nil {
				return err
			}
			rows = append(rows, int64(a.out.Seq), a.out.Time.UnixMicro(), a.out.Kind, a.out.Actor, a.out.Subject,
				nullBytes(a.out.Data), a.out.Prev, a.out.Hash)
			prev = &a.out
		}
		// A few multi-row INSERTs rather than one per entry: on PostgreSQL each
		// statement is a round trip. Chunks are powers of two, so that only
		// log2(maxBatch)+1 statement texts are ever prepared.
		for len(rows) > 0 {
			n := 1
			for 2*n*8 <= len(rows) {
				n *= 2
			}
			if _, err := q.exec(ctx, auditInsert(n), rows[:8*n]...); err != nil {
				return err
			}
			rows = rows[8*n:]
		}
		return nil
	})
	for _, p := range batch {
		p.err = err
	}
}

// auditInserts[k] inserts 2^k audit entries.
var auditInserts = func() []string {
	var out []string
	for n := 1; n <= maxBatch; n *= 2 {
		var b strings.Builder
		b.WriteString(`INSERT INTO audit_log (` + auditColumns + `) VALUES `)
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", 8*i+1, 8*i+2, 8*i+3, 8*i+4, 8*i+5, 8*i+6, 8*i+7, 8*i+8)
		}
		out = append(out, b.String())
	}
	return out
}()

// auditInsert returns the statement inserting n entries, n a power of two up to maxBatch.
func auditInsert(n int) string { return auditInserts[bits.Len(uint(n))-1] }

func (s *sqlStore) ListAudit(ctx context.Context, after uint64, limit int) ([]eventlog.Entry, error) {
	if err := checkLimit(limit); err != nil {
		return nil, err
	}
	if after > 1<<63-1 {
		return nil, invalid("sequence number %d out of range", after)
	}
	rs, err := s.e.reader().query(ctx, `SELECT `+auditColumns+` FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`, int64(after), int64(limit))
	return collect(s, rs, err, scanAudit)
}

// collect reads every row of a query with scan.
func collect[T any](s *sqlStore, rs rows, err error, scan func(row) (T, error)) ([]T, error) {
	if err != nil {
		return nil, classify(s.e, err)
	}
	defer rs.Close()
	var out []T
	for rs.Next() {
		v, err := scan(rs)
		if err != nil {
			return nil, classify(s.e, err)
		}
		out = append(out, v)
	}
	if err := rs.Err(); err != nil {
		return nil, classify(s.e, err)
	}
	return out, nil
}
