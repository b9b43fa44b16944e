-- 0007: reserved for another branch of this wave (the ca branch owns
-- 0009 and needs 0001..0008 present, numbered without gaps). The lead
-- deletes this placeholder when merging the branch that owns 0007.
SELECT 1;
