package offline

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/syncproto"
)

// Sync, the device side (docs/sync.md). A sync round is:
//
//	up, info, err := s.PrepareUpload(ctx, offline.UploadOptions{})  // signed: state + log since the last ack
//	... carry up to the server (HTTP: [Store.Sync] does it all; or a file) ...
//	rep, err := s.ApplyResponse(ctx, answer)                        // server state, revocations, refills
//
// The device keeps, in its database beside the log, the last entry the
// server acknowledged and the serial of its last upload. Each upload gets a
// new serial, written before the upload leaves the device, so that no two
// different uploads ever share one (the server refuses a serial not above
// the last one it applied: a replayed upload). Every step on both sides is a
// maximum or is skipped when already done, so a round interrupted anywhere
// (a killed process, a lost answer) is simply run again.

// Errors of sync.
var (
	// ErrSyncMismatch: the server acknowledged a log entry this device does
	// not have as the server has it (the device's log was altered or
	// restored, or the answer is for another store of the same device).
	ErrSyncMismatch = errors.New("offline: the server's copy of this device's log differs from the log on this device")
	// ErrStaleResponse: the answer is for an upload older than one whose
	// answer was already applied; nothing was changed.
	ErrStaleResponse = errors.New("offline: this sync answer is older than one already applied")
	// ErrSyncRefused: the server refused the upload (its message says why).
	ErrSyncRefused = errors.New("offline: the server refused the sync")
)

const syncSchema = `CREATE TABLE IF NOT EXISTS field_sync (
	k TEXT PRIMARY KEY,
	v BLOB NOT NULL
)`

// SyncState is where this device stands with its server.
type SyncState struct {
	// Acked is the newest log entry the server acknowledged (0: none).
	Acked     uint64 `json:"acked"`
	AckedHash []byte `json:"acked_hash,omitempty"`
	// UploadSerial is the serial of the last upload made; ResponseSerial
	// that of the upload whose answer was applied last.
	UploadSerial   uint64 `json:"upload_serial"`
	ResponseSerial uint64 `json:"response_serial"`
	// LogHead is the newest entry of the device log.
	LogHead uint64 `json:"log_head"`
	// Server is the server URL remembered by 'outpost field sync --server'.
	Server string `json:"server,omitempty"`
	// CACert is the CA file remembered with it.
	CACert string `json:"cacert,omitempty"`
}

func (s *Store) syncTable(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, syncSchema); err != nil {
		return fmt.Errorf("%w: creating the sync table: %v", ErrCorrupt, err)
	}
	return nil
}

func readSyncMeta(ctx context.Context, q devicelog.Queryer) (map[string][]byte, error) {
	rows, err := q.QueryContext(ctx, `SELECT k, v FROM field_sync`)
	if err != nil {
		return nil, fmt.Errorf("%w: reading sync state: %v", ErrCorrupt, err)
	}
	defer rows.Close()
	m := map[string][]byte{}
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("%w: reading sync state: %v", ErrCorrupt, err)
		}
		m[k] = v
	}
	return m, rows.Err()
}

func metaUint(m map[string][]byte, k string) (uint64, error) {
	v, ok := m[k]
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(v), 10, 63)
	if err != nil {
		return 0, fmt.Errorf("%w: sync state %s unreadable", ErrCorrupt, k)
	}
	return n, nil
}

func setMeta(ctx context.Context, tx *sql.Tx, k string, v []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO field_sync (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v`, k, v)
	return err
}

func u64(n uint64) []byte { return []byte(strconv.FormatUint(n, 10)) }

// SyncState returns where this device stands with its server.
func (s *Store) SyncState(ctx context.Context) (SyncState, error) {
	if err := s.syncTable(ctx); err != nil {
		return SyncState{}, err
	}
	m, err := readSyncMeta(ctx, s.db)
	if err != nil {
		return SyncState{}, err
	}
	var st SyncState
	if st.Acked, err = metaUint(m, "acked_seq"); err != nil {
		return st, err
	}
	if st.UploadSerial, err = metaUint(m, "upload_serial"); err != nil {
		return st, err
	}
	if st.ResponseSerial, err = metaUint(m, "response_serial"); err != nil {
		return st, err
	}
	st.AckedHash, st.Server, st.CACert = m["acked_hash"], string(m["server"]), string(m["cacert"])
	last, err := devicelog.Last(ctx, s.db)
	if err != nil {
		return st, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if last != nil {
		st.LogHead = last.Seq
	}
	return st, nil
}

// RememberServer stores the server URL (and CA file) later syncs use by default.
func (s *Store) RememberServer(ctx context.Context, url, cacert string) error {
	if err := s.syncTable(ctx); err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := setMeta(ctx, tx, "server", []byte(url)); err != nil {
			return err
		}
		return setMeta(ctx, tx, "cacert", []byte(cacert))
	})
}

// UploadOptions tune PrepareUpload.
type UploadOptions struct {
	// Validity is how long the server accepts the upload: default 15
	// minutes, for HTTP; a file carried by hand wants longer ('outpost
	// field export-sync' uses 14 days; at most 90).
	Validity time.Duration
	// MaxEntries bounds the log entries of this upload (default and
	// maximum 10,000); the rest follow in later uploads.
	MaxEntries int
}

// UploadInfo describes an upload.
type UploadInfo struct {
	Serial uint64 `json:"serial"`
	// From and To are the log entries it carries (To < From: none).
	From    uint64 `json:"from"`
	To      uint64 `json:"to"`
	Entries int    `json:"entries"`
	Head    uint64 `json:"head"`
	Tokens  int    `json:"tokens"`
	// More: entries after To remain for another upload.
	More     bool      `json:"more"`
	NotAfter time.Time `json:"not_after"`
}

// PrepareUpload makes the next signed upload: the state of every token and
// the log entries after the last one the server acknowledged (as many as
// fit: see UploadInfo.More). It takes a new serial, recorded before it
// returns, and reads state and log in the same transaction, so that the
// state is never older than the entries.
func (s *Store) PrepareUpload(ctx context.Context, opts UploadOptions) ([]byte, UploadInfo, error) {
	if err := s.syncTable(ctx); err != nil {
		return nil, UploadInfo{}, err
	}
	if err := s.courierTables(ctx); err != nil {
		return nil, UploadInfo{}, err
	}
	validity := opts.Validity
	if validity <= 0 {
		validity = syncproto.OnlineValidity
	}
	if validity > syncproto.MaxValidity {
		return nil, UploadInfo{}, fmt.Errorf("offline: an upload is valid for at most %v", syncproto.MaxValidity)
	}
	maxEntries := opts.MaxEntries
	if maxEntries <= 0 || maxEntries > syncproto.MaxEntries {
		maxEntries = syncproto.MaxEntries
	}
	now := s.now()
	var up syncproto.Upload
	var serial uint64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		m, err := readSyncMeta(ctx, tx)
		if err != nil {
			return err
		}
		acked, err := metaUint(m, "acked_seq")
		if err != nil {
			return err
		}
		prev, err := metaUint(m, "upload_serial")
		if err != nil {
			return err
		}
		serial = prev + 1
		if err := setMeta(ctx, tx, "upload_serial", u64(serial)); err != nil {
			return err
		}
		entries, err := devicelog.Since(ctx, tx, acked, maxEntries)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		size := 0
		for i := range entries {
			b, err := json.Marshal(&entries[i])
			if err != nil {
				return err
			}
			if size += len(b); size > syncproto.TargetEntryBytes && i > 0 {
				entries = entries[:i]
				break
			}
		}
		last, err := devicelog.Last(ctx, tx)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		up = syncproto.Upload{Device: s.device, After: acked, Entries: entries, Tokens: []syncproto.TokenState{}}
		if last != nil {
			up.Head, up.HeadHash = last.Seq, last.Hash
		}
		if up.Head < acked {
			return fmt.Errorf("%w: the log ends at entry %d but the server acknowledged %d", ErrCorrupt, up.Head, acked)
		}
		if up.Entries == nil {
			up.Entries = []eventlog.Entry{}
		}
		up.Tokens, err = s.tokenStates(ctx, tx, now)
		if err != nil {
			return err
		}
		up.Receipts, err = pendingReceipts(ctx, tx, up.After+uint64(len(up.Entries)))
		return err
	})
	if err != nil {
		return nil, UploadInfo{}, err
	}
	signer := &keys.Signer{Private: s.id.Private, Public: s.id.Public, KeyID: s.id.KeyID}
	na := now.Add(validity)
	data, err := artifact.Sign(signer, artifact.Header{Type: syncproto.UploadType, Version: syncproto.UploadVersion, Subject: s.device,
		Serial: serial, IssuedAt: now, NotBefore: now.Add(-time.Minute), NotAfter: na}, up)
	if err != nil {
		return nil, UploadInfo{}, err
	}
	to := up.After + uint64(len(up.Entries))
	info := UploadInfo{Serial: serial, From: up.After + 1, To: to, Entries: len(up.Entries), Head: up.Head, Tokens: len(up.Tokens),
		More: to < up.Head, NotAfter: na.UTC()}
	return data, info, nil
}

// tokenStates reads every token's state data block and bundle, inside tx.
func (s *Store) tokenStates(ctx context.Context, tx *sql.Tx, now time.Time) ([]syncproto.TokenState, error) {
	rows, err := tx.QueryContext(ctx, `SELECT realm, usr, token FROM field_tokens ORDER BY realm, usr, token`)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	var ks []TokenKey
	for rows.Next() {
		var k TokenKey
		if err := rows.Scan(&k.Realm, &k.User, &k.Token); err != nil {
			rows.Close()
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		ks = append(ks, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(ks) > syncproto.MaxTokens {
		return nil, fmt.Errorf("offline: %d tokens on this device, a sync carries at most %d", len(ks), syncproto.MaxTokens)
	}
	out := make([]syncproto.TokenState, 0, len(ks))
	for _, k := range ks {
		st, err := s.readState(ctx, tx, k)
		if err != nil {
			return nil, err
		}
		ts := syncproto.TokenState{Realm: k.Realm, User: k.User, Token: k.Token, LastUsed: st.lastUsed, Failures: st.failures, Wiped: st.wiped != 0}
		b, err := s.loadBundle(ctx, tx, k)
		if err != nil {
			return nil, err
		}
		if b != nil {
			ts.Type, ts.Serial, ts.First, ts.Last = b.OTP.Type, b.Serial, b.First, b.Last()
			ts.Remaining, ts.PIN, ts.Secrets, ts.NotAfter = s.remaining(b, st, now), b.PIN, len(b.Secrets), b.NotAfter.UTC()
		}
		out = append(out, ts)
	}
	return out, nil
}

// Conflict is a code this device accepted that was also accepted online or
// on another device; the server recorded it as a replay incident.
type Conflict struct {
	TokenKey
	Counter uint64 `json:"counter"`
	// DeviceSeq is this device's log entry that accepted it.
	DeviceSeq uint64 `json:"device_seq"`
	// Other is "online" or "device:ID".
	Other string `json:"other"`
}

// SyncReport is what applying a server's answer did.
type SyncReport struct {
	// Uploads counts the rounds of Sync; Sent the log entries sent.
	Uploads int    `json:"uploads"`
	Sent    int    `json:"sent"`
	Acked   uint64 `json:"acked"`
	// Advanced: tokens whose last used counter moved up to the server's.
	Advanced []TokenKey `json:"advanced"`
	// Revoked: tokens whose bundle was deleted because the server disabled
	// or deleted the token.
	Revoked []TokenKey `json:"revoked"`
	// Imported: refill bundles imported.
	Imported []ImportResult `json:"imported"`
	// NoRefill: tokens that ran low and why the server did not refill them.
	NoRefill []string `json:"no_refill,omitempty"`
	// Conflicts the server found.
	Conflicts []Conflict `json:"conflicts"`
	// Problems: refills that could not be imported.
	Problems []string `json:"problems,omitempty"`
	// Pending: refills the server is still computing, in its latest
	// answer; a later sync collects them (see SyncClient.RefillWait).
	Pending []PendingRefill `json:"pending,omitempty"`
	// Ignored: claims of this device the server ignored, each recorded as
	// an incident (a bundle the server never issued to this device, or a
	// counter outside it).
	Ignored []string `json:"ignored,omitempty"`
	// Manifest: the route manifest installed (courier devices).
	Manifest *ManifestInfo `json:"manifest,omitempty"`
	// Receipts: the server's answers to this device's delivery receipts.
	Receipts []ReceiptAnswer `json:"receipts,omitempty"`
}

// PendingRefill is a refill the server is computing for a token.
type PendingRefill struct {
	TokenKey
	ID string `json:"id"`
	// RetryAfter is when the server suggests syncing again.
	RetryAfter time.Duration `json:"retry_after"`
}

func (r *SyncReport) merge(o SyncReport) {
	r.Acked = max(r.Acked, o.Acked)
	r.Advanced = append(r.Advanced, o.Advanced...)
	r.Revoked = append(r.Revoked, o.Revoked...)
	r.Imported = append(r.Imported, o.Imported...)
	r.NoRefill = append(r.NoRefill, o.NoRefill...)
	r.Conflicts = append(r.Conflicts, o.Conflicts...)
	r.Problems = append(r.Problems, o.Problems...)
	r.Ignored = append(r.Ignored, o.Ignored...)
	r.Receipts = append(r.Receipts, o.Receipts...)
	if o.Manifest != nil {
		r.Manifest = o.Manifest
	}
	r.Pending = o.Pending // the latest answer's: earlier ones may have been collected since
}

// ApplyResponse applies a server's signed answer to an upload of this
// device: it checks the signature (a pinned server key), the device, that
// it answers an upload this store made and is not older than one already
// applied, and that the entry the server acknowledges is this device's own;
// then raises each token's last used counter to the server's (AdvanceUsed:
// codes used online are refused here from now on), deletes the bundles of
// tokens the server disabled or deleted (issued before the answer), records
// the acknowledgement, and imports refill bundles.
func (s *Store) ApplyResponse(ctx context.Context, data []byte) (SyncReport, error) {
	rep := SyncReport{Advanced: []TokenKey{}, Revoked: []TokenKey{}, Imported: []ImportResult{}, Conflicts: []Conflict{}}
	if err := s.syncTable(ctx); err != nil {
		return rep, err
	}
	now := s.now()
	h, body, err := artifact.Verify(data, artifact.Keys(s.servers), artifact.Expect{Type: syncproto.ResponseType, Subject: s.device,
		Now: now, Skew: s.policy.ClockTolerance, MaxSize: syncproto.MaxResponseSize})
	if err != nil {
		return rep, fmt.Errorf("offline: sync answer refused: %w", err)
	}
	resp, err := syncproto.DecodeResponse(body)
	if err != nil {
		return rep, fmt.Errorf("offline: sync answer refused: %w", err)
	}
	if resp.Device != s.device || resp.UploadSerial != h.Serial {
		return rep, fmt.Errorf("offline: sync answer refused: it is for device %q, upload %d", resp.Device, resp.UploadSerial)
	}
	st, err := s.SyncState(ctx)
	if err != nil {
		return rep, err
	}
	switch {
	case h.Serial > st.UploadSerial:
		return rep, fmt.Errorf("%w: the answer is to upload %d, this store made %d uploads (was it restored from a backup?)", ErrSyncMismatch, h.Serial, st.UploadSerial)
	case h.Serial <= st.ResponseSerial:
		return rep, fmt.Errorf("%w: it answers upload %d, the answer to upload %d was applied", ErrStaleResponse, h.Serial, st.ResponseSerial)
	case resp.Acked > st.LogHead:
		return rep, fmt.Errorf("%w: the server acknowledges entry %d, this log ends at %d", ErrSyncMismatch, resp.Acked, st.LogHead)
	}
	if resp.Acked > 0 {
		holds, err := holdsEntry(ctx, s.db, resp.Acked, resp.AckedHash)
		if err != nil {
			return rep, err
		}
		if !holds {
			return rep, fmt.Errorf("%w: entry %d has another hash on the server", ErrSyncMismatch, resp.Acked)
		}
	}
	for _, t := range resp.Tokens {
		k := TokenKey{t.Realm, t.User, t.Token}
		switch t.Status {
		case syncproto.StatusDisabled, syncproto.StatusDeleted:
			done, err := s.revoke(ctx, k, t.Status, h.IssuedAt)
			if err != nil {
				return rep, err
			}
			if done {
				rep.Revoked = append(rep.Revoked, k)
			}
		}
		if t.LastUsed >= 0 && t.Status != syncproto.StatusForeign {
			changed, err := s.AdvanceUsed(ctx, k, uint64(t.LastUsed), "sync")
			if err != nil {
				return rep, err
			}
			if changed {
				rep.Advanced = append(rep.Advanced, k)
			}
		}
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		if resp.Acked > st.Acked {
			if err := setMeta(ctx, tx, "acked_seq", u64(resp.Acked)); err != nil {
				return err
			}
			if err := setMeta(ctx, tx, "acked_hash", resp.AckedHash); err != nil {
				return err
			}
		}
		return setMeta(ctx, tx, "response_serial", u64(h.Serial))
	})
	if err != nil {
		return rep, fmt.Errorf("offline: recording the sync: %w", err)
	}
	rep.Acked = max(resp.Acked, st.Acked)
	for _, c := range resp.Conflicts {
		rep.Conflicts = append(rep.Conflicts, Conflict{TokenKey: TokenKey{c.Realm, c.User, c.Token}, Counter: c.Counter, DeviceSeq: c.DeviceSeq, Other: c.Other})
	}
	for _, n := range resp.NoRefill {
		rep.NoRefill = append(rep.NoRefill, TokenKey{n.Realm, n.User, n.Token}.String()+": "+n.Reason)
	}
	for _, p := range resp.Pending {
		rep.Pending = append(rep.Pending, PendingRefill{TokenKey: TokenKey{p.Realm, p.User, p.Token}, ID: p.ID, RetryAfter: time.Duration(p.RetryAfter) * time.Second})
	}
	for _, c := range resp.Ignored {
		rep.Ignored = append(rep.Ignored, fmt.Sprintf("%s: %d claim(s) ignored (%s): %s", TokenKey{c.Realm, c.User, c.Token}, c.Claims, c.Incident, c.Reason))
	}
	if err := s.applyCourier(ctx, resp.Manifest, resp.Receipts, &rep); err != nil {
		return rep, err
	}
	for _, f := range resp.Refills {
		res, err := s.Import(ctx, f.Bundle)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("refill of %s: %v", TokenKey{f.Realm, f.User, f.Token}, err))
			continue
		}
		rep.Imported = append(rep.Imported, res)
	}
	return rep, nil
}

// revoke deletes k's bundle when it was issued before the server's answer
// (a bundle imported since is the server's newer decision) and marks the
// token wiped, so that it verifies nothing until a new bundle is imported.
func (s *Store) revoke(ctx context.Context, k TokenKey, why string, answered time.Time) (bool, error) {
	now := s.now()
	done := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		b, err := s.loadBundle(ctx, tx, k)
		if err != nil || b == nil || !b.IssuedAt.Before(answered) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM field_bundles WHERE realm = ? AND usr = ? AND token = ?`, k.Realm, k.User, k.Token); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE field_tokens SET wiped_us = ? WHERE realm = ? AND usr = ? AND token = ?`,
			now.UnixMicro(), k.Realm, k.User, k.Token); err != nil {
			return err
		}
		done = true
		return s.log(ctx, tx, now, "revoke", k.User, map[string]any{"realm": k.Realm, "token": k.Token, "serial": b.Serial, "reason": "token_" + why})
	})
	return done, err
}

// rewindAck sets the acknowledged entry back to seq (a server that lost
// entries, e.g. restored from a backup, asks for them again).
func (s *Store) rewindAck(ctx context.Context, seq uint64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		hash := []byte{}
		if seq > 0 {
			es, err := devicelog.Since(ctx, tx, seq-1, 1)
			if err != nil || len(es) != 1 {
				return fmt.Errorf("%w: the server asks for entries after %d, which this log does not have", ErrSyncMismatch, seq)
			}
			hash = es[0].Hash
		}
		if err := setMeta(ctx, tx, "acked_seq", u64(seq)); err != nil {
			return err
		}
		return setMeta(ctx, tx, "acked_hash", hash)
	})
}
