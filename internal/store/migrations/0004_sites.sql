-- 0004: the issuing side of site verifiers (internal/siteissue,
-- docs/sites.md), which used to live in a separate DIR/sites.db: scopes
-- (policy, the highest epoch ever handed out, package and revocation list
-- serials, the latest signed list), each scope's emergency rolls (the epoch
-- schedule's segments after the origin), revocations (with the reason,
-- which stays on the server) and which package went to which site.
--
-- A scope id is unique across realms, as device ids are: its keys are
-- derived from the master key and the scope id alone, so two realms must
-- never share one. realm says which realm's API clients may use it.
-- Nothing here is secret: scope keys and credentials are derived on
-- demand and never stored.

CREATE TABLE site_scopes (
	scope             TEXT   NOT NULL PRIMARY KEY,
	realm             TEXT   NOT NULL,
	created_us        BIGINT NOT NULL,
	policy            TEXT   NOT NULL,
	max_issued        BIGINT NOT NULL DEFAULT 0,
	package_serial    BIGINT NOT NULL DEFAULT 0,
	revocation_serial BIGINT NOT NULL DEFAULT 0,
	revocation_list   BYTEA
);

CREATE TABLE site_scope_segments (
	scope       TEXT   NOT NULL REFERENCES site_scopes (scope),
	start_us    BIGINT NOT NULL,
	first_epoch BIGINT NOT NULL,
	PRIMARY KEY (scope, start_us)
);

CREATE TABLE site_revocations (
	scope         TEXT   NOT NULL REFERENCES site_scopes (scope),
	tech          TEXT   NOT NULL,
	through_epoch BIGINT NOT NULL,
	revoked_us    BIGINT NOT NULL,
	reason        TEXT   NOT NULL,
	PRIMARY KEY (scope, tech)
);

CREATE TABLE site_packages (
	scope     TEXT   NOT NULL REFERENCES site_scopes (scope),
	serial    BIGINT NOT NULL,
	site      TEXT   NOT NULL,
	issued_us BIGINT NOT NULL,
	epochs    TEXT   NOT NULL,
	PRIMARY KEY (scope, serial)
);
