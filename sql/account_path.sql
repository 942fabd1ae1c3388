-- tenancy.account_path: text and binary I/O, validation, operators, functions.
-- (Index plans: account_path_index.sql; random property tests: account_path_props.sql.)
SET search_path = tenancy, public;

-- Errors are reported with their SQLSTATE, caught like any other error.
CREATE FUNCTION pg_temp.try_path(t text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE detail text;
BEGIN
    RETURN t::tenancy.account_path::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || detail;
END $$;
CREATE FUNCTION pg_temp.try_sql(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE q INTO r;
    RETURN coalesce(r, 'NULL');
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Valid text forms round-trip unchanged (byte-length boundaries included).
SELECT left(t, 40) AS t, length(t), pg_temp.try_path(t) = t AS round_trip
FROM unnest(ARRAY['1', '17.4031.90211', '255', '256', '65535', '65536', '16777215', '16777216',
                  '4294967295', '4294967296', '9223372036854775806', '1.2.3.4.5.6.7.8.9.10',
                  repeat('9223372036854775806.', 63) || '9223372036854775806']) AS t;

-- Every malformed input: a clear error with SQLSTATE 22P02 (syntax) or 22023
-- (limits), never a crash. Shown: SQLSTATE and the error's detail.
SELECT t AS input, pg_temp.try_path(t) AS result
FROM unnest(ARRAY['', '.', '1.', '.1', '1..2', '1.2.', 'a', '1.a', '1.2x', ' 1', '1 ', '1. 2',
                  '-1', '+1', '1.-2', '0', '1.0', '01', '1.007', '00',
                  '9223372036854775807', '9223372036854775808', '18446744073709551616',
                  '99999999999999999999', '1.2e3', '1,2', '1/2', E'1\t2', '１']) AS t;
-- Depth over the limit (64 labels) and overlong input.
SELECT pg_temp.try_path(repeat('1.', 64) || '1') AS depth_65,
       nlevel(pg_temp.try_path(repeat('1.', 63) || '1')::account_path) AS depth_64;
SELECT pg_temp.try_path(repeat('7', 100000)) AS overlong,
       pg_temp.try_path(repeat('12345.', 1000) || '1') AS overlong_dotted;
-- The full message, detail and hint, once.
SELECT '1..2'::account_path;
SELECT (repeat('1.', 64) || '1')::account_path;
-- A long echo is cut at a character boundary (80 bytes, 40 two-byte letters).
SELECT repeat('ä', 100)::account_path;

-- Binary I/O: send gives a version byte and the encoding (length byte, then
-- the id in big-endian bytes)...
SELECT account_path_send('1.2.300'), account_path_send('17.4031.90211'),
       account_path_send('9223372036854775806');
-- ...and receive (through COPY BINARY, which hands each field's bytes to
-- account_path_recv) accepts exactly the canonical encodings.
CREATE TEMP TABLE bin_in (p account_path);
CREATE FUNCTION pg_temp.recv(payload bytea) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    f text := current_setting('data_directory') || '/tenancy_account_path_' || pg_backend_pid() || '.bin';
    r text;
BEGIN
    EXECUTE format('COPY (SELECT %L::bytea) TO %L (FORMAT binary)', payload, f);
    TRUNCATE bin_in;
    EXECUTE format('COPY bin_in FROM %L (FORMAT binary)', f);
    SELECT p::text INTO r FROM bin_in;
    RETURN r;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS r = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || SQLERRM || coalesce(' (' || nullif(r, '') || ')', '');
END $$;
SELECT payload, pg_temp.recv(payload) AS received
FROM unnest(ARRAY[
    '\x010101010202012c',        -- 1.2.300
    '\x01087ffffffffffffffe',    -- the largest label
    '\x',                        -- nothing
    '\x01',                      -- no labels
    '\x020101',                  -- unknown version
    '\x010100',                  -- label 0
    '\x01020001',                -- leading zero byte (non-canonical 1)
    '\x010901020304050607080900', -- length byte 9
    '\x010001',                  -- length byte 0
    '\x010201',                  -- truncated label
    '\x01087fffffffffffffff',    -- INT64_MAX is reserved
    '\x0108ffffffffffffffff',    -- negative as bigint
    '\x0101ff01'                 -- trailing garbage
]::bytea[]) AS payload;
SELECT pg_temp.recv(('\x01' || repeat('0101', 64))::bytea) AS depth_64_bytes,
       pg_temp.recv(('\x01' || repeat('0101', 65))::bytea) AS depth_65_bytes;

-- Operators. <@: left is right or below it; @>: left is right or above it.
SELECT a, b, a <@ b AS "a <@ b", a @> b AS "a @> b", a = b AS eq, a <> b AS ne,
       a < b AS lt, a <= b AS le, a > b AS gt, a >= b AS ge
FROM (VALUES ('1'::account_path, '1'::account_path), ('1.2', '1'), ('1', '1.2'), ('1.2', '1.3'),
             ('12', '1'), ('1.2', '12'), ('1.255', '1.256'), ('1.256', '1.255.9'),
             ('2', '1.9.9.9'), ('17.4031.90211', '17.4031'), ('17.4031', '17.4031.90211')) v(a, b);

-- Functions.
SELECT p, nlevel(p), parent(p), root(p), root_id(p), leaf(p), labels(p), ancestors(p),
       subtree_upper(p)
FROM unnest('{1, 17.4031.90211, 5.255, 9223372036854775806}'::account_path[]) AS p;
SELECT subpath('1.2.3.4', 0) AS s0, subpath('1.2.3.4', 1) AS s1, subpath('1.2.3.4', -1) AS sm1,
       subpath('1.2.3.4', -4) AS sm4, subpath('1.2.3.4', 1, 2) AS s12, subpath('1.2.3.4', 0, 9) AS s09,
       subpath('1.2.3.4', 0, -1) AS s0m1, subpath('1.2.3.4', -3, -1) AS sm3m1,
       subpath('1.2.3.4', 2, 1) AS s21;
SELECT q, pg_temp.try_sql(q) AS result FROM unnest(ARRAY[
    $$SELECT tenancy.subpath('1.2.3.4', 4)::text$$,
    $$SELECT tenancy.subpath('1.2.3.4', -5)::text$$,
    $$SELECT tenancy.subpath('1.2.3.4', 1, 0)::text$$,
    $$SELECT tenancy.subpath('1.2.3.4', 2, -2)::text$$,
    $$SELECT tenancy.subpath('1.2.3.4', 2147483647, 2147483647)::text$$,
    $$SELECT tenancy.subpath('1.2.3.4', -2147483648, -2147483648)::text$$,
    $$SELECT ('1.2'::tenancy.account_path OPERATOR(tenancy.||) 0::bigint)::text$$,
    $$SELECT ('1.2'::tenancy.account_path OPERATOR(tenancy.||) (-5)::bigint)::text$$,
    $$SELECT ('1.2'::tenancy.account_path OPERATOR(tenancy.||) 9223372036854775807::bigint)::text$$,
    $$SELECT (tenancy.to_account_path(array_fill(1::bigint, ARRAY[64])) OPERATOR(tenancy.||) 2::bigint)::text$$,
    $$SELECT (tenancy.to_account_path(array_fill(1::bigint, ARRAY[40]))
              OPERATOR(tenancy.||) tenancy.to_account_path(array_fill(1::bigint, ARRAY[25])))::text$$,
    $$SELECT tenancy.to_account_path('{}')::text$$,
    $$SELECT tenancy.to_account_path('{1,NULL}')::text$$,
    $$SELECT tenancy.to_account_path('{1,0}')::text$$,
    $$SELECT tenancy.to_account_path(array_fill(1::bigint, ARRAY[65]))::text$$,
    $$SELECT tenancy.parent('5')::text$$,
    $$SELECT tenancy.lca('1', '2')::text$$,
    $$SELECT tenancy.lca('1.2', '1.2')::text$$,
    $$SELECT tenancy.lca('{}'::tenancy.account_path[])::text$$,
    $$SELECT tenancy.lca('{1.2.3,NULL}'::tenancy.account_path[])::text$$
]) AS q;
SELECT '1.2'::account_path || '3.4'::account_path AS path_path,
       '1.2'::account_path || 300::bigint AS path_bigint,
       to_account_path('{17,4031,90211}') AS from_labels,
       lca('1.2.3', '1.2.3.4.5.6') AS lca_ancestor, lca('1.2.3', '1.2.4') AS lca_siblings,
       lca('{1.2.3, 1.2.4.5, 1.2.9}'::account_path[]) AS lca_array,
       lca('{7.8.9}'::account_path[]) AS lca_one;

-- Sort order is tree order: each node before its descendants, siblings by id.
SELECT string_agg(p::text, ' ' ORDER BY p)
FROM unnest('{1.2, 1, 2, 1.10, 1.9, 1.2.1, 10, 255, 256, 1.2.1.1, 65536, 1.65535}'::account_path[]) AS p;

-- Markings that RLS and parallel query rely on.
SELECT p.oid::regprocedure AS function, p.proleakproof AS leakproof, p.provolatile AS volatility,
       p.proparallel AS parallel
FROM pg_proc p
WHERE p.pronamespace = 'tenancy'::regnamespace
  AND (p.proargtypes[0] = 'tenancy.account_path'::regtype OR p.prorettype = 'tenancy.account_path'::regtype
       OR p.proname LIKE 'account_path%')
ORDER BY p.oid::regprocedure::text;
SELECT o.oprname, o.oprleft::regtype, o.oprright::regtype, o.oprcom::regoperator AS commutator,
       o.oprnegate::regoperator AS negator, o.oprrest AS restrict, o.oprjoin AS join,
       o.oprcanhash AS hashes, o.oprcanmerge AS merges
FROM pg_operator o
WHERE o.oprleft = 'tenancy.account_path'::regtype
ORDER BY o.oprname, o.oprright::regtype::text;

-- Compressed and out-of-line (TOASTed) values take the detoasting path of
-- every function; results equal those on the plain value.
-- (A plain 2,100-byte column pushes each row over the TOAST threshold, so the
-- path is moved out of line (STORAGE external) or compressed (extended).)
CREATE TEMP TABLE toasted (k int, filler text, p account_path);
ALTER TABLE toasted ALTER COLUMN filler SET STORAGE plain, ALTER COLUMN p SET STORAGE external;
INSERT INTO toasted SELECT 1, repeat('x', 2100), to_account_path(array_fill(7::bigint, ARRAY[64]));
ALTER TABLE toasted ALTER COLUMN p SET STORAGE extended;
INSERT INTO toasted SELECT 2, repeat('x', 2100), to_account_path(array_fill(7::bigint, ARRAY[64]));
INSERT INTO toasted SELECT 3, repeat('x', 2100), to_account_path(array_fill(7::bigint, ARRAY[63]) || 8::bigint);
CREATE TEMP TABLE plain AS SELECT k, p::text::account_path AS p FROM toasted;
SELECT k, pg_column_size(p) AS stored_bytes, pg_column_compression(p) AS compression FROM toasted ORDER BY k;
CREATE FUNCTION pg_temp.toast_chunks(rel regclass) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s', (SELECT reltoastrelid::regclass FROM pg_class WHERE oid = rel)) INTO n;
    RETURN n;
END $$;
SELECT pg_temp.toast_chunks('toasted') AS out_of_line_values;
SELECT t.k,
       t.p = x.p AS eq, t.p <> x.p AS ne, account_path_cmp(t.p, x.p) AS cmp,
       t.p <@ '7.7' AS desc_const, '7.7' @> t.p AS anc_const, t.p @> x.p AS anc, x.p <@ t.p AS desc,
       t.p < '7.8' AS lt, t.p > '7.7.7' AS gt,
       nlevel(t.p), leaf(t.p), root_id(t.p), nlevel(parent(t.p)) AS parent_level,
       t.p::text = x.p::text AS same_text, account_path_hash(t.p) = account_path_hash(x.p) AS same_hash,
       account_path_send(t.p) = account_path_send(x.p) AS same_binary,
       subpath(t.p, 62)::text AS tail, nlevel(lca(t.p, x.p)) AS lca_level, cardinality(ancestors(t.p)) AS ancestors
FROM toasted t JOIN plain x USING (k) ORDER BY t.k;
SELECT string_agg(k::text, ' ' ORDER BY p, k) AS sorted FROM (SELECT k, p FROM toasted UNION ALL SELECT k, p FROM plain) s;
