package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// PostgreSQL group commit of acceptances. Each batch is one transaction:
// the conditional UPDATEs of every acceptance queued meanwhile go to the
// server pipelined in one round trip (pgx.Batch), in a fixed order of
// (realm, user, token) so that two replicas' batches always lock rows in
// the same order and cannot deadlock; then the accepted ones' audit entries
// are appended with one multi-row INSERT; then one COMMIT. A replica racing
// on the same token waits on the row lock and re-evaluates the condition
// after this commit, so it sees the value as used: the once-only promise is
// the same as AdvanceToken's. If another replica took the audit sequence
// number, the whole batch (token updates included) rolls back and is
// retried, so no acceptance is ever kept without its entry.

type acceptOp struct {
	realm, user, id string
	used, version   int64
	in, out         eventlog.Entry
	replayed        bool
}

var pgAcceptors sync.Map // *sqlStore → *committer[*acceptOp]

func (s *sqlStore) pgAcceptor() *committer[*acceptOp] {
	if c, ok := pgAcceptors.Load(s); ok {
		return c.(*committer[*acceptOp])
	}
	c, loaded := pgAcceptors.LoadOrStore(s, newCommitter(s.acceptBatchPG))
	if loaded {
		c.(*committer[*acceptOp]).close() // lost the race: the other one serves
		c, _ = pgAcceptors.Load(s)
	}
	return c.(*committer[*acceptOp])
}

// closePGAcceptor stops the committer, if any (from Close).
func (s *sqlStore) closePGAcceptor() {
	if c, ok := pgAcceptors.LoadAndDelete(s); ok {
		c.(*committer[*acceptOp]).close()
	}
}

func (s *sqlStore) acceptPG(ctx context.Context, realm, user, id string, used, version int64, e eventlog.Entry) (eventlog.Entry, error) {
	op := &acceptOp{realm: realm, user: user, id: id, used: used, version: version, in: e}
	if err := s.pgAcceptor().do(ctx, op); err != nil {
		return eventlog.Entry{}, err
	}
	if op.replayed {
		return eventlog.Entry{}, s.notAccepted(ctx, s.e.reader(), realm, user, id, version)
	}
	return op.out, nil
}

func (s *sqlStore) acceptBatchPG(batch []*pending[*acceptOp]) {
	pe := s.e.(*pgEngine)
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	order := slices.Clone(batch)
	slices.SortStableFunc(order, func(a, b *pending[*acceptOp]) int {
		return cmp.Or(cmp.Compare(a.req.realm, b.req.realm), cmp.Compare(a.req.user, b.req.user), cmp.Compare(a.req.id, b.req.id))
	})
	var err error
	for attempt := 0; attempt < maxTxAttempts; attempt++ {
		if attempt > 0 {
			if err = backoff(ctx, attempt); err != nil {
				break
			}
		}
		err = classify(s.e, pgx.BeginFunc(ctx, pe.pool, func(tx pgx.Tx) error { return acceptTx(ctx, tx, order) }))
		if err == nil || !isAuditRace(err) {
			break
		}
	}
	for _, p := range batch {
		p.err = err
	}
}

func acceptTx(ctx context.Context, tx pgx.Tx, order []*pending[*acceptOp]) error {
	b := &pgx.Batch{}
	for _, p := range order {
		b.Queue(acceptUpdate, p.req.used, p.req.realm, p.req.user, p.req.id, p.req.version)
	}
	br := tx.SendBatch(ctx, b)
	for _, p := range order {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			return err
		}
		p.req.replayed = tag.RowsAffected() == 0
	}
	if err := br.Close(); err != nil {
		return err
	}
	var prev *eventlog.Entry
	last, err := scanAudit(tx.QueryRow(ctx, `SELECT `+auditColumns+` FROM audit_log ORDER BY seq DESC LIMIT 1`))
	switch {
	case err == nil:
		prev = &last
	case !errors.Is(err, sql.ErrNoRows) && !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	rows := make([]any, 0, 8*len(order))
	for _, p := range order { // entries in the order the rows were locked
		if p.req.replayed {
			continue
		}
		out, err := eventlog.Next(prev, p.req.in, nil)
		if err != nil {
			return err
		}
		p.req.out = out
		prev = &p.req.out
		rows = append(rows, int64(out.Seq), out.Time.UnixMicro(), out.Kind, out.Actor, out.Subject, nullBytes(out.Data), out.Prev, out.Hash)
	}
	for len(rows) > 0 {
		n := 1
		for 2*n*8 <= len(rows) {
			n *= 2
		}
		if _, err := tx.Exec(ctx, auditInsert(n), rows[:8*n]...); err != nil {
			return err
		}
		rows = rows[8*n:]
	}
	return nil
}
