-- engine: sqlite
-- 0015 (SQLite only): audit_log.seq becomes the table's rowid. Declared
-- BIGINT PRIMARY KEY in 0001, it was an ordinary column with a separate
-- unique index beside the rowid: every append wrote both b-trees. As
-- INTEGER PRIMARY KEY it is the rowid itself (one b-tree, entries in seq
-- order), which halves the pages an append dirties besides the
-- (kind, subject, seq) index (issue 13 part 2). PostgreSQL keeps 0001's
-- table: its primary key is the index it needs.
CREATE TABLE audit_log_rowid (
	seq     INTEGER NOT NULL PRIMARY KEY,
	at_us   BIGINT  NOT NULL,
	kind    TEXT    NOT NULL,
	actor   TEXT    NOT NULL,
	subject TEXT    NOT NULL,
	data    BYTEA,
	prev    BYTEA   NOT NULL,
	hash    BYTEA   NOT NULL
);
INSERT INTO audit_log_rowid (seq, at_us, kind, actor, subject, data, prev, hash)
	SELECT seq, at_us, kind, actor, subject, data, prev, hash FROM audit_log ORDER BY seq;
DROP TABLE audit_log;
ALTER TABLE audit_log_rowid RENAME TO audit_log;
CREATE INDEX audit_log_kind_subject ON audit_log (kind, subject, seq);
