-- 0014: users.version (issue 13 part 1). It changes, in the same
-- transaction, with everything online verification reads of a user and its
-- tokens (failures, PIN, a token's creation, status or removal) except a
-- token's last used value. A replica that caches a user's rows accepts a
-- code from the cache only if the version is still the one it read: the
-- acceptance's conditional UPDATE checks it (store.AcceptCode, ErrStale).
ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
