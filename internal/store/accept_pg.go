package store

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// PostgreSQL group commit of acceptances. Each batch is one transaction in
// two round trips: BEGIN, the conditional UPDATEs of every acceptance
// queued meanwhile and the read of the audit head go to the server
// pipelined in one (pgx.Batch), the UPDATEs in a fixed order of (realm,
// user, token) so that two replicas' batches always lock rows in the same
// order and cannot deadlock; then the accepted ones' audit entries, in
// multi-row INSERTs, and COMMIT in the other. A replica racing
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
		err = classify(s.e, lost(acceptTx(ctx, pe.pool, order)))
		if err == nil || !isAuditRace(err) {
			break
		}
	}
	for _, p := range batch {
		p.err = err
	}
}

// acceptTx is one attempt at a batch in two round trips: BEGIN, the
// conditional UPDATEs and the read of the audit head pipelined in one; the
// audit INSERTs and COMMIT in the other. (pgx.BeginFunc would spend a round
// trip each on BEGIN, the head and COMMIT: at one client, most of the
// acceptance's time.) On any error the transaction is rolled back before
// the connection goes back to the pool.
func acceptTx(ctx context.Context, pool *pgxpool.Pool, order []*pending[*acceptOp]) (err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release() // a connection still in a transaction is closed, not reused
	defer func() {
		if err != nil {
			_, _ = conn.Exec(ctx, "ROLLBACK")
		}
	}()
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	for _, p := range order {
		b.Queue(acceptUpdate, p.req.used, p.req.realm, p.req.user, p.req.id, p.req.version)
	}
	b.Queue(headQuery)
	br := conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return err
	}
	for _, p := range order {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			return err
		}
		p.req.replayed = tag.RowsAffected() == 0
	}
	var prev *eventlog.Entry
	var head eventlog.Entry
	var seq int64
	switch err := br.QueryRow().Scan(&seq, &head.Hash); {
	case err == nil:
		head.Seq = uint64(seq)
		prev = &head
	case !errors.Is(err, pgx.ErrNoRows):
		br.Close()
		return err
	}
	if err := br.Close(); err != nil {
		return err
	}
	b = &pgx.Batch{}
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
		b.Queue(auditInsert(n), rows[:8*n]...)
		rows = rows[8*n:]
	}
	b.Queue("COMMIT")
	return conn.SendBatch(ctx, b).Close()
}
