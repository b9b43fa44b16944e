-- 0006: the transactional outbox (internal/outbox, docs/deliveries.md) and
-- each realm's shipper webhook.
--
-- An outbox row is written in the same transaction as the delivery change
-- that causes it, so a message is never lost: a worker claims pending rows
-- with a lease (lease_owner, lease_until_us), sends them and marks them
-- sent, retries them later (next_us) or dead-letters them. id is derived
-- from realm, delivery, code version and kind, so one delivery version
-- never has two rows of one kind; it is also the Message-ID and webhook
-- event id receivers dedupe on.
--
-- secret is the recipient's code sealed with a master-derived key
-- (internal/secretbox); it is set to NULL once the message is sent, skipped,
-- or dead and past expires_us (the delivery's not_after). payload is a
-- webhook event's JSON body: ids, state and times, never a code nor a
-- recipient.

CREATE TABLE outbox (
	id             TEXT   NOT NULL PRIMARY KEY,
	realm          TEXT   NOT NULL REFERENCES realms (id),
	delivery       TEXT   NOT NULL,
	version        BIGINT NOT NULL,
	kind           TEXT   NOT NULL,
	state          TEXT   NOT NULL,
	attempts       BIGINT NOT NULL,
	next_us        BIGINT NOT NULL,
	lease_owner    TEXT   NOT NULL,
	lease_until_us BIGINT NOT NULL,
	created_us     BIGINT NOT NULL,
	updated_us     BIGINT NOT NULL,
	expires_us     BIGINT NOT NULL,
	last_error     TEXT   NOT NULL,
	payload        BYTEA,
	secret         BYTEA
);

CREATE INDEX outbox_due ON outbox (state, next_us);
CREATE INDEX outbox_realm_state ON outbox (realm, state, id);

-- The expiry sweep (delivery.Service.ExpireDue) looks deliveries up by
-- their expiry.
CREATE INDEX deliveries_not_after ON deliveries (not_after_us);

-- The shipper's webhook of a realm: where its delivery events go, and the
-- HMAC key they are signed with, sealed (internal/secretbox).
CREATE TABLE realm_webhooks (
	realm      TEXT   NOT NULL PRIMARY KEY REFERENCES realms (id),
	url        TEXT   NOT NULL,
	secret     BYTEA  NOT NULL,
	updated_us BIGINT NOT NULL
);
