-- 0009: reserved for another branch of this wave (the codemodes branch owns
-- 0010 and needs 0001..0009 present, numbered without gaps). The lead
-- deletes this placeholder when merging the branch that owns 0009.
SELECT 1;
