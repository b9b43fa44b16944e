package offline

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/vouchwire"
)

// Errors of Vouch. A label that does not decode returns the device package's
// ErrMalformed, ErrChecksum or ErrVersion (test with errors.Is).
var (
	// ErrDuplicateVouch: this device already vouched for this serial with this key.
	ErrDuplicateVouch = errors.New("offline: this device already vouched for this device")
	// ErrBadVouch: the site or location is not well formed.
	ErrBadVouch = vouchwire.ErrInvalid
)

// VouchRequest is what field staff record when they install a device.
type VouchRequest struct {
	// Label is the payload of the device's QR label ("OPD:…"), as scanned.
	Label string
	// Site is where the device is installed (1 to 64 of A-Z a-z 0-9 . _ -).
	Site string
	// Location is "lat,lon" in decimal degrees, or empty.
	Location string
}

// Vouched is a recorded vouch.
type Vouched struct {
	Serial      string    `json:"serial"`
	Model       string    `json:"model"`
	KeyType     string    `json:"key_type"`
	Fingerprint string    `json:"fingerprint"`
	Site        string    `json:"site"`
	Location    string    `json:"location,omitempty"`
	Time        time.Time `json:"time"`
	// Seq is the vouch's entry in this device's log.
	Seq uint64 `json:"seq"`
}

// Vouch records, with no network, that the staff member holding this
// device vouches for the device whose label r carries: one signed entry of
// this device's log (kind "vouch": this device, the time of its clock, the
// site, the location and the label with its serial, model and key), which
// the next sync takes to the server's roster exactly once.
//
// The label is decoded and checked first (device.DecodeLabel), then the
// site and the location; a label this device already vouched for (the
// same serial and key) is refused with ErrDuplicateVouch. A refused vouch
// writes nothing. The clock's high-water mark applies as for every decision.
func (s *Store) Vouch(ctx context.Context, r VouchRequest) (Vouched, error) {
	v, err := vouchwire.New(r.Label, r.Site, r.Location)
	if err != nil {
		return Vouched{}, err
	}
	now := s.now()
	out := Vouched{Serial: v.Serial, Model: v.Model, KeyType: v.Parsed.KeyType().String(), Fingerprint: v.Fingerprint,
		Site: v.Site, Location: v.Location, Time: now}
	var refused error
	err = s.tx(ctx, func(tx *sql.Tx) error {
		refused = nil
		if err := s.clock(ctx, tx, now); err != nil {
			if errors.Is(err, ErrClockBack) {
				refused = err
				return nil
			}
			return err
		}
		dup, err := vouchedBefore(ctx, tx, v)
		if err != nil {
			return err
		}
		if dup != 0 {
			refused = fmt.Errorf("%w: serial %s with key %s (log entry %d); nothing was recorded", ErrDuplicateVouch, v.Serial, v.Fingerprint, dup)
			return nil
		}
		if err := s.log(ctx, tx, now, vouchwire.Kind, v.Serial, v.Data); err != nil {
			return err
		}
		last, err := devicelog.Last(ctx, tx)
		if err != nil {
			return err
		}
		out.Seq = last.Seq
		return nil
	})
	if err != nil {
		return Vouched{}, fmt.Errorf("offline: recording the vouch: %w", err)
	}
	if refused != nil {
		return Vouched{}, refused
	}
	return out, nil
}

// vouchedBefore returns the sequence number of an earlier vouch of this
// device's log for v's serial and key (0 for none).
func vouchedBefore(ctx context.Context, q devicelog.Queryer, v *vouchwire.Vouch) (uint64, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, data FROM `+devicelog.Table+` WHERE kind = ? AND subject = ? ORDER BY seq`, vouchwire.Kind, v.Serial)
	if err != nil {
		return 0, fmt.Errorf("%w: reading earlier vouches: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var data []byte
		if err := rows.Scan(&seq, &data); err != nil {
			return 0, fmt.Errorf("%w: reading earlier vouches: %v", ErrCorrupt, err)
		}
		old, err := vouchwire.Parse(data)
		if err == nil && subtle.ConstantTimeCompare(old.SPKI, v.SPKI) == 1 {
			return uint64(seq), nil
		}
	}
	return 0, rows.Err()
}
