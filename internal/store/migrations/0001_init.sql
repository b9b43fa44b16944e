-- 0001: the server's core model. Shared by SQLite, PostgreSQL and
-- CockroachDB: BIGINT integers, times as Unix microseconds (columns named
-- *_us, 0 for "never"), BYTEA for bytes, TEXT for strings, no triggers.

CREATE TABLE realms (
	id         TEXT   NOT NULL PRIMARY KEY,
	name       TEXT   NOT NULL,
	created_us BIGINT NOT NULL
);

CREATE TABLE users (
	realm           TEXT    NOT NULL REFERENCES realms (id),
	id              TEXT    NOT NULL,
	display_name    TEXT    NOT NULL,
	pin_hash        BYTEA,
	failures        BIGINT  NOT NULL DEFAULT 0,
	last_failure_us BIGINT  NOT NULL DEFAULT 0,
	created_us      BIGINT  NOT NULL,
	PRIMARY KEY (realm, id)
);

CREATE TABLE tokens (
	realm           TEXT    NOT NULL,
	user_id         TEXT    NOT NULL,
	id              TEXT    NOT NULL,
	otp_type        TEXT    NOT NULL,
	algorithm       TEXT    NOT NULL,
	digits          BIGINT  NOT NULL,
	period          BIGINT  NOT NULL,
	seed_mode       TEXT    NOT NULL,
	epoch           BIGINT  NOT NULL,
	seed_ciphertext BYTEA,
	status          TEXT    NOT NULL,
	last_used       BIGINT  NOT NULL DEFAULT 0,
	used            BOOLEAN NOT NULL DEFAULT FALSE,
	created_us      BIGINT  NOT NULL,
	PRIMARY KEY (realm, user_id, id),
	FOREIGN KEY (realm, user_id) REFERENCES users (realm, id)
);

CREATE TABLE api_clients (
	realm      TEXT    NOT NULL,
	id         TEXT    NOT NULL,
	name       TEXT    NOT NULL,
	scopes     TEXT    NOT NULL,
	token_hash BYTEA   NOT NULL UNIQUE,
	disabled   BOOLEAN NOT NULL DEFAULT FALSE,
	created_us BIGINT  NOT NULL,
	PRIMARY KEY (realm, id)
);

CREATE TABLE audit_log (
	seq     BIGINT NOT NULL PRIMARY KEY,
	at_us   BIGINT NOT NULL,
	kind    TEXT   NOT NULL,
	actor   TEXT   NOT NULL,
	subject TEXT   NOT NULL,
	data    BYTEA,
	prev    BYTEA  NOT NULL,
	hash    BYTEA  NOT NULL
);
