-- A btree index on an account_path column serves `col <@ P` (whole subtree:
-- one range scan) and `col @> P` (all ancestors: = ANY), with P a constant, a
-- parameter or a STABLE function call, also in either operand order and
-- inside a row-level security policy. The hash opclass serves `=`.
SET search_path = tenancy, public;

-- 10 main accounts, 10 children each, 10 grandchildren each.
CREATE TABLE acct (id bigint PRIMARY KEY, path account_path NOT NULL, note text);
INSERT INTO acct
SELECT row_number() OVER (), p, 'row ' || p::text
FROM (SELECT to_account_path(ARRAY[a]) FROM generate_series(1, 10) a
      UNION ALL SELECT to_account_path(ARRAY[a, 100 + b]) FROM generate_series(1, 10) a, generate_series(1, 10) b
      UNION ALL SELECT to_account_path(ARRAY[a, 100 + b, 1000 + c])
      FROM generate_series(1, 10) a, generate_series(1, 10) b, generate_series(1, 10) c) s(p);
CREATE INDEX acct_path ON acct (path);
ANALYZE acct;
SET enable_seqscan = off;  -- the table is small; we check that the index CAN serve these

-- A STABLE function standing in for the request context's current path.
CREATE FUNCTION pg_temp.current_test_path() RETURNS tenancy.account_path
    LANGUAGE sql STABLE AS $$ SELECT current_setting('test.path')::tenancy.account_path $$;
SET test.path = '3.105';

-- Subtree with a constant, both operand orders.
EXPLAIN (COSTS OFF) SELECT count(*) FROM acct WHERE path <@ '3';
EXPLAIN (COSTS OFF) SELECT count(*) FROM acct WHERE '3' @> path;
SELECT count(*) FROM acct WHERE path <@ '3';
SELECT count(*) FROM acct WHERE path <@ '3.105';
-- Ancestors with a constant, both operand orders.
EXPLAIN (COSTS OFF) SELECT path FROM acct WHERE path @> '3.105.1007';
EXPLAIN (COSTS OFF) SELECT path FROM acct WHERE '3.105.1007' <@ path;
SELECT path FROM acct WHERE path @> '3.105.1007' ORDER BY path;
-- A STABLE function call on the right.
EXPLAIN (COSTS OFF) SELECT count(*) FROM acct WHERE path <@ pg_temp.current_test_path();
EXPLAIN (COSTS OFF) SELECT path FROM acct WHERE path @> pg_temp.current_test_path();
SELECT count(*) FROM acct WHERE path <@ pg_temp.current_test_path();
SELECT path FROM acct WHERE path @> pg_temp.current_test_path() ORDER BY path;
-- A parameter (generic plan, as prepared statements and PL/pgSQL use).
SET plan_cache_mode = force_generic_plan;
PREPARE subtree(account_path) AS SELECT count(*) FROM acct WHERE path <@ $1;
PREPARE ancestors_of(account_path) AS SELECT path FROM acct WHERE path @> $1 ORDER BY path;
EXPLAIN (COSTS OFF) EXECUTE subtree('3');
EXPLAIN (COSTS OFF) EXECUTE ancestors_of('3.105.1007');
EXECUTE subtree('3');
EXECUTE subtree('10.110');
EXECUTE subtree('11');
EXECUTE ancestors_of('3.105.1007');
EXECUTE ancestors_of('3.105.1007.5');
RESET plan_cache_mode;
-- A join: each main account's subtree through a parameterized index scan.
EXPLAIN (COSTS OFF)
SELECT a.path, count(*) FROM acct a JOIN acct b ON b.path <@ a.path WHERE nlevel(a.path) = 1 GROUP BY a.path;
SELECT a.path, count(*) FROM acct a JOIN acct b ON b.path <@ a.path WHERE nlevel(a.path) = 1 GROUP BY a.path ORDER BY a.path;
-- The subtree bound of a last label at the top of its byte length.
INSERT INTO acct VALUES (5000, '7.255', 'x'), (5001, '7.255.1', 'x'), (5002, '7.256', 'x'),
    (5003, '9223372036854775806', 'x'), (5004, '9223372036854775806.9223372036854775806', 'x');
SELECT string_agg(path::text, ' ' ORDER BY path) FROM acct WHERE path <@ '7.255';
SELECT string_agg(path::text, ' ' ORDER BY path) FROM acct WHERE path <@ '9223372036854775806';
-- The index gives the same rows as a sequential scan for every node.
SET enable_seqscan = on; SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off;
CREATE TEMP TABLE seq_counts AS
SELECT a.path, (SELECT count(*) FROM acct b WHERE b.path <@ a.path) AS below,
       (SELECT count(*) FROM acct b WHERE b.path @> a.path) AS above FROM acct a;
RESET enable_indexscan; RESET enable_indexonlyscan; RESET enable_bitmapscan; SET enable_seqscan = off;
SELECT count(*) AS nodes,
       count(*) FILTER (WHERE s.below = (SELECT count(*) FROM acct b WHERE b.path <@ s.path)
                          AND s.above = (SELECT count(*) FROM acct b WHERE b.path @> s.path)) AS index_agrees
FROM seq_counts s;

-- Hash index and hash joins.
CREATE INDEX acct_path_hash ON acct USING hash (path);
EXPLAIN (COSTS OFF) SELECT id FROM acct WHERE path = '3.105';
SELECT id FROM acct WHERE path = '3.105';
DROP INDEX acct_path_hash;
-- Hash partitioning (extended hash function) and partition pruning.
CREATE TABLE hp (p account_path) PARTITION BY HASH (p);
CREATE TABLE hp0 PARTITION OF hp FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE hp1 PARTITION OF hp FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO hp SELECT path FROM acct;
SELECT (SELECT count(*) FROM hp0) > 0 AND (SELECT count(*) FROM hp1) > 0 AS both_used,
       (SELECT count(*) FROM hp) = (SELECT count(*) FROM acct) AS all_rows;
EXPLAIN (COSTS OFF) SELECT * FROM hp WHERE p = '3.105';
SELECT * FROM hp WHERE p = '3.105';
DROP TABLE hp;
RESET enable_seqscan;
SET enable_mergejoin = off; SET enable_nestloop = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM acct a JOIN acct b ON a.path = parent(b.path);
SELECT count(*) FROM acct a JOIN acct b ON a.path = parent(b.path);
RESET enable_mergejoin; RESET enable_nestloop;

-- Inside a row-level security policy, for an ordinary role: the policy's
-- `path <@ current path` is an index range scan, and (the operators being
-- LEAKPROOF) the role's own condition is an index condition too.
CREATE ROLE account_path_tester;
GRANT USAGE ON SCHEMA tenancy TO account_path_tester;
GRANT SELECT ON acct TO account_path_tester;
ALTER TABLE acct ENABLE ROW LEVEL SECURITY;
CREATE POLICY subtree ON acct FOR SELECT USING (path <@ pg_temp.current_test_path());
SET enable_seqscan = off;
SET ROLE account_path_tester;
EXPLAIN (COSTS OFF) SELECT count(*) FROM acct;
SELECT count(*) FROM acct;
EXPLAIN (COSTS OFF) SELECT path FROM acct WHERE path <@ '3.105.1004';
SELECT path FROM acct WHERE path <@ '3.105.1004';
SELECT count(*) FROM acct WHERE path <@ '4';  -- outside the policy's subtree
RESET ROLE;
DROP TABLE acct;
REVOKE USAGE ON SCHEMA tenancy FROM account_path_tester;
DROP ROLE account_path_tester;
