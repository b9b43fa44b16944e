-- 0005: deliveries (internal/delivery, docs/deliveries.md): a parcel whose
-- recipient holds a one-time code the courier checks at the door.
--
-- Nothing here lets anyone recover a code or read a recipient: code_mac is
-- an HMAC of the current code under a key derived from the master key, and
-- recipient is the contact (email or phone) sealed with a master-derived
-- key (internal/secretbox). code_version counts the codes issued for the
-- delivery: a reassignment issues a new one and the old one is dead.

CREATE TABLE deliveries (
	realm        TEXT   NOT NULL REFERENCES realms (id),
	id           TEXT   NOT NULL,
	device       TEXT   NOT NULL,
	mode         TEXT   NOT NULL,
	state        TEXT   NOT NULL,
	created_us   BIGINT NOT NULL,
	updated_us   BIGINT NOT NULL,
	not_after_us BIGINT NOT NULL,
	code_version BIGINT NOT NULL,
	code_mac     BYTEA  NOT NULL,
	recipient    BYTEA  NOT NULL,
	PRIMARY KEY (realm, id)
);
