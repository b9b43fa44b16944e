-- 0008: the device roster (internal/roster, docs/onboarding.md): devices
-- field staff vouched for offline, as their field devices' signed logs
-- reported them at sync; the serials an administrator expects from a
-- purchase order; the field devices allowed to vouch.
--
-- A vouch is one entry of one staff device's log, so (realm, staff_device,
-- device_seq) names it and makes its ingest idempotent: the same entry
-- uploaded twice is one row. spki is the label's public key in PKIX
-- (SubjectPublicKeyInfo) DER, what a certificate request carries. Nothing
-- here is secret. state is internal/roster's name (live, held, withdrawn,
-- enrolled); "expired" is read from expires_us with the service's clock.

CREATE TABLE roster_vouches (
	realm        TEXT   NOT NULL REFERENCES realms (id),
	staff_device TEXT   NOT NULL,
	device_seq   BIGINT NOT NULL,
	serial       TEXT   NOT NULL,
	model        TEXT   NOT NULL,
	key_type     TEXT   NOT NULL,
	spki         BYTEA  NOT NULL,
	site         TEXT   NOT NULL,
	location     TEXT   NOT NULL,
	vouched_us   BIGINT NOT NULL,
	received_us  BIGINT NOT NULL,
	expires_us   BIGINT NOT NULL,
	state        TEXT   NOT NULL,
	reason       TEXT   NOT NULL,
	updated_us   BIGINT NOT NULL,
	PRIMARY KEY (realm, staff_device, device_seq)
);

CREATE INDEX roster_vouches_serial ON roster_vouches (realm, serial);

CREATE TABLE roster_expected (
	realm     TEXT   NOT NULL REFERENCES realms (id),
	serial    TEXT   NOT NULL,
	order_ref TEXT   NOT NULL,
	added_us  BIGINT NOT NULL,
	PRIMARY KEY (realm, serial)
);

CREATE TABLE roster_vouchers (
	realm      TEXT   NOT NULL REFERENCES realms (id),
	device     TEXT   NOT NULL,
	granted_us BIGINT NOT NULL,
	PRIMARY KEY (realm, device)
);
