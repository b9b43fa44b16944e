package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// AcceptCode is AdvanceToken followed by AppendAudit(e), for the one write
// on the hot path of verification: the entry recording an acceptance must
// not be lost when the acceptance is kept.
//
// On both engines the token's new state and its audit entry commit together
// in one transaction shared by every acceptance queued meanwhile (one fsync
// for the batch): on SQLite as one write of the group-commit batch, on
// PostgreSQL as described in accept_pg.go.
func (s *sqlStore) AcceptCode(ctx context.Context, realm, user, id string, used, version int64, e eventlog.Entry) (eventlog.Entry, error) {
	if used < 0 {
		return eventlog.Entry{}, invalid("step or counter %d is negative", used)
	}
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	if _, err := eventlog.Next(nil, e, nil); err != nil {
		return eventlog.Entry{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, ok := s.e.(*pgEngine); ok {
		return s.acceptPG(ctx, realm, user, id, used, version, e)
	}
	var out eventlog.Entry
	err := s.e.write(ctx, func(q querier) error {
		var err error
		out, err = s.acceptSQLite(ctx, q, realm, user, id, used, version, e)
		return err
	})
	if err != nil {
		return eventlog.Entry{}, classify(s.e, err)
	}
	return out, nil
}

// acceptSQLite is AcceptCode's write in SQLite's writer batch (q).
func (s *sqlStore) acceptSQLite(ctx context.Context, q querier, realm, user, id string, used, version int64, e eventlog.Entry) (eventlog.Entry, error) {
	n, err := q.exec(ctx, acceptUpdate, used, realm, user, id, version)
	if err != nil {
		return eventlog.Entry{}, err
	}
	if n == 0 {
		return eventlog.Entry{}, s.notAccepted(ctx, q, realm, user, id, version)
	}
	// Chain on from the batch's head when an acceptance of this batch wrote
	// it; else, or when another writer took the next number since, from the
	// head read now. Next needs only its sequence number and hash.
	head := &batchHead{}
	if bq, ok := q.(batchQuerier); ok {
		head = bq.head
	}
	for attempt := 0; ; attempt++ {
		if !head.ok {
			if err := readHead(ctx, q, head); err != nil {
				return eventlog.Entry{}, err
			}
		}
		var prev *eventlog.Entry
		if head.seq > 0 {
			prev = &eventlog.Entry{Seq: head.seq, Hash: head.hash}
		}
		out, err := eventlog.Next(prev, e, nil)
		if err != nil {
			return eventlog.Entry{}, err
		}
		_, err = q.exec(ctx, auditInsert(1), int64(out.Seq), out.Time.UnixMicro(), out.Kind, out.Actor, out.Subject,
			nullBytes(out.Data), out.Prev, out.Hash)
		if errors.Is(classify(s.e, err), ErrExists) && attempt == 0 {
			head.ok = false // the number was taken: read the head again
			continue
		}
		if err != nil {
			return eventlog.Entry{}, err
		}
		head.ok, head.seq, head.hash = true, out.Seq, out.Hash
		return out, nil
	}
}

// headQuery reads the audit log's newest entry's sequence number and hash:
// all an acceptance needs to chain on (eventlog.Next).
const headQuery = `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`

// readHead reads the audit log's newest entry's sequence number and hash
// into h (0 and nil for an empty log).
func readHead(ctx context.Context, q querier, h *batchHead) error {
	var seq int64
	var hash []byte
	switch err := q.queryRow(ctx, headQuery).Scan(&seq, &hash); {
	case errors.Is(err, sql.ErrNoRows):
		seq, hash = 0, nil
	case err != nil:
		return err
	}
	h.ok, h.seq, h.hash = true, uint64(seq), hash
	return nil
}

// acceptUpdate is AdvanceToken's conditional UPDATE with AcceptCode's
// version check: $1 used, $2 realm, $3 user, $4 token, $5 version (< 0:
// not checked).
const acceptUpdate = `UPDATE tokens SET last_used = $1, used = TRUE WHERE realm = $2 AND user_id = $3 AND id = $4 AND (used = FALSE OR last_used < $1)
	AND ($5 < 0 OR EXISTS (SELECT 1 FROM users WHERE realm = $2 AND id = $3 AND version = $5))`

// notAccepted tells why acceptUpdate changed nothing: ErrNotFound (no such
// token), ErrStale (the user's version moved, or the user is gone), else
// ErrReplayed.
func (s *sqlStore) notAccepted(ctx context.Context, q querier, realm, user, id string, version int64) error {
	var current int64
	err := q.queryRow(ctx, `SELECT u.version FROM tokens t JOIN users u ON u.realm = t.realm AND u.id = t.user_id
		WHERE t.realm = $1 AND t.user_id = $2 AND t.id = $3`, realm, user, id).Scan(&current)
	switch {
	case err != nil:
		return s.noRows(err, "token %q of user %q in realm %q", id, user, realm)
	case version >= 0 && current != version:
		return ErrStale
	}
	return ErrReplayed
}

// prefixed qualifies every column of a column list with alias.
func prefixed(alias, cols string) string {
	parts := strings.Split(cols, ", ")
	for i, c := range parts {
		parts[i] = alias + "." + c
	}
	return strings.Join(parts, ", ")
}

var userTokensQuery = `SELECT ` + prefixed("u", userSelect) + `, ` + prefixed("t", tokenColumns) +
	` FROM users u JOIN tokens t ON t.realm = u.realm AND t.user_id = u.id WHERE u.realm = $1 AND u.id = $2 ORDER BY t.created_us, t.id`

// GetUserTokens is GetUser and ListTokens in one query, for the hot path of
// verification (one round trip on PostgreSQL instead of two).
func (s *sqlStore) GetUserTokens(ctx context.Context, realm, id string) (User, []Token, error) {
	rs, err := s.e.reader().query(ctx, userTokensQuery, realm, id)
	if err != nil {
		return User{}, nil, classify(s.e, err)
	}
	defer rs.Close()
	var u User
	var ts []Token
	for rs.Next() {
		var t Token
		var failures, lastFailure, created, digits, period, epoch, tcreated int64
		if err := rs.Scan(&u.Realm, &u.ID, &u.DisplayName, &u.PINHash, &failures, &lastFailure, &created, &u.Version,
			&t.Realm, &t.UserID, &t.ID, &t.Type, &t.Algorithm, &digits, &period, &t.SeedMode, &epoch,
			&t.SeedCiphertext, &t.Status, &t.LastUsed, &t.Used, &tcreated); err != nil {
			return User{}, nil, classify(s.e, err)
		}
		u.Failures, u.LastFailure, u.CreatedAt = int(failures), fromMicros(lastFailure), fromMicros(created)
		t.Digits, t.Period, t.Epoch, t.CreatedAt = int(digits), int(period), uint32(epoch), fromMicros(tcreated)
		ts = append(ts, t)
	}
	if err := rs.Err(); err != nil {
		return User{}, nil, classify(s.e, err)
	}
	if len(ts) > 0 {
		return u, ts, nil
	}
	// No tokens (or no user): the rare path answers which.
	u, err = s.GetUser(ctx, realm, id)
	return u, nil, err
}
