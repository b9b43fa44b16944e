-- 0009: device onboarding (internal/ca, internal/enrol, docs/onboarding.md):
-- the issuing CA, onboarded devices, the certificates issued to them and
-- the single-use challenges of first contact.
--
-- ca_keys holds the root and the issuing CA: each certificate (DER) and its
-- private key (PKCS#8) sealed with a key derived from the master key
-- (internal/secretbox, bound to the row's name and certificate), so a copied
-- database without the master key yields no CA key.
CREATE TABLE ca_keys (
	name       TEXT   NOT NULL PRIMARY KEY,
	cert       BYTEA  NOT NULL,
	sealed_key BYTEA  NOT NULL,
	created_us BIGINT NOT NULL
);

-- ca_devices: one row per device that got a certificate; the serial is
-- unique within a realm and keeps the key it first enrolled with. status is
-- active or revoked; a revoked device gets nothing more.
CREATE TABLE ca_devices (
	realm         TEXT   NOT NULL REFERENCES realms (id),
	serial        TEXT   NOT NULL,
	spki          BYTEA  NOT NULL,
	status        TEXT   NOT NULL,
	enrolled_us   BIGINT NOT NULL,
	updated_us    BIGINT NOT NULL,
	not_after_us  BIGINT NOT NULL,
	certs         BIGINT NOT NULL,
	PRIMARY KEY (realm, serial)
);

-- ca_certs: every certificate issued to a device (the serial number in hex).
CREATE TABLE ca_certs (
	serial        TEXT   NOT NULL PRIMARY KEY,
	realm         TEXT   NOT NULL,
	device        TEXT   NOT NULL,
	kind          TEXT   NOT NULL,
	not_before_us BIGINT NOT NULL,
	not_after_us  BIGINT NOT NULL,
	der           BYTEA  NOT NULL
);
CREATE INDEX ca_certs_realm_serial ON ca_certs (realm, serial);

-- enrol_challenges: the single-use nonces of first contact, by SHA-256 of
-- the nonce (the nonce itself is never stored), bound to a realm and serial.
CREATE TABLE enrol_challenges (
	nonce_hash BYTEA  NOT NULL PRIMARY KEY,
	realm      TEXT   NOT NULL,
	serial     TEXT   NOT NULL,
	expires_us BIGINT NOT NULL
);
CREATE INDEX enrol_challenges_expires ON enrol_challenges (expires_us);
