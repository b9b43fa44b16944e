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
// the status. So the service remembers that a verification's write was
// refused, until one succeeds, and meanwhile answers an unknown user's
// failure with the same 503, not counting it (the known user's is not
// counted either). The tally of unknown users is still kept; its periodic
// write (FlushUnknown) is one of the writes that ends the state when the
// database takes writes again.
//
// What remains: in an outage, names tried before the first refused write
// are answered 401 as before, and the state is per process, as the
// unknown-user counts are (docs/server.md).
type writeOutage struct {
	refused atomic.Bool
}

// wrote notes the outcome of one of a verification's writes and returns
// err: refused (store.ErrUnavailable) starts the state; done, or answered
// by the database (a replay, a stale version: it took the statement) ends it.
func (o *writeOutage) wrote(err error) error {
	switch {
	case errors.Is(err, store.ErrUnavailable):
		o.refused.Store(true)
	case err == nil, errors.Is(err, store.ErrReplayed), errors.Is(err, store.ErrStale):
		o.refused.Store(false)
	}
	return err
}

// errWritesRefused answers an unknown user's failure while writes are refused.
var errWritesRefused = fmt.Errorf("%w: a verification's write was refused and none has succeeded since; the failure is answered as one whose write was refused", store.ErrUnavailable)
