package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// Audit retention (docs/storage.md). Like DeliveryStore, an interface of its
// own so that the core contract stays small: every store Open returns also
// implements AuditPruner,
//
//	ap, ok := st.(store.AuditPruner)
//
// and internal/auditcheck (which exports the entries to signed segment files
// and verifies them back first) is its one caller. The store knows nothing
// of segments: it deletes a prefix of the log on the condition that the
// entry ending it is still the one the caller exported.
//
// No table is needed for the chain's anchor: the first entry kept holds it
// (its Prev is the hash of the last entry pruned, its Seq that entry's plus
// one), and the audit.prune entry appended in the same transaction records
// it again inside the chain, so that a verifier can tell a prune from rows
// deleted behind the server's back.

// AuditPruner deletes the oldest entries of the audit log.
type AuditPruner interface {
	// PruneAudit appends e to the audit log and deletes every entry with
	// Seq <= through, in one transaction, provided the entry at through is
	// still in the log with hash hash. e is appended before the delete, so
	// the log never becomes empty and the next entry still chains on. It
	// returns e as stored. ErrNotFound when no entry has seq through
	// (already pruned, or not written yet); ErrInvalid when its hash
	// differs (the log changed since the caller read it: nothing is
	// deleted) or e's fields are out of bounds.
	PruneAudit(ctx context.Context, through uint64, hash []byte, e eventlog.Entry) (eventlog.Entry, error)
}

func (s *sqlStore) PruneAudit(ctx context.Context, through uint64, hash []byte, e eventlog.Entry) (eventlog.Entry, error) {
	if through == 0 || through > 1<<63-1 {
		return eventlog.Entry{}, invalid("sequence number %d out of range", through)
	}
	var out eventlog.Entry
	err := inTx(ctx, s.e, isAuditRace, func(q querier) error {
		var got []byte
		switch err := q.queryRow(ctx, `SELECT hash FROM audit_log WHERE seq = $1`, int64(through)).Scan(&got); {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("%w: audit entry %d is not in the log (pruned already, or not written yet)", ErrNotFound, through)
		case err != nil:
			return err
		case subtle.ConstantTimeCompare(got, hash) != 1:
			return invalid("audit entry %d differs from the one exported: the log changed since it was read; nothing was pruned", through)
		}
		stored, err := appendAuditIn(ctx, s, q, []eventlog.Entry{e})
		if err != nil {
			return err
		}
		out = stored[0]
		_, err = q.exec(ctx, `DELETE FROM audit_log WHERE seq <= $1`, int64(through))
		return err
	})
	if err != nil {
		return eventlog.Entry{}, fmt.Errorf("store: pruning the audit log through %d: %w", through, err)
	}
	return out, nil
}
