-- 0002: field-device sync (docs/sync.md). Registered devices and where
-- their logs stand, what the server knows of each device's tokens, the
-- codes accepted offline (to detect a code accepted twice), refills issued,
-- and an index to find online acceptances of a user in the audit log.

CREATE TABLE devices (
	realm          TEXT   NOT NULL REFERENCES realms (id),
	id             TEXT   NOT NULL,
	status         TEXT   NOT NULL,
	public_key     BYTEA,
	key_id         TEXT,
	enrol_hash     BYTEA,
	enrol_until_us BIGINT NOT NULL DEFAULT 0,
	created_us     BIGINT NOT NULL,
	revoked_us     BIGINT NOT NULL DEFAULT 0,
	acked_seq      BIGINT NOT NULL DEFAULT 0,
	acked_hash     BYTEA,
	upload_serial  BIGINT NOT NULL DEFAULT 0,
	upload_hash    BYTEA,
	last_sync_us   BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (realm, id)
);

CREATE UNIQUE INDEX devices_id ON devices (id);
CREATE UNIQUE INDEX devices_key_id ON devices (key_id);

CREATE TABLE device_tokens (
	realm          TEXT    NOT NULL,
	device         TEXT    NOT NULL,
	user_id        TEXT    NOT NULL,
	token_id       TEXT    NOT NULL,
	serial         BIGINT  NOT NULL DEFAULT 0,
	otp_type       TEXT    NOT NULL DEFAULT '',
	first_counter  BIGINT  NOT NULL DEFAULT 0,
	last_counter   BIGINT  NOT NULL DEFAULT 0,
	not_after_us   BIGINT  NOT NULL DEFAULT 0,
	offline_used   BIGINT  NOT NULL DEFAULT -1,
	used_serial    BIGINT  NOT NULL DEFAULT 0,
	reported_used  BIGINT  NOT NULL DEFAULT -1,
	failures       BIGINT  NOT NULL DEFAULT 0,
	wiped          BOOLEAN NOT NULL DEFAULT FALSE,
	updated_us     BIGINT  NOT NULL,
	PRIMARY KEY (realm, device, user_id, token_id)
);

CREATE TABLE offline_uses (
	realm      TEXT   NOT NULL,
	user_id    TEXT   NOT NULL,
	token_id   TEXT   NOT NULL,
	counter    BIGINT NOT NULL,
	device     TEXT   NOT NULL,
	device_seq BIGINT NOT NULL,
	audit_seq  BIGINT NOT NULL,
	at_us      BIGINT NOT NULL,
	PRIMARY KEY (realm, user_id, token_id, counter, device)
);

CREATE TABLE device_refills (
	realm       TEXT   NOT NULL,
	device      TEXT   NOT NULL,
	user_id     TEXT   NOT NULL,
	token_id    TEXT   NOT NULL,
	from_serial BIGINT NOT NULL,
	serial      BIGINT NOT NULL,
	bundle      BYTEA  NOT NULL,
	issued_us   BIGINT NOT NULL,
	PRIMARY KEY (realm, device, user_id, token_id, from_serial)
);

CREATE INDEX audit_log_kind_subject ON audit_log (kind, subject, seq);
