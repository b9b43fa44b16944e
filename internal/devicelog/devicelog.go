// Package devicelog is the device-local event log of every offline verifier
// (a site, a field device): append-only, hash-chained and signed with the
// device's own Ed25519 key, kept in a table of the device's SQLite database
// (opened with internal/sqlitedb). The chain and signatures are computed and
// checked by internal/eventlog; this package only stores them.
//
// Use it like this:
//
//	id, err := devicelog.LoadOrCreateIdentity(dataDir)  // once, at start
//	err = devicelog.Migrate(ctx, db)                     // creates the table
//	tx, err := db.BeginTx(ctx, nil)
//	... change the device's state in tx ...
//	entry, err := devicelog.Append(ctx, tx, id.Private, eventlog.Entry{Kind: "verify.ok", Subject: "tech-7"})
//	err = tx.Commit()                                     // decision, state and log entry commit together
//
// [Since] reads entries for shipping (sync, or a file), [Last] the newest one,
// [ReadFile] a whole log from a database file, and [Verify] re-checks the whole stored chain against the device's public
// key: a row removed, reordered or altered in the SQLite file is reported
// with its sequence number.
//
// What the chain cannot show by itself: entries cut off the END of the log
// leave a valid, shorter chain. The server detects that by comparing with
// the last sequence number it acknowledged; a device can only make it
// harder (the table refuses UPDATE and DELETE through SQLite triggers, which
// anyone with write access to the file can drop).
//
// Never put a secret (a code, a seed, a PIN) in an entry: logs are shipped
// and read by people.
package devicelog

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
)

// Table is the name of the table Migrate creates.
const Table = "device_log"

// MaxPage bounds how many entries one Since call returns.
const MaxPage = 10000

// Queryer is what the read functions need: a *sql.DB or a *sql.Tx.
type Queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Migrate creates the log table and its append-only triggers if they do not
// exist. It is idempotent.
func Migrate(ctx context.Context, db *sql.DB) error {
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS ` + Table + ` (
			seq     INTEGER PRIMARY KEY,
			time_us INTEGER NOT NULL,
			kind    TEXT    NOT NULL,
			actor   TEXT    NOT NULL DEFAULT '',
			subject TEXT    NOT NULL DEFAULT '',
			data    BLOB,
			prev    BLOB    NOT NULL,
			hash    BLOB    NOT NULL,
			sig     BLOB
		)`,
		`CREATE TRIGGER IF NOT EXISTS ` + Table + `_no_update BEFORE UPDATE ON ` + Table +
			` BEGIN SELECT RAISE(ABORT, 'device_log is append-only'); END`,
		`CREATE TRIGGER IF NOT EXISTS ` + Table + `_no_delete BEFORE DELETE ON ` + Table +
			` BEGIN SELECT RAISE(ABORT, 'device_log is append-only'); END`,
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("devicelog: creating table: %w", err)
		}
	}
	return nil
}

// Append adds e after the newest entry, inside the caller's transaction, so
// that a decision, the state change it causes and its log entry commit (or
// roll back) together. Seq, Prev, Hash and Sig are filled in (see
// eventlog.Next); Time must be set, from the caller's clock. key signs the entry and
// must be the device's private key. It returns the stored entry.
//
// The transaction must hold SQLite's write lock before reading the last
// entry (sqlitedb.Open begins transactions IMMEDIATE), so that two appenders
// never follow the same entry; the seq primary key refuses it if they did.
func Append(ctx context.Context, tx *sql.Tx, key ed25519.PrivateKey, e eventlog.Entry) (eventlog.Entry, error) {
	if len(key) != ed25519.PrivateKeySize {
		return eventlog.Entry{}, errors.New("devicelog: a device signing key is required")
	}
	last, err := Last(ctx, tx)
	if err != nil {
		return eventlog.Entry{}, err
	}
	n, err := eventlog.Next(last, e, key)
	if err != nil {
		return eventlog.Entry{}, fmt.Errorf("devicelog: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO `+Table+` (seq, time_us, kind, actor, subject, data, prev, hash, sig)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		int64(n.Seq), n.Time.UnixMicro(), n.Kind, n.Actor, n.Subject, []byte(n.Data), n.Prev, n.Hash, n.Sig)
	if err != nil {
		return eventlog.Entry{}, fmt.Errorf("devicelog: appending entry %d: %w", n.Seq, err)
	}
	return n, nil
}

const columns = `seq, time_us, kind, actor, subject, data, prev, hash, sig`

func scan(row interface{ Scan(...any) error }) (eventlog.Entry, error) {
	var e eventlog.Entry
	var seq, us int64
	var data []byte
	if err := row.Scan(&seq, &us, &e.Kind, &e.Actor, &e.Subject, &data, &e.Prev, &e.Hash, &e.Sig); err != nil {
		return e, err
	}
	if seq < 1 {
		return e, fmt.Errorf("devicelog: %w: stored entry has sequence number %d (the database was altered)", eventlog.ErrBroken, seq)
	}
	e.Seq = uint64(seq)
	e.Time = time.UnixMicro(us).UTC()
	if len(data) > 0 {
		e.Data = json.RawMessage(data)
	}
	return e, nil
}

// Last returns the newest entry, or nil when the log is empty.
func Last(ctx context.Context, q Queryer) (*eventlog.Entry, error) {
	e, err := scan(q.QueryRowContext(ctx, `SELECT `+columns+` FROM `+Table+` ORDER BY seq DESC LIMIT 1`))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("devicelog: reading the last entry: %w", err)
	}
	return &e, nil
}

// Since returns up to limit entries with Seq > afterSeq, in order (limit is
// capped at MaxPage; limit <= 0 means MaxPage). It does not verify them: the
// receiver runs eventlog.VerifyChain, and the device runs [Verify].
func Since(ctx context.Context, q Queryer, afterSeq uint64, limit int) ([]eventlog.Entry, error) {
	if limit <= 0 || limit > MaxPage {
		limit = MaxPage
	}
	if afterSeq > 1<<62 {
		return nil, nil
	}
	rows, err := q.QueryContext(ctx, `SELECT `+columns+` FROM `+Table+` WHERE seq > ? ORDER BY seq LIMIT ?`, int64(afterSeq), limit)
	if err != nil {
		return nil, fmt.Errorf("devicelog: reading entries: %w", err)
	}
	defer rows.Close()
	var out []eventlog.Entry
	for rows.Next() {
		e, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("devicelog: reading entries: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("devicelog: reading entries: %w", err)
	}
	return out, nil
}

// ReadFile returns the whole log kept in the SQLite database at path (a
// field device's field.db, a site's site.db), read beside whoever holds the
// database open: an auditor's (or a test's) view, without the device's own
// API. It does not verify the entries.
func ReadFile(ctx context.Context, path string) ([]eventlog.Entry, error) {
	db, err := sqlitedb.Open(path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var all []eventlog.Entry
	var after uint64
	for {
		page, err := Since(ctx, db, after, MaxPage)
		if err != nil || len(page) == 0 {
			return all, err
		}
		all, after = append(all, page...), page[len(page)-1].Seq
	}
}

// Verify re-checks every stored entry: sequence without gaps from 1, each
// link, each hash and each signature against pub. It returns 0 and nil when
// the whole log verifies, or the sequence number of the first bad entry
// (where the chain breaks) and an error wrapping eventlog.ErrBroken. Other
// errors (the database cannot be read) return 0.
func Verify(ctx context.Context, q Queryer, pub ed25519.PublicKey) (badSeq uint64, err error) {
	if len(pub) != ed25519.PublicKeySize {
		return 0, errors.New("devicelog: a device public key is required")
	}
	var after *eventlog.Entry
	for {
		var from uint64
		if after != nil {
			from = after.Seq
		}
		page, err := Since(ctx, q, from, 1000)
		if err != nil {
			return 0, err
		}
		if len(page) == 0 {
			return 0, nil
		}
		if i, err := eventlog.VerifyChain(after, page, pub); err != nil {
			return page[i].Seq, fmt.Errorf("devicelog: %w", err)
		}
		after = &page[len(page)-1]
	}
}
