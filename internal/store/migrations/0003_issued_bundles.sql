-- 0003: the server's own record of every bundle it issued to a field device
-- (docs/sync.md, "A device speaks only for what it was given"). Sync used
-- to learn a device's bundles from the device's own "import" log entries,
-- so any registered device could speak for any token of its realm. Now a
-- device's events and state count only for bundles recorded here: written
-- where every bundle is signed (the offline bundles API, PIN bundles of
-- /v1/offline/login, refills), before the bundle leaves the server.
-- Bundles issued before this migration have no record: their devices'
-- claims are incidents until a new bundle is issued.

CREATE TABLE issued_bundles (
	realm         TEXT    NOT NULL,
	device        TEXT    NOT NULL,
	user_id       TEXT    NOT NULL,
	token_id      TEXT    NOT NULL,
	serial        BIGINT  NOT NULL,
	otp_type      TEXT    NOT NULL,
	first_counter BIGINT  NOT NULL,
	last_counter  BIGINT  NOT NULL,
	not_after_us  BIGINT  NOT NULL,
	pin           BOOLEAN NOT NULL DEFAULT FALSE,
	secrets       BIGINT  NOT NULL DEFAULT 0,
	issued_us     BIGINT  NOT NULL,
	PRIMARY KEY (realm, device, user_id, token_id, serial)
);
