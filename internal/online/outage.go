package online

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/outpost-auth/outpost/internal/store"
)

// A known user's wrong code is answered once its failure is recorded; an
// unknown user's writes nothing (unknownUser). While PostgreSQL answers
// reads and refuses writes — a failover onto a standby, a full disk — the
// first is answered 503 (store.ErrUnavailable: its failure could not be
// written) and the second would be 401: which users exist would show in
// the status. So the service remembers that one of its writes was refused,
// until one succeeds. Meanwhile an unknown user's failure writes too, as a
// known user's does: the unknown-user tally, at once (FlushUnknown). If
// the database refuses it, the answer is the same 503 and nothing is
// counted; if it takes it, the state ends and the answer is 401. So the
// state ends with the first write after the outage, and a state set by a
// passing cause (one lost connection) costs one tally entry.
//
// What remains (docs/server.md): names tried before the outage's first
// refused write are answered 401, each process has its own state, and on a
// full disk a known user's failure count may commit while its audit entry
// does not, so that known users reach the lockout (429) and unknown users
// do not: the count and its entry are two writes, not one transaction.
type writeOutage struct {
	refused atomic.Bool
}

// wrote notes the outcome of one of a verification's writes and returns
// err: refused (store.ErrUnavailable) starts the state, done ends it. A
// refusal answered by the database (a replay, a stale version) says
// nothing: on a full disk an UPDATE that changes no row still commits.
func (o *writeOutage) wrote(err error) error {
	switch {
	case errors.Is(err, store.ErrUnavailable):
		o.refused.Store(true)
	case err == nil:
		o.refused.Store(false)
	}
	return err
}

// errWritesRefused answers an unknown user's failure while writes are refused.
var errWritesRefused = fmt.Errorf("%w: a verification's write was refused and none has succeeded since; the failure is answered as one whose write was refused", store.ErrUnavailable)
