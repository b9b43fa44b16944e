package site

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/devicelog"
	"github.com/outpost-auth/outpost/internal/ident"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/sitewire"
)

// UpdateResult says what Update installed.
type UpdateResult struct {
	// Type is TypePackage or TypeRevocationList.
	Type string `json:"type"`
	// Serial is the serial of the file installed.
	Serial uint64 `json:"serial"`
	// Epochs are the epochs now installed (packages only).
	Epochs []Epoch `json:"epochs,omitempty"`
	// RevocationSerial and Revoked describe the revocation list now in force.
	RevocationSerial uint64 `json:"revocation_serial"`
	Revoked          int    `json:"revoked"`
	LogSeq           uint64 `json:"log_seq"`
}

// Update installs a newer revocation list or provisioning package (the file
// says which). A revocation list must be for this site's scope and have a
// higher serial than the installed one: an older or equal list is refused
// with ErrNotNewer and never replaces a newer one. A package must be bound
// to this site, for its scope, not over, newer (serial) than the installed
// one, and decryptable: passphrase is called only for packages. A package
// replaces the epochs, keys and policy; the revocation list inside it is
// installed only if it is newer than the site's. Refused files change
// nothing and are not logged; an installed one is logged.
func (s *Site) Update(ctx context.Context, data []byte, passphrase PassphraseFunc) (UpdateResult, error) {
	c, err := loadConfig(ctx, s.db)
	if err != nil {
		return UpdateResult{}, err
	}
	ring := artifact.Keys{c.serverKey}
	h, _, err := artifact.Verify(data, ring, artifact.Expect{MaxSize: MaxPackageSize})
	if err != nil {
		return UpdateResult{}, fmt.Errorf("%w: %w", ErrBadPackage, err)
	}
	now := s.now()
	switch h.Type {
	case TypeRevocationList:
		l, err := sitewire.ReadRevocationList(data, ring, c.scope)
		if err != nil {
			return UpdateResult{}, err
		}
		var res UpdateResult
		err = s.inTx(ctx, func(tx *sql.Tx) error {
			c, err := loadConfig(ctx, tx)
			if err != nil {
				return err
			}
			if l.Serial <= c.revSerial {
				return notNewer("revocation list", l.Serial, c.revSerial)
			}
			if err := installRevocation(ctx, tx, l); err != nil {
				return err
			}
			e, err := s.log(ctx, tx, now, KindRevocation, c.siteID, "", map[string]any{
				"serial": l.Serial, "previous_serial": c.revSerial, "revoked": len(l.Revoked)})
			res = UpdateResult{Type: TypeRevocationList, Serial: l.Serial, RevocationSerial: l.Serial, Revoked: len(l.Revoked), LogSeq: e.Seq}
			return err
		})
		return res, err
	case TypePackage:
		p, err := readPackage(data, ring, c.siteID, now)
		if err != nil {
			return UpdateResult{}, err
		}
		if p.Scope != c.scope {
			return UpdateResult{}, fmt.Errorf("%w: the package is for scope %q and this site is in scope %q; a site changes scope only by a new 'outpost site init'",
				ErrBadPackage, p.Scope, c.scope)
		}
		if p.Header.Serial <= c.pkgSerial {
			return UpdateResult{}, notNewer("package", p.Header.Serial, c.pkgSerial)
		}
		if passphrase == nil {
			return UpdateResult{}, errors.New("site: a passphrase is needed to install a package")
		}
		pass, err := passphrase()
		if err != nil {
			return UpdateResult{}, err
		}
		scopeKeys, err := p.OpenKeys(pass)
		if err != nil {
			return UpdateResult{}, err
		}
		rawPolicy, err := MarshalPolicy(p.Policy)
		if err != nil {
			return UpdateResult{}, err
		}
		var res UpdateResult
		err = s.inTx(ctx, func(tx *sql.Tx) error {
			c, err := loadConfig(ctx, tx)
			if err != nil {
				return err
			}
			if p.Header.Serial <= c.pkgSerial { // re-checked under the write lock
				return notNewer("package", p.Header.Serial, c.pkgSerial)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE site_config SET policy = ?, package_serial = ?, installed_us = ? WHERE id = 1`,
				rawPolicy, int64(p.Header.Serial), now.UnixMicro()); err != nil {
				return err
			}
			if err := installEpochs(ctx, tx, p.Epochs, scopeKeys); err != nil {
				return err
			}
			res = UpdateResult{Type: TypePackage, Serial: p.Header.Serial, Epochs: p.Epochs, RevocationSerial: c.revSerial}
			if p.Revocation.Serial > c.revSerial {
				if err := installRevocation(ctx, tx, p.Revocation); err != nil {
					return err
				}
				res.RevocationSerial = p.Revocation.Serial
			}
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM site_revoked`).Scan(&res.Revoked); err != nil {
				return err
			}
			e, err := s.log(ctx, tx, now, KindPackage, c.siteID, "", map[string]any{
				"serial": p.Header.Serial, "previous_serial": c.pkgSerial, "epochs": epochNumbers(p.Epochs),
				"revocation_serial": res.RevocationSerial})
			res.LogSeq = e.Seq
			return err
		})
		return res, err
	default:
		return UpdateResult{}, fmt.Errorf("%w: this is a %q; 'outpost site update' takes a site package or a revocation list", ErrBadPackage, ident.Clip(h.Type))
	}
}

func notNewer(what string, got, have uint64) error {
	if got == have {
		return fmt.Errorf("%w: this %s (serial %d) is already installed", ErrNotNewer, what, got)
	}
	return fmt.Errorf("%w: this %s has serial %d, older than the installed serial %d; an older %s never replaces a newer one",
		ErrNotNewer, what, got, have, what)
}

// Status is a site's state, without any secret.
type Status struct {
	Site             string    `json:"site"`
	Scope            string    `json:"scope"`
	ServerKey        string    `json:"server_key"`
	DeviceKey        string    `json:"device_key"`
	Policy           Policy    `json:"-"`
	Epochs           []Epoch   `json:"epochs"`
	PackageSerial    uint64    `json:"package_serial"`
	RevocationSerial uint64    `json:"revocation_serial"`
	Revoked          int       `json:"revoked"`
	Technicians      int       `json:"technicians_seen"`
	ClockHighWater   time.Time `json:"clock_high_water"`
	Installed        time.Time `json:"installed"`
	LogEntries       uint64    `json:"log_entries"`
	// AcceptsUntil is the last moment any installed epoch's key is accepted.
	AcceptsUntil time.Time `json:"accepts_until"`
}

// Status reports the site's installed package, list and clock.
func (s *Site) Status(ctx context.Context) (Status, error) {
	c, err := loadConfig(ctx, s.db)
	if err != nil {
		return Status{}, err
	}
	eks, err := loadEpochs(ctx, s.db)
	if err != nil {
		return Status{}, err
	}
	st := Status{Site: c.siteID, Scope: c.scope, ServerKey: keys.KeyID(c.serverKey), DeviceKey: s.id.KeyID, Policy: c.policy,
		PackageSerial: c.pkgSerial, RevocationSerial: c.revSerial, ClockHighWater: c.clockHWM, Installed: c.installed}
	for _, ek := range eks {
		st.Epochs = append(st.Epochs, ek.Epoch)
		st.AcceptsUntil = ek.End.Add(c.policy.Overlap)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM site_revoked`).Scan(&st.Revoked); err != nil {
		return Status{}, err
	}
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM site_techs`).Scan(&st.Technicians); err != nil {
		return Status{}, err
	}
	last, err := devicelog.Last(ctx, s.db)
	if err != nil {
		return Status{}, err
	}
	if last != nil {
		st.LogEntries = last.Seq
	}
	return st, nil
}

// LogEntry is one entry of the site's signed, hash-chained log: a
// decision (Kind, one of the Kind constants; Subject, the technician) and
// its details (Data, JSON, never a code or a key), chained to the entry
// before it (Prev, Hash) and signed with the site's log key (Sig).
type LogEntry struct {
	Seq     uint64          `json:"seq"`
	Time    time.Time       `json:"time"`
	Kind    string          `json:"kind"`
	Actor   string          `json:"actor,omitempty"`
	Subject string          `json:"subject,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Prev    []byte          `json:"prev"`
	Hash    []byte          `json:"hash"`
	Sig     []byte          `json:"sig,omitempty"`
}

// Log returns up to limit log entries after sequence number after, for
// reading or shipping to the server (limit <= 0: as many as one read
// returns, 10,000).
func (s *Site) Log(ctx context.Context, after uint64, limit int) ([]LogEntry, error) {
	es, err := devicelog.Since(ctx, s.db, after, limit)
	out := make([]LogEntry, len(es))
	for i, e := range es {
		out[i] = LogEntry(e)
	}
	return out, err
}

// VerifyLog re-checks the whole log against the site's key; see devicelog.Verify.
func (s *Site) VerifyLog(ctx context.Context) (badSeq uint64, err error) {
	return devicelog.Verify(ctx, s.db, s.id.Public)
}
