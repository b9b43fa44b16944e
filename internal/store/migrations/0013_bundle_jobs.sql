-- 0013: durable bundle jobs (internal/issuance, docs/server.md "Bundle
-- work"). A job is queued by the API on any replica and claimed with a
-- lease (lease_owner, lease_until_us) by a process that computes bundles
-- (`outpost serve` with --bundle-workers, or `outpost worker`); a process
-- that dies mid-job loses its lease when lease_until_us passes and another
-- takes the job over (attempts counts the claims).
--
-- request is the admitted request, sealed by internal/issuance
-- (internal/secretbox under a master-derived key): it may hold a PIN and
-- static secrets. It is erased (replaced by one zero byte) when the job ends.
-- bundle is the signed bundle file once done (no secret in clear: the same
-- bytes the device imports).

CREATE TABLE bundle_jobs (
	id             TEXT   NOT NULL PRIMARY KEY,
	realm          TEXT   NOT NULL REFERENCES realms (id),
	state          TEXT   NOT NULL,
	request        BYTEA  NOT NULL,
	done           BIGINT NOT NULL,
	total          BIGINT NOT NULL,
	attempts       BIGINT NOT NULL,
	lease_owner    TEXT   NOT NULL,
	lease_until_us BIGINT NOT NULL,
	created_us     BIGINT NOT NULL,
	updated_us     BIGINT NOT NULL,
	error          TEXT   NOT NULL,
	bundle         BYTEA
);

CREATE INDEX bundle_jobs_due ON bundle_jobs (state, lease_until_us, created_us);
