-- path_vs_ltree: the measurements. All timing is inside the server
-- (clock_timestamp() around PL/pgSQL loops or single statements), never
-- client round trips. Each figure is the best of several runs after a warm-up
-- run, to damp the noise of a shared machine.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;  -- (c) measures one process's per-row cost
SET jit = off;
SET search_path = public;
DROP TABLE IF EXISTS bench_result;
CREATE TABLE bench_result (test text, variant text, value float8, unit text, check_value bigint);

-- Times fn(args) `runs` times (plus one warm-up) and keeps the best.
CREATE OR REPLACE FUNCTION pg_temp.best_of(runs int, q text) RETURNS TABLE (ms float8, result bigint)
LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; r bigint; best float8 := 'Infinity'; this float8;
BEGIN
    EXECUTE q INTO r;  -- warm-up
    FOR i IN 1 .. runs LOOP
        t0 := clock_timestamp();
        EXECUTE q INTO r;
        this := extract(epoch FROM clock_timestamp() - t0) * 1000;
        best := least(best, this);
    END LOOP;
    ms := best; result := r;
    RETURN NEXT;
END $$;

-- (a) subtree count: one query per key, keys of one level, loop inside PL/pgSQL
-- (static SQL: the plan is prepared once, the key is a parameter).
CREATE OR REPLACE FUNCTION pg_temp.a_path(lvl int, heap bool) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE keys tenancy.account_path[] := ARRAY(SELECT path FROM subtree_keys WHERE level = lvl ORDER BY id);
        k tenancy.account_path; n bigint; total bigint := 0;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        IF heap THEN
            SELECT count(parent_id) INTO n FROM acc WHERE path OPERATOR(tenancy.<@) k;
        ELSE
            SELECT count(*) INTO n FROM acc WHERE path OPERATOR(tenancy.<@) k;
        END IF;
        total := total + n;
    END LOOP;
    RETURN total;
END $$;
CREATE OR REPLACE FUNCTION pg_temp.a_ltree(lvl int, heap bool) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE keys ltree[] := ARRAY(SELECT lpath FROM subtree_keys WHERE level = lvl ORDER BY id);
        k ltree; n bigint; total bigint := 0;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        IF heap THEN
            SELECT count(parent_id) INTO n FROM acc WHERE lpath <@ k;
        ELSE
            SELECT count(*) INTO n FROM acc WHERE lpath <@ k;
        END IF;
        total := total + n;
    END LOOP;
    RETURN total;
END $$;
CREATE OR REPLACE FUNCTION pg_temp.a_cte(lvl int, heap bool) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE keys bigint[] := ARRAY(SELECT id FROM subtree_keys WHERE level = lvl ORDER BY id);
        k bigint; n bigint; total bigint := 0;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        WITH RECURSIVE t(id, parent_id) AS (
            SELECT id, parent_id FROM acc WHERE id = k
            UNION ALL
            SELECT a.id, a.parent_id FROM acc a JOIN t ON a.parent_id = t.id)
        SELECT count(*) INTO n FROM t;
        total := total + n;
    END LOOP;
    RETURN total;
END $$;

-- The plans (a sample key of each level).
SELECT path AS main_path, lpath AS main_lpath, id AS main_id FROM subtree_keys WHERE level = 1 ORDER BY id LIMIT 1 \gset
EXPLAIN (COSTS OFF) SELECT count(*) FROM acc WHERE path OPERATOR(tenancy.<@) :'main_path';
EXPLAIN (COSTS OFF) SELECT count(parent_id) FROM acc WHERE path OPERATOR(tenancy.<@) :'main_path';
EXPLAIN (COSTS OFF) SELECT count(*) FROM acc WHERE lpath <@ :'main_lpath';

INSERT INTO bench_result
SELECT 'a_' || lvl || CASE WHEN heap THEN '_heap' ELSE '' END, v, b.ms / (SELECT count(*) FROM subtree_keys WHERE level = lvl),
       'ms/query', b.result
FROM (VALUES (1), (2)) l(lvl), (VALUES (false), (true)) h(heap),
     (VALUES ('account_path'), ('ltree_gist'), ('recursive_cte')) vv(v),
     LATERAL pg_temp.best_of(5, format('SELECT pg_temp.%s(%s, %L)',
         CASE v WHEN 'account_path' THEN 'a_path' WHEN 'ltree_gist' THEN 'a_ltree' ELSE 'a_cte' END,
         lvl, heap)) b
WHERE NOT (heap AND v = 'recursive_cte');

-- (e) subtree rows: the same keys, each query reading the subtree's rows
-- from the heap, from the table in random order (acc) and from one in
-- subtree order (acc_ordered). Two ways: 'text' turns each whole row into
-- text as for a client (sum(length(row::text)) keeps the transfer out of the
-- figure); 'cols' only reads two columns (sum(parent_id + level)). No
-- index-only scan is possible in either.
CREATE OR REPLACE FUNCTION pg_temp.e_path(lvl int, ordered bool, whole bool) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE keys tenancy.account_path[] := ARRAY(SELECT path FROM subtree_keys WHERE level = lvl ORDER BY id);
        k tenancy.account_path; n bigint; total bigint := 0;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        IF ordered AND whole THEN
            SELECT sum(length(a::text)) INTO n FROM acc_ordered a WHERE path OPERATOR(tenancy.<@) k;
        ELSIF ordered THEN
            SELECT sum(parent_id + level) INTO n FROM acc_ordered a WHERE path OPERATOR(tenancy.<@) k;
        ELSIF whole THEN
            SELECT sum(length(a::text)) INTO n FROM acc a WHERE path OPERATOR(tenancy.<@) k;
        ELSE
            SELECT sum(parent_id + level) INTO n FROM acc a WHERE path OPERATOR(tenancy.<@) k;
        END IF;
        total := total + coalesce(n, 0);
    END LOOP;
    RETURN total;
END $$;
CREATE OR REPLACE FUNCTION pg_temp.e_ltree(lvl int, ordered bool, whole bool) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE keys ltree[] := ARRAY(SELECT lpath FROM subtree_keys WHERE level = lvl ORDER BY id);
        k ltree; n bigint; total bigint := 0;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        IF ordered AND whole THEN
            SELECT sum(length(a::text)) INTO n FROM acc_ordered a WHERE lpath <@ k;
        ELSIF ordered THEN
            SELECT sum(parent_id + level) INTO n FROM acc_ordered a WHERE lpath <@ k;
        ELSIF whole THEN
            SELECT sum(length(a::text)) INTO n FROM acc a WHERE lpath <@ k;
        ELSE
            SELECT sum(parent_id + level) INTO n FROM acc a WHERE lpath <@ k;
        END IF;
        total := total + coalesce(n, 0);
    END LOOP;
    RETURN total;
END $$;
EXPLAIN (COSTS OFF) SELECT sum(length(a::text)) FROM acc a WHERE path OPERATOR(tenancy.<@) :'main_path';
EXPLAIN (COSTS OFF) SELECT sum(length(a::text)) FROM acc_ordered a WHERE path OPERATOR(tenancy.<@) :'main_path';
EXPLAIN (COSTS OFF) SELECT sum(length(a::text)) FROM acc a WHERE lpath <@ :'main_lpath';
EXPLAIN (COSTS OFF) SELECT sum(length(a::text)) FROM acc_ordered a WHERE lpath <@ :'main_lpath';
INSERT INTO bench_result
SELECT 'e_rows_' || lvl || CASE WHEN whole THEN '_text' ELSE '_cols' END
       || CASE WHEN ordered THEN '_subtree_order' ELSE '_random_order' END, v,
       b.ms / (SELECT count(*) FROM subtree_keys WHERE level = lvl), 'ms/query', b.result
FROM (VALUES (1), (2)) l(lvl), (VALUES (false), (true)) o(ordered), (VALUES (false), (true)) w(whole),
     (VALUES ('account_path'), ('ltree_gist')) vv(v),
     LATERAL pg_temp.best_of(5, format('SELECT pg_temp.%s(%s, %L, %L)',
         CASE v WHEN 'account_path' THEN 'e_path' ELSE 'e_ltree' END, lvl, ordered, whole)) b;

-- (b) 10,000 "is X under Y" checks, one statement each: the operator on two
-- stored values, and from two account ids (two primary-key lookups + test).
INSERT INTO bench_result
SELECT 'b_' || t, v, b.ms * 1000 / (SELECT count(*) FROM pairs), 'us/check', b.result
FROM (VALUES
    ('values', 'account_path', $$SELECT count(*) FROM pairs WHERE x_path OPERATOR(tenancy.<@) y_path$$),
    ('values', 'ltree_gist', $$SELECT count(*) FROM pairs WHERE x_lpath <@ y_lpath$$),
    ('ids', 'account_path', $$SELECT count(*) FROM pairs p WHERE (SELECT path FROM acc WHERE id = p.x_id)
                               OPERATOR(tenancy.<@) (SELECT path FROM acc WHERE id = p.y_id)$$),
    ('ids', 'ltree_gist', $$SELECT count(*) FROM pairs p WHERE (SELECT lpath FROM acc WHERE id = p.x_id)
                              <@ (SELECT lpath FROM acc WHERE id = p.y_id)$$),
    ('ids', 'recursive_cte', $$SELECT count(*) FROM pairs p WHERE EXISTS (
        WITH RECURSIVE up(id, parent_id) AS (
            SELECT id, parent_id FROM acc WHERE id = p.x_id
            UNION ALL SELECT a.id, a.parent_id FROM acc a JOIN up ON a.id = up.parent_id)
        SELECT 1 FROM up WHERE up.id = p.y_id)$$)
) q(t, v, sql), LATERAL pg_temp.best_of(5, sql) b;

-- (c) sequential scan of 5,000,000 rows filtering `path <@ const` (a main
-- account): the filter's own cost is the scan time minus the same scan with
-- no filter, per row. (The unfiltered scan also feeds every row to count(*),
-- so this slightly understates both filters' cost by the same amount.)
SELECT path AS c_path, lpath AS c_lpath FROM acc WHERE id = 17 \gset
EXPLAIN (COSTS OFF) SELECT count(*) FROM big_path WHERE path OPERATOR(tenancy.<@) :'c_path';
-- The scans interleaved, 15 rounds. Scan times: best of the rounds. Costs:
-- the median over rounds of the difference between the scans of one round
-- (consecutive, so they share the machine's load of the moment). Other processes on a
-- shared machine slow some rounds down, never speed one up.
SELECT count(*) AS big_rows FROM big_path \gset
CREATE TEMP TABLE c_runs (round int, v text, f bool, ms float8, result bigint);
DO $$
DECLARE q record; t0 timestamptz; r bigint; this float8;
BEGIN
    -- f: no filter (false), the filter (true), or the filter twice (NULL:
    -- `p <@ A OR p <@ B`, both evaluated for nearly every row) whose extra
    -- time is the marginal cost of one more operator call.
    CREATE TEMP TABLE c_queries AS
    SELECT v, f, format('SELECT count(*) FROM %I %s', tbl,
                        CASE WHEN f THEN 'WHERE ' || cond WHEN f IS NULL THEN 'WHERE ' || cond || ' OR ' || cond2
                             ELSE '' END) AS sql
    FROM (VALUES ('account_path', 'big_path',
                  format('path OPERATOR(tenancy.<@) %L', (SELECT path FROM acc WHERE id = 17)),
                  format('path OPERATOR(tenancy.<@) %L', (SELECT path FROM acc WHERE id = 18))),
                 ('ltree_gist', 'big_ltree', format('lpath <@ %L', (SELECT lpath FROM acc WHERE id = 17)),
                  format('lpath <@ %L', (SELECT lpath FROM acc WHERE id = 18)))) x(v, tbl, cond, cond2),
         (VALUES (false), (true), (NULL)) ff(f);
    FOR round IN 0 .. 15 LOOP
        FOR q IN SELECT * FROM c_queries ORDER BY v, f NULLS LAST LOOP
            t0 := clock_timestamp();
            EXECUTE q.sql INTO r;
            this := extract(epoch FROM clock_timestamp() - t0) * 1000;
            IF round > 0 THEN  -- round 0 warms the cache
                INSERT INTO c_runs VALUES (round, q.v, q.f, this, r);
            END IF;
        END LOOP;
    END LOOP;
END $$;
CREATE TEMP TABLE c_best AS SELECT v, f, min(ms) AS ms, min(result) AS result FROM c_runs GROUP BY v, f;
INSERT INTO bench_result
SELECT 'c_scan_bare', v, ms, 'ms', result FROM c_best WHERE NOT f
UNION ALL SELECT 'c_scan_filter', v, ms, 'ms', result FROM c_best WHERE f
UNION ALL SELECT 'c_filter_cost', a.v, percentile_cont(0.5) WITHIN GROUP (ORDER BY a.ms - b.ms) * 1e6 / :big_rows,
                 'ns/row', min(a.result)
FROM c_runs a JOIN c_runs b ON a.v = b.v AND a.round = b.round AND a.f AND NOT b.f GROUP BY a.v
UNION ALL SELECT 'c_operator_cost', a.v, percentile_cont(0.5) WITHIN GROUP (ORDER BY a.ms - b.ms) * 1e6 / :big_rows,
                 'ns/call', NULL
FROM c_runs a JOIN c_runs b ON a.v = b.v AND a.round = b.round AND a.f IS NULL AND b.f GROUP BY a.v;

-- (d) index sizes (and the stored value sizes).
INSERT INTO bench_result VALUES
    ('d_index_size', 'account_path', pg_relation_size('acc_path_btree') / 1048576.0, 'MiB', NULL),
    ('d_index_size', 'ltree_gist', pg_relation_size('acc_lpath_gist') / 1048576.0, 'MiB', NULL),
    ('d_index_size', 'ltree_btree', pg_relation_size('acc_lpath_btree') / 1048576.0, 'MiB', NULL),
    ('d_index_size', 'recursive_cte', pg_relation_size('acc_parent') / 1048576.0, 'MiB', NULL);
INSERT INTO bench_result
SELECT 'd_value_size', 'account_path', avg(pg_column_size(path)), 'bytes', NULL::bigint FROM acc
UNION ALL SELECT 'd_value_size', 'ltree_gist', avg(pg_column_size(lpath)), 'bytes', NULL::bigint FROM acc
UNION ALL SELECT 'd_table_size', 'account_path', pg_relation_size('big_path') / 1048576.0, 'MiB', NULL::bigint
UNION ALL SELECT 'd_table_size', 'ltree_gist', pg_relation_size('big_ltree') / 1048576.0, 'MiB', NULL::bigint;
INSERT INTO bench_result SELECT 'd_index_build', variant, ms, 'ms', NULL::bigint FROM index_build;
-- Spread of the (c) rounds: a wide spread means a noisy machine.
SELECT v, f AS filtered, round(min(ms)::numeric, 1) AS min_ms, round(avg(ms)::numeric, 1) AS avg_ms,
       round(max(ms)::numeric, 1) AS max_ms FROM c_runs GROUP BY v, f ORDER BY v, f NULLS LAST;

-- Report: each figure and its ratio against ltree GiST and the recursive CTE
-- (how many times better account_path is; > 1 means account_path wins).
\pset footer off
SELECT r.test, r.variant, round(r.value::numeric, 4) AS value, r.unit, r.check_value AS result
FROM bench_result r ORDER BY r.test, r.variant;
SELECT p.test, round(p.value::numeric, 4) AS account_path, p.unit,
       round((l.value / nullif(p.value, 0))::numeric, 2) AS vs_ltree_gist,
       round((c.value / nullif(p.value, 0))::numeric, 2) AS vs_recursive_cte,
       (l.check_value IS NULL OR l.check_value = p.check_value)
       AND (c.check_value IS NULL OR c.check_value = p.check_value) AS same_result
FROM bench_result p
LEFT JOIN bench_result l ON l.test = p.test AND l.variant = 'ltree_gist'
LEFT JOIN bench_result c ON c.test = p.test AND c.variant = 'recursive_cte'
WHERE p.variant = 'account_path' AND p.test NOT LIKE 'c_scan%'
ORDER BY p.test;
