-- 0007: the courier's side of deliveries (docs/deliveries.md, "Route
-- manifest", "Proof of delivery"): what a courier device checks a code
-- with, what the server put in each device's route manifest, and the
-- proofs of delivery.
--
-- delivery_checks holds, per delivery, the mode data of its current code
-- version (a salted slow hash or a short fingerprint; nothing for tokens),
-- sealed with a master-derived key: a hash of a short code is worth a
-- brute-force run to whoever reads the database.
CREATE TABLE delivery_checks (
	realm        TEXT   NOT NULL,
	id           TEXT   NOT NULL,
	code_version BIGINT NOT NULL,
	data         BYTEA  NOT NULL,
	PRIMARY KEY (realm, id),
	FOREIGN KEY (realm, id) REFERENCES deliveries (realm, id)
);

-- courier_manifests: the serial of the last route manifest issued to each
-- courier device (a device refuses one not newer than the one it holds).
CREATE TABLE courier_manifests (
	realm     TEXT   NOT NULL REFERENCES realms (id),
	device    TEXT   NOT NULL,
	serial    BIGINT NOT NULL,
	issued_us BIGINT NOT NULL,
	PRIMARY KEY (realm, device)
);

-- delivery_manifested: which code version of which delivery the server put
-- in which device's manifest. The server believes a device's receipt only
-- for a row here (the version and the device the server itself issued).
CREATE TABLE delivery_manifested (
	realm        TEXT   NOT NULL,
	id           TEXT   NOT NULL,
	code_version BIGINT NOT NULL,
	device       TEXT   NOT NULL,
	serial       BIGINT NOT NULL,
	issued_us    BIGINT NOT NULL,
	PRIMARY KEY (realm, id, code_version, device),
	FOREIGN KEY (realm, id) REFERENCES deliveries (realm, id)
);

-- delivery_proofs: one proof per delivery (the primary key is what makes a
-- delivery delivered exactly once): the device-signed receipt as received
-- and the server's countersignature.
CREATE TABLE delivery_proofs (
	realm        TEXT   NOT NULL,
	id           TEXT   NOT NULL,
	code_version BIGINT NOT NULL,
	device       TEXT   NOT NULL,
	receipt      BYTEA  NOT NULL,
	countersign  BYTEA  NOT NULL,
	delivered_us BIGINT NOT NULL,
	PRIMARY KEY (realm, id),
	FOREIGN KEY (realm, id) REFERENCES deliveries (realm, id)
);

-- A device's route manifest lists the deliveries assigned to it.
CREATE INDEX deliveries_device ON deliveries (realm, device);
