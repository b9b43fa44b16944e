// Package store is the storage contract of the Outpost server, with two
// engines: embedded SQLite (the default, a file in the data directory) and
// PostgreSQL through pgx (for production and for several `outpost serve`
// replicas).
//
//	st, err := store.Open(ctx, dsn) // "postgres://…" or a SQLite file path
//	defer st.Close()
//
// [Open] picks the engine from the DSN and applies the schema migrations
// (safe when several replicas start at once). Tests get a fresh database
// from package storetest (storetest.SQLitePath, storetest.PostgresDSN) and
// every engine passes storetest.Run.
//
// The contract's one security-critical promise is [Store.AdvanceToken]: it
// raises a token's last-used step or counter with a single conditional
// UPDATE, so that of any number of concurrent callers (goroutines or
// replicas) offering the same value, exactly one succeeds and the others get
// [ErrReplayed]. Everything that accepts a code calls it and only it.
//
// Every write is durable when its method returns. Concurrent writes are
// committed together where the database would otherwise serialise them
// (SQLite writes, audit appends): one fsync for a whole batch, each caller
// answered after it, each write in the batch failing or succeeding alone.
//
// The SQL stays within what both engines and CockroachDB accept: no
// engine-specific upserts beyond ON CONFLICT, no triggers, no stored
// procedures; integers are BIGINT, times are stored as Unix microseconds
// (BIGINT, read back in UTC), binary data as BYTEA. Times are kept to the
// microsecond, and a zero CreatedAt (or audit Time) is stored as the time of
// the call. docs/storage.md is the operator's manual.
//
// Secrets never reach the store in the clear: token seeds arrive encrypted
// (or are not stored at all when derived), PINs arrive as argon2id hashes and
// API tokens as HMACs.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/outpost-auth/outpost/internal/eventlog"
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	// ErrReplayed: AdvanceToken was offered a step/counter not above the last used one.
	ErrReplayed = errors.New("store: code already used")
	// ErrStale: AcceptCode was given a user version that is no longer the
	// user's: read the user again and decide again.
	ErrStale = errors.New("store: the user changed since it was read")
	// ErrConflict: a concurrent writer changed the row; the caller may retry.
	ErrConflict = errors.New("store: concurrent update")
	// ErrInvalid: a record or argument fails the store's own checks (an
	// ID outside internal/ident's rule, an unknown status, type or scope, a
	// page limit out of range). Servers map it to 400; it never reaches the
	// database.
	ErrInvalid = errors.New("store: invalid record")
	// ErrUnavailable: the database refused or lost the connection (a
	// PostgreSQL server down, restarting or at max_connections, or a
	// connection cut in the middle of a request), or refused a write it
	// cannot take now (a standby's read-only transaction after a failover,
	// a full disk, out of memory). A refused operation was
	// not done; one whose connection was lost while it committed may have
	// been, and earlier steps of a request may have been. Servers answer
	// 503 and the caller may retry. Size pool_max_conns × replicas below
	// the server's max_connections.
	ErrUnavailable = errors.New("store: the database is not answering")
)

// Limits the store checks before touching the database. IDs and names
// follow internal/ident (ident.Check, ident.MaxLen).
const (
	// MaxListLimit is the largest page ListUsers and ListAudit return; a
	// larger limit is ErrInvalid rather than silently cut short.
	MaxListLimit = 1000
	// MaxBlobLen bounds PIN hashes, seed ciphertexts and token hashes, in bytes.
	MaxBlobLen = 4096
)

// Realm is a tenant. Every other record belongs to exactly one realm.
type Realm struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// User is a person (or technician) who authenticates.
type User struct {
	Realm       string
	ID          string
	DisplayName string
	// PINHash is an argon2id PHC string, or nil when the user has no PIN.
	PINHash []byte
	// Failures counts consecutive failed verifications; LastFailure is the
	// time of the latest. The lockout policy computes delays from both.
	Failures    int
	LastFailure time.Time
	CreatedAt   time.Time
	// Version changes, in the same transaction, with everything online
	// verification reads of the user and its tokens (failures, PIN, a
	// token's creation, status or removal), except a token's last used
	// value. Set by the store; ignored by CreateUser.
	Version int64
}

// Token states.
const (
	TokenPending  = "pending"  // enrolled, first code not yet confirmed
	TokenActive   = "active"   // usable
	TokenDisabled = "disabled" // refused everywhere
)

// Seed modes.
const (
	SeedDerived = "derived" // HKDF(master, token-seed, Epoch, realm, user, token id); nothing stored
	SeedRandom  = "random"  // random, stored AES-256-GCM encrypted in SeedCiphertext
)

// Token is an OTP credential of a user.
type Token struct {
	Realm  string
	UserID string
	ID     string
	// Type is "totp" or "hotp"; Algorithm "SHA1", "SHA256" or "SHA512".
	Type      string
	Algorithm string
	Digits    int
	Period    int // TOTP step in seconds; 0 for HOTP
	SeedMode  string
	Epoch     uint32
	// SeedCiphertext is the encrypted seed (SeedRandom only), nonce included.
	SeedCiphertext []byte
	Status         string
	// LastUsed is the highest TOTP step or HOTP counter ever accepted; Used is
	// false until the first acceptance. Counters are below 2^63.
	LastUsed  int64
	Used      bool
	CreatedAt time.Time
}

// API client scopes.
const (
	ScopeAdmin    = "admin"
	ScopeIssuer   = "issuer"
	ScopeVerifier = "verifier"
)

// APIClient is a holder of an API token. The token itself is never stored:
// TokenHash is HMAC-SHA256 of it under a key derived from the master key.
type APIClient struct {
	ID        string
	Realm     string
	Name      string
	Scopes    []string
	TokenHash []byte
	CreatedAt time.Time
	Disabled  bool
}

// Store is the contract both engines implement. Every method is safe for
// concurrent use. Methods that take a realm scope their lookups to it.
type Store interface {
	// Engine returns "sqlite" or "postgres".
	Engine() string
	// Ping checks the database answers (for /readyz).
	Ping(ctx context.Context) error
	Close() error

	CreateRealm(ctx context.Context, r Realm) error // ErrExists
	GetRealm(ctx context.Context, id string) (Realm, error)

	// CreateUser stores u. ErrExists if the realm already has that user ID;
	// ErrNotFound if the realm does not exist.
	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, realm, id string) (User, error)
	// ListUsers returns up to limit (1..MaxListLimit) users with ID > after,
	// ordered by ID in the database's collation (byte order on SQLite); pass
	// the last ID of a page as after to get the next one, "" for the first.
	ListUsers(ctx context.Context, realm, after string, limit int) ([]User, error)
	// DeleteUser removes the user and all their tokens.
	DeleteUser(ctx context.Context, realm, id string) error
	// SetPINHash sets (or, with nil, clears) the user's PIN hash.
	SetPINHash(ctx context.Context, realm, id string, hash []byte) error
	// RecordFailure atomically increments the user's failure count, sets
	// LastFailure to now, and returns the new count.
	RecordFailure(ctx context.Context, realm, id string, now time.Time) (int, error)
	// ResetFailures sets the failure count to zero.
	ResetFailures(ctx context.Context, realm, id string) error

	// GetUserTokens returns the user and ListTokens' answer in one call
	// (ErrNotFound when the user does not exist).
	GetUserTokens(ctx context.Context, realm, id string) (User, []Token, error)
	CreateToken(ctx context.Context, t Token) error // ErrExists; ErrNotFound if the user does not exist
	GetToken(ctx context.Context, realm, user, id string) (Token, error)
	// ListTokens returns the user's tokens ordered by CreatedAt, then ID.
	ListTokens(ctx context.Context, realm, user string) ([]Token, error)
	DeleteToken(ctx context.Context, realm, user, id string) error
	// SetTokenStatus changes Status (pending → active, active → disabled, ...).
	SetTokenStatus(ctx context.Context, realm, user, id, status string) error
	// AdvanceToken sets LastUsed = used and Used = true if and only if the
	// token is not Used yet or LastUsed < used, in one conditional UPDATE.
	// It returns ErrReplayed when the condition fails, ErrNotFound when the
	// token does not exist, ErrInvalid when used is negative. It does not
	// look at Status: confirming a pending token consumes its first code too.
	AdvanceToken(ctx context.Context, realm, user, id string, used int64) error

	// CreateAPIClient stores c. ErrExists if the realm already has a client
	// with that ID, or any client has the same TokenHash. Realm is not
	// checked against the realms: "" may stand for a client of no one realm.
	// AcceptCode is AdvanceToken and then AppendAudit(e), committed so that
	// the audit entry is never lost when the acceptance is kept. Errors are
	// AdvanceToken's; e is appended only on success. With version >= 0 the
	// user's Version must still be version, checked in the same conditional
	// UPDATE: ErrStale when it is not (or the user is gone), and nothing is
	// written; a negative version checks nothing.
	AcceptCode(ctx context.Context, realm, user, id string, used, version int64, e eventlog.Entry) (eventlog.Entry, error)

	CreateAPIClient(ctx context.Context, c APIClient) error
	// GetAPIClientByHash finds the client whose TokenHash equals hash.
	GetAPIClientByHash(ctx context.Context, hash []byte) (APIClient, error)
	// ListAPIClients returns the realm's clients ordered by ID.
	ListAPIClients(ctx context.Context, realm string) ([]APIClient, error)
	DisableAPIClient(ctx context.Context, realm, id string) error

	// AppendAudit appends e to the hash-chained audit log: in one
	// transaction it reads the last entry and inserts eventlog.Next(last, e, nil).
	// Concurrent appenders (including other replicas) serialise on the
	// sequence number's uniqueness and retry; none is lost. It returns the
	// stored entry; ErrInvalid when e's fields are out of eventlog's bounds.
	AppendAudit(ctx context.Context, e eventlog.Entry) (eventlog.Entry, error)
	// ListAudit returns up to limit (1..MaxListLimit) entries with Seq > after, in order.
	ListAudit(ctx context.Context, after uint64, limit int) ([]eventlog.Entry, error)
}
