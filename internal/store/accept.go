package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// AcceptCode is AdvanceToken followed by AppendAudit(e), for the one write
// on the hot path of verification: the entry recording an acceptance must
// not be lost when the acceptance is kept.
//
// On SQLite both run in one write of the group-commit batch, so the token's
// new state and its audit entry commit together with one fsync shared by the
// whole batch. On PostgreSQL the conditional UPDATE commits on its own (so
// replicas never wait on the audit chain to decide a replay) and the entry
// joins this process's next audit batch; the answer waits for both.
func (s *sqlStore) AcceptCode(ctx context.Context, realm, user, id string, used int64, e eventlog.Entry) (eventlog.Entry, error) {
	if used < 0 {
		return eventlog.Entry{}, invalid("step or counter %d is negative", used)
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if _, err := eventlog.Next(nil, e, nil); err != nil {
		return eventlog.Entry{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if s.e.name() != "sqlite" {
		if err := s.AdvanceToken(ctx, realm, user, id, used); err != nil {
			return eventlog.Entry{}, err
		}
		return s.AppendAudit(ctx, e)
	}
	var out eventlog.Entry
	err := s.e.write(ctx, func(q querier) error {
		n, err := q.exec(ctx, `UPDATE tokens SET last_used = $1, used = TRUE WHERE realm = $2 AND user_id = $3 AND id = $4 AND (used = FALSE OR last_used < $1)`,
			used, realm, user, id)
		if err != nil {
			return err
		}
		if n == 0 {
			var one int64
			if err := q.queryRow(ctx, `SELECT 1 FROM tokens WHERE realm = $1 AND user_id = $2 AND id = $3`, realm, user, id).Scan(&one); err != nil {
				return s.noRows(err, "token %q of user %q in realm %q", id, user, realm)
			}
			return ErrReplayed
		}
		var prev *eventlog.Entry
		last, err := scanAudit(q.queryRow(ctx, `SELECT `+auditColumns+` FROM audit_log ORDER BY seq DESC LIMIT 1`))
		switch {
		case err == nil:
			prev = &last
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if out, err = eventlog.Next(prev, e, nil); err != nil {
			return err
		}
		_, err = q.exec(ctx, auditInsert(1), int64(out.Seq), out.Time.UnixMicro(), out.Kind, out.Actor, out.Subject,
			nullBytes(out.Data), out.Prev, out.Hash)
		return err
	})
	if err != nil {
		return eventlog.Entry{}, classify(s.e, err)
	}
	return out, nil
}
