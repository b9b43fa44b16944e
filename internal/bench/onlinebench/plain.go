package onlinebench

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"
	pqotp "github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"

	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
)

// plainVerifier is the benchmark's hand-written verifier ("plain" in the
// results; see the package comment for its contract): what a careful
// engineer would write without Outpost, on its own loopback listener.
type plainVerifier struct {
	hs    *http.Server
	url   string // of its POST endpoint
	key   string // the one API key it accepts
	users map[string]*plainUser
	db    plainDB
	ahead uint64 // look-ahead above the last counter
}

// plainUser is a user's seed (base32, as pquerna/otp takes it) and the
// highest counter this process saw accepted: a hint for where to start
// looking, not the once-only rule (the UPDATE is).
type plainUser struct {
	secret string
	last   atomic.Uint64
}

// plainDB is the plain verifier's one table on either engine.
type plainDB interface {
	// advance sets user's counter to c if it is below c, reporting whether
	// it did: the conditional UPDATE that makes a code usable once.
	advance(ctx context.Context, user string, c uint64) (bool, error)
	// written reads the engine's count of bytes written (see writeMeter).
	written(ctx context.Context) (int64, bool)
	close()
}

// plainMaxBody bounds the plain verifier's request body.
const plainMaxBody = 4 << 10

var plainOpts = hotp.ValidateOpts{Digits: pqotp.DigitsSix, Algorithm: pqotp.AlgorithmSHA1}

// startPlain creates plain_tokens in the database dsn names (a SQLite path
// or a PostgreSQL DSN) with a row at counter 0 for each of users, and
// serves the plain verifier on 127.0.0.1 with a look-ahead of ahead
// counters.
func startPlain(ctx context.Context, dsn string, users []User, ahead int) (*plainVerifier, error) {
	var db plainDB
	var err error
	ids := make([]string, len(users))
	for i, u := range users {
		ids[i] = u.ID
	}
	if bench.IsPostgres(dsn) {
		db, err = openPlainPG(ctx, dsn, ids)
	} else {
		db, err = openPlainSQLite(ctx, dsn, ids)
	}
	if err != nil {
		return nil, fmt.Errorf("plain verifier: %w", err)
	}
	var k [32]byte
	_, _ = rand.Read(k[:])
	pv := &plainVerifier{key: hex.EncodeToString(k[:]), users: make(map[string]*plainUser, len(users)), db: db, ahead: uint64(ahead)}
	for _, u := range users {
		pv.users[u.ID] = &plainUser{secret: base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(u.Seed)}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		db.close()
		return nil, err
	}
	pv.hs = &http.Server{Handler: pv}
	go pv.hs.Serve(ln)
	pv.url = "http://" + ln.Addr().String() + "/verify"
	return pv, nil
}

func (pv *plainVerifier) close() {
	pv.hs.Close()
	pv.db.close()
}

// ServeHTTP answers POST {"user","code"} with 200 when the code matches a
// counter in the look-ahead window above the user's last one and the
// conditional UPDATE to that counter changed a row, and 401 otherwise.
func (pv *plainVerifier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	key, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if subtle.ConstantTimeCompare([]byte(key), []byte(pv.key)) != 1 {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, plainMaxBody))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	var in struct{ User, Code string }
	if err := json.Unmarshal(body, &in); err != nil {
		http.Error(w, "bad JSON", http.StatusBadRequest)
		return
	}
	u := pv.users[in.User]
	if u == nil {
		http.Error(w, "invalid code", http.StatusUnauthorized)
		return
	}
	last := u.last.Load()
	for c := last + 1; c <= last+pv.ahead; c++ {
		ok, err := hotp.ValidateCustom(in.Code, c, u.secret, plainOpts)
		if err != nil {
			http.Error(w, "malformed code", http.StatusBadRequest)
			return
		}
		if !ok {
			continue
		}
		changed, err := pv.db.advance(r.Context(), in.User, c)
		if err != nil {
			http.Error(w, "database error", http.StatusInternalServerError)
			return
		}
		if !changed {
			break
		}
		for l := u.last.Load(); l < c && !u.last.CompareAndSwap(l, c); l = u.last.Load() {
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
		return
	}
	http.Error(w, "invalid code", http.StatusUnauthorized)
}

// plainSQLite is plain_tokens in the store's SQLite file, opened by
// sqlitedb.Open as the store opens it (WAL, synchronous=FULL, busy
// timeout), through one connection: SQLite has one writer at a time, and
// more connections would only meet in its busy handler.
type plainSQLite struct {
	db  *sql.DB
	upd *sql.Stmt
}

func openPlainSQLite(ctx context.Context, path string, ids []string) (*plainSQLite, error) {
	db, err := sqlitedb.Open(path)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	p := &plainSQLite{db: db}
	if err := p.setup(ctx, ids); err != nil {
		db.Close()
		return nil, err
	}
	return p, nil
}

func (p *plainSQLite) setup(ctx context.Context, ids []string) (err error) {
	if _, err := p.db.ExecContext(ctx, `CREATE TABLE plain_tokens (user_id TEXT PRIMARY KEY, counter INTEGER NOT NULL)`); err != nil {
		return err
	}
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `INSERT INTO plain_tokens (user_id, counter) VALUES (?, 0)`, id); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	p.upd, err = p.db.PrepareContext(ctx, `UPDATE plain_tokens SET counter = ?1 WHERE user_id = ?2 AND counter < ?1`)
	return err
}

func (p *plainSQLite) advance(ctx context.Context, user string, c uint64) (bool, error) {
	res, err := p.upd.ExecContext(ctx, int64(c), user)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// written is the process's write_bytes: the server and the plain verifier
// run in this process, and the load generator writes nothing to storage.
func (p *plainSQLite) written(context.Context) (int64, bool) { return bench.WriteBytes() }

func (p *plainSQLite) close() {
	p.upd.Close()
	p.db.Close()
}

// plainPG is plain_tokens in the store's scratch schema, through a pgx pool
// on the same DSN (the store's own pool is not reachable from here), sized
// as the store sizes its pool when the DSN does not: max(16, 4 ×
// GOMAXPROCS), as in internal/store's defaultPGConns.
type plainPG struct {
	pool *pgxpool.Pool
}

func openPlainPG(ctx context.Context, dsn string, ids []string) (*plainPG, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("the PostgreSQL DSN does not parse")
	}
	if u, err := url.Parse(dsn); err == nil && !u.Query().Has("pool_max_conns") {
		cfg.MaxConns = int32(max(16, 4*runtime.GOMAXPROCS(0)))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE plain_tokens (user_id TEXT PRIMARY KEY, counter BIGINT NOT NULL)`); err != nil {
		pool.Close()
		return nil, err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO plain_tokens (user_id, counter) SELECT unnest($1::text[]), 0`, ids); err != nil {
		pool.Close()
		return nil, err
	}
	return &plainPG{pool: pool}, nil
}

func (p *plainPG) advance(ctx context.Context, user string, c uint64) (bool, error) {
	tag, err := p.pool.Exec(ctx, `UPDATE plain_tokens SET counter = $1 WHERE user_id = $2 AND counter < $1`, int64(c), user)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// written is the server's WAL position in bytes: the whole cluster's WAL,
// so other databases' writes meanwhile count too.
func (p *plainPG) written(ctx context.Context) (int64, bool) {
	var n int64
	err := p.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint`).Scan(&n)
	return n, err == nil
}

func (p *plainPG) close() { p.pool.Close() }
