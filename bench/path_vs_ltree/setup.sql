-- path_vs_ltree: the data. A forest of 1,111,000 accounts (1,000 main accounts,
-- 10 children each, 3 levels below: 1000 * (1 + 10 + 100 + 1000)), stored as
-- tenancy.account_path (btree), as ltree (GiST and btree) and as an
-- adjacency list (parent_id, btree). Rows are inserted in random order, as
-- accounts created over time would be, so a subtree is not clustered on disk.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
-- Sizes (psql -v mains=... -v big_rows=... for a quick smoke run).
\if :{?mains}
\else
    \set mains 1000
\endif
\if :{?big_rows}
\else
    \set big_rows 5000000
\endif
SELECT :mains * 1111 AS accounts \gset
CREATE EXTENSION IF NOT EXISTS tenancy;
CREATE EXTENSION IF NOT EXISTS ltree;
DROP TABLE IF EXISTS acc, acc_ordered, big_path, big_ltree, subtree_keys, pairs;
SELECT setseed(0.1111) \g /dev/null

-- Level by level: level 1 ids 1..1000, then each node's 10 children get the
-- next consecutive ids (as a sequence would hand them out per level).
CREATE TEMP TABLE lvl (id bigint, parent_id bigint, path tenancy.account_path, lpath ltree, level int);
INSERT INTO lvl SELECT g, NULL, tenancy.to_account_path(ARRAY[g::bigint]), text2ltree(g::text), 1
FROM generate_series(1, :mains) g;
DO $$
DECLARE lv int; base bigint;
BEGIN
    FOR lv IN 2..4 LOOP
        SELECT max(id) INTO base FROM lvl;
        INSERT INTO lvl
        SELECT base + (row_number() OVER (ORDER BY p.id, k)), p.id, NULL, NULL, lv
        FROM lvl p, generate_series(1, 10) k WHERE p.level = lv - 1;
        UPDATE lvl c SET path = p.path OPERATOR(tenancy.||) c.id, lpath = p.lpath || c.id::text
        FROM lvl p WHERE c.level = lv AND p.id = c.parent_id;
    END LOOP;
END $$;

CREATE TABLE acc (id bigint PRIMARY KEY, parent_id bigint, level int,
                  path tenancy.account_path NOT NULL, lpath ltree NOT NULL);
INSERT INTO acc SELECT id, parent_id, level, path, lpath FROM lvl ORDER BY random();
DROP TABLE lvl;
-- Index builds, timed in the server (one process each).
SET max_parallel_maintenance_workers = 0;
DROP TABLE IF EXISTS index_build;
CREATE TABLE index_build (variant text, ms float8);
DO $$
DECLARE t0 timestamptz; x record;
BEGIN
    FOR x IN SELECT * FROM (VALUES
        ('account_path', 'CREATE INDEX acc_path_btree ON acc (path)'),
        ('ltree_gist', 'CREATE INDEX acc_lpath_gist ON acc USING gist (lpath)'),
        ('ltree_btree', 'CREATE INDEX acc_lpath_btree ON acc (lpath)'),
        ('recursive_cte', 'CREATE INDEX acc_parent ON acc (parent_id)')) v(variant, sql) LOOP
        t0 := clock_timestamp();
        EXECUTE x.sql;
        INSERT INTO index_build VALUES (x.variant, extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
END $$;

-- (e): the same accounts stored in subtree order (each main account's tree
-- together, as a tenant imported at once or a CLUSTER on the path index would
-- leave them), indexed the same way, to read whole rows of a subtree.
CREATE TABLE acc_ordered AS SELECT * FROM acc ORDER BY path;
CREATE INDEX acc_ordered_path_btree ON acc_ordered (path);
CREATE INDEX acc_ordered_lpath_gist ON acc_ordered USING gist (lpath);

-- (c): 5,000,000 rows pointing at random accounts, one table per representation
-- (same columns otherwise), no index: the per-row cost of a policy filter.
CREATE TABLE big_path (account_id bigint, path tenancy.account_path, amount int);
CREATE TABLE big_ltree (account_id bigint, lpath ltree, amount int);
CREATE TEMP TABLE big_ids AS
SELECT 1 + floor(random() * (:accounts))::bigint AS account_id, (random() * 1000)::int AS amount
FROM generate_series(1, :big_rows);
INSERT INTO big_path SELECT b.account_id, a.path, b.amount FROM big_ids b JOIN acc a ON a.id = b.account_id;
INSERT INTO big_ltree SELECT b.account_id, a.lpath, b.amount FROM big_ids b JOIN acc a ON a.id = b.account_id;
DROP TABLE big_ids;

-- Keys: random main and mid-level (level 2) accounts for (a); 10,000 pairs for
-- (b), half of them true (Y an ancestor of X), half a random account.
CREATE TABLE subtree_keys AS
SELECT level, id, path, lpath FROM (
    SELECT level, id, path, lpath, row_number() OVER (PARTITION BY level ORDER BY random()) AS r
    FROM acc WHERE level IN (1, 2)) s
WHERE (level = 1 AND r <= 200) OR (level = 2 AND r <= 1000);
CREATE TABLE pairs AS
WITH x AS (SELECT a.*, CASE WHEN r.coin < 0.5 AND a.level > 1
                            THEN (tenancy.labels(a.path))[1 + floor(r.pick * (a.level - 1))::int]
                            ELSE r.other END AS yid
           FROM (SELECT 1 + floor(random() * (:accounts))::bigint AS xid, random() AS coin, random() AS pick,
                        1 + floor(random() * (:accounts))::bigint AS other
                 FROM generate_series(1, 10000)) r
           JOIN acc a ON a.id = r.xid)
SELECT x.id AS x_id, y.id AS y_id, x.path AS x_path, y.path AS y_path, x.lpath AS x_lpath, y.lpath AS y_lpath
FROM x JOIN acc y ON y.id = x.yid;

VACUUM ANALYZE acc, acc_ordered, big_path, big_ltree, subtree_keys, pairs;
SELECT count(*) AS accounts, count(*) FILTER (WHERE level = 1) AS main_accounts,
       max(tenancy.nlevel(path)) AS depth,
       (SELECT count(*) FROM big_path) AS big_rows, (SELECT count(*) FROM pairs) AS pairs
FROM acc;
