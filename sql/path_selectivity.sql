-- The planner's row estimates for `<@` (a subtree) and `@>` (the ancestors)
-- on an analyzed account_path column, on the shape of the 1.1 M-account
-- forest of bench/path_vs_ltree: 1,000 main accounts, 10 children each, 3
-- levels below (subtrees of 1,111, 111, 11 and 1 rows), plus 10% NULL rows.
-- Each check compares EXPLAIN's "Plan Rows" with the actual count and prints
-- only whether the estimate is within 2x, so the output does not depend on
-- ANALYZE's random sample. (Before these estimators every subtree here was
-- estimated at 111 rows: a main account's 1,111 rows 10x too low, a leaf
-- 111x too high; all checks but the level-2 ones failed.)
SET search_path = tenancy, public;

-- Account ids as in the benchmark: level by level, each node's 10 children
-- taking the next consecutive ids.
CREATE TABLE forest (id bigint, path account_path);
INSERT INTO forest
SELECT m, to_account_path(ARRAY[m]) FROM generate_series(1, 1000) m
UNION ALL
SELECT l2, to_account_path(ARRAY[m, l2])
FROM generate_series(1, 1000) m, generate_series(1, 10) a, LATERAL (SELECT 1000 + (m - 1) * 10 + a) x(l2)
UNION ALL
SELECT l3, to_account_path(ARRAY[m, l2, l3])
FROM generate_series(1, 1000) m, generate_series(1, 10) a, generate_series(1, 10) b,
     LATERAL (SELECT 1000 + (m - 1) * 10 + a) x(l2), LATERAL (SELECT 11000 + (l2 - 1001) * 10 + b) y(l3)
UNION ALL
SELECT l4, to_account_path(ARRAY[m, l2, l3, l4])
FROM generate_series(1, 1000) m, generate_series(1, 10) a, generate_series(1, 10) b, generate_series(1, 10) c,
     LATERAL (SELECT 1000 + (m - 1) * 10 + a) x(l2), LATERAL (SELECT 11000 + (l2 - 1001) * 10 + b) y(l3),
     LATERAL (SELECT 111000 + (l3 - 11001) * 10 + c) z(l4)
UNION ALL
SELECT NULL, NULL FROM generate_series(1, 111100);
-- The index only makes the actual counts below fast; the estimates come from
-- the column's statistics either way.
CREATE INDEX forest_path ON forest (path);
ANALYZE forest;
SELECT count(*) AS accounts, count(path) AS with_path, max(nlevel(path)) AS depth FROM forest;

-- The estimate of `SELECT * FROM forest WHERE cond` against its actual row
-- count: true when est/2 <= actual <= 2 est.
CREATE FUNCTION pg_temp.estimate_within_2x(cond text, OUT actual bigint, OUT within_2x boolean)
LANGUAGE plpgsql AS $$
DECLARE
    plan json;
    est float8;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT * FROM forest WHERE ' || cond INTO plan;
    est := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::float8;
    EXECUTE 'SELECT count(*) FROM forest WHERE ' || cond INTO actual;
    within_2x := actual <= 2 * est AND est <= 2 * actual;
    IF NOT within_2x THEN  -- shows the figures when the test fails
        RAISE NOTICE '%: estimated % rows, actual %', cond, est, actual;
    END IF;
END $$;

-- Subtrees (path <@ P): main accounts (1,111 rows), level 2 (111), level 3
-- (11), leaves (1).
SELECT kind, p, e.*
FROM (VALUES ('main', '1'), ('main', '17'), ('main', '500'), ('main', '999'), ('main', '1000'),
             ('level 2', '1.1001'), ('level 2', '17.1165'), ('level 2', '640.7399'), ('level 2', '1000.10999'),
             ('level 3', '1.1001.11001'), ('level 3', '17.1165.12641'), ('level 3', '640.7399.74981'),
             ('level 3', '1000.10999.110981'),
             ('leaf', '1.1001.11001.111001'), ('leaf', '17.1165.12641.127401'),
             ('leaf', '640.7399.74981.750801'), ('leaf', '1000.10999.110990.1110900')) v(kind, p),
     LATERAL pg_temp.estimate_within_2x(format('path <@ %L', p)) e;

-- The same, written the other way round (P @> path).
SELECT kind, p, e.*
FROM (VALUES ('main', '17'), ('level 2', '17.1165'), ('level 3', '17.1165.12641'),
             ('leaf', '17.1165.12641.127401')) v(kind, p),
     LATERAL pg_temp.estimate_within_2x(format('%L @> path', p)) e;

-- Ancestors (path @> P, and P <@ path): at most depth(P) rows.
SELECT kind, p, e.*
FROM (VALUES ('main', '17'), ('level 2', '17.1165'), ('level 3', '640.7399.74981'),
             ('leaf', '17.1165.12641.127401'), ('leaf', '1000.10999.110990.1110900')) v(kind, p),
     LATERAL pg_temp.estimate_within_2x(format('path @> %L', p)) e;
SELECT kind, p, e.*
FROM (VALUES ('level 2', '17.1165'), ('leaf', '1.1001.11001.111001')) v(kind, p),
     LATERAL pg_temp.estimate_within_2x(format('%L <@ path', p)) e;

-- A column where paths repeat (rows per account, as usage records): three
-- main accounts' subtrees, one level-2 subtree three more times, and one leaf
-- with 2,000 rows (a most common value). Small enough that ANALYZE reads all
-- of it.
CREATE TABLE usage_rows (path account_path);
INSERT INTO usage_rows SELECT path FROM forest WHERE path <@ '17' OR path <@ '18' OR path <@ '19';
INSERT INTO usage_rows SELECT f.path FROM forest f, generate_series(1, 3) WHERE f.path <@ '17.1165';
INSERT INTO usage_rows SELECT '20.1191.12911.129111' FROM generate_series(1, 2000);
ANALYZE usage_rows;
CREATE FUNCTION pg_temp.usage_estimate_within_2x(cond text, OUT actual bigint, OUT within_2x boolean)
LANGUAGE plpgsql AS $$
DECLARE
    plan json;
    est float8;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT * FROM usage_rows WHERE ' || cond INTO plan;
    est := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::float8;
    EXECUTE 'SELECT count(*) FROM usage_rows WHERE ' || cond INTO actual;
    within_2x := actual <= 2 * est AND est <= 2 * actual;
    IF NOT within_2x THEN
        RAISE NOTICE '%: estimated % rows, actual %', cond, est, actual;
    END IF;
END $$;
SELECT c, e.*
FROM (VALUES ('path <@ ''17'''), ('path <@ ''18'''), ('path <@ ''20'''), ('path <@ ''17.1165'''),
             ('path <@ ''17.1166'''), ('path <@ ''17.1165.12641'''), ('path <@ ''18.1171.12701.128001'''),
             ('path <@ ''20.1191.12911.129111'''), ('path @> ''20.1191.12911.129111'''),
             ('path @> ''17.1165.12641.127401''')) v(c),
     LATERAL pg_temp.usage_estimate_within_2x(c) e;

DROP TABLE forest, usage_rows;
