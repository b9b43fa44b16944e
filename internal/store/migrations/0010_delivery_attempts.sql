-- 0010: codes tried against a delivery (internal/delivery, docs/deliveries.md,
-- "Online confirm"): one row per delivery and code version, counting the
-- attempts at that version's code (online confirms and sealed codes the
-- server opened at sync). A reassignment issues a new code version, whose
-- count starts again at zero. An attempt is counted before the code is
-- compared, so that parallel guesses cannot outrun the limit.
CREATE TABLE delivery_attempts (
	realm        TEXT   NOT NULL,
	id           TEXT   NOT NULL,
	code_version BIGINT NOT NULL,
	attempts     BIGINT NOT NULL,
	updated_us   BIGINT NOT NULL,
	PRIMARY KEY (realm, id, code_version),
	FOREIGN KEY (realm, id) REFERENCES deliveries (realm, id)
);
