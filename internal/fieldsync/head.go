package fieldsync

import (
	"crypto/subtle"
	"fmt"

	"github.com/outpost-auth/outpost/internal/store"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

// checkHead compares the chain head an upload states (Head, HeadHash) with
// its own entries and with the entry the server acknowledged. The gap,
// truncation and rewrite checks of applyTx see the entries an upload
// carries; this one also covers an upload without them: a store restored
// from the copy it had at the last acknowledgement and used since states
// the acknowledged sequence number with another hash. It returns the
// incident kind and the refusal, or "" and nil.
func checkHead(u *syncproto.Upload, d store.Device) (string, error) {
	if n := len(u.Entries); n > 0 && u.After+uint64(n) == u.Head &&
		subtle.ConstantTimeCompare(u.Entries[n-1].Hash, u.HeadHash) != 1 {
		return IncidentBrokenChain, fmt.Errorf("%w: the upload states a head hash that is not its last entry's", ErrBrokenChain)
	}
	if d.AckedSeq > 0 && u.Head == d.AckedSeq && subtle.ConstantTimeCompare(u.HeadHash, d.AckedHash) != 1 {
		return IncidentRewritten, fmt.Errorf("%w: the device's log ends at entry %d, but not with the entry the server acknowledged there "+
			"(was the device's store restored from an older copy, or copied?)", ErrRewritten, u.Head)
	}
	return "", nil
}
