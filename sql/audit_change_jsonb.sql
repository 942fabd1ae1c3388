-- The change image and row key are written in jsonb's on-disk layout by
-- audit_change.cpp, not by PostgreSQL's jsonb builder. Read them back the
-- ways that depend on that layout: key lookups (a binary search over sorted
-- keys), the offsets stored every 32nd entry of a wide object, nested
-- containers and scalars, containment, and equality with a re-parse of their
-- own text. A wrong byte shows up as a missing key or a different value.
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT tenancy.create_main_account('Jsonb Main', 'owner@jsonb.test', 'pw-jsonb-1') AS main \gset
SELECT a.main_id AS main_id FROM tenancy.accounts a WHERE a.public_id = :'main' \gset
CREATE SCHEMA jsonb_test;
-- 70 integer columns (more than 32 keys: some JEntries hold offsets), names
-- of several lengths and bytes (jsonb sorts keys by length, then bytes), and
-- values of every kind the writer handles.
SELECT format('CREATE TABLE jsonb_test.wide (id int, k2 text, %s, j jsonb, js json, f float8, r real,
    n numeric, b bool, t timestamptz, arr int[], secret_token text, "ZZ" text, "a b" text, "é" text,
    PRIMARY KEY (k2, id))', string_agg(format('c%s int', g), ', ')) FROM generate_series(1, 70) g \gexec
SELECT tenancy.protect('jsonb_test.wide', 'agents');
INSERT INTO jsonb_test.wide (account_path, id, k2, c1, c5, c33, c40, c70, j, js, f, r, n, b, t, arr,
                             secret_token, "ZZ", "a b", "é")
VALUES ((:main_id)::text::tenancy.account_path, 1, 'x', 1, 5, 33, 40, 70,
        '{"z": [1, 2, {"a": null}], "aa": 1.5, "b": "s"}', '{"q": 1, "q": 2}', 1.25, 'NaN', 'NaN', true,
        '2026-12-06 12:00:00+00', '{1,2}', 'tok', 'zz', 'ab', 'e'),
       ((:main_id)::text::tenancy.account_path, 2, 'y', NULL, NULL, NULL, NULL, NULL, '7', '"str"',
        'Infinity', -0.5, 12345678901234567890.123, false, NULL, NULL, NULL, NULL, NULL, NULL),
       ((:main_id)::text::tenancy.account_path, 3, 'z', 3, 3, 3, 3, 3, '[]', '{}', -0.0, 1e-30, -1,
        NULL, NULL, '{}', 's', '', '', '');
UPDATE jsonb_test.wide SET c1 = c1 + 1, j = j || '{"new": true}', f = 3e300, secret_token = 'other';
UPDATE jsonb_test.wide SET (c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17,
    c18, c19, c20, c21, c22, c23, c24, c25, c26, c27, c28, c29, c30, c31, c32, c33, c34, c35, c36, c37,
    c38, c39, c40) = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40) WHERE id = 1;
DELETE FROM jsonb_test.wide WHERE id = 2;

CREATE VIEW jsonb_test.entries AS
    SELECT row_number() OVER (ORDER BY id) AS n, action, row_key, change
    FROM tenancy.audit_log WHERE target = 'jsonb_test.wide';

-- Every image equals the parse of its own text, and every key of every
-- object is found by lookup (binary search) with the value iteration gives.
SELECT n, action, change = change::text::jsonb AS change_reparses,
       row_key = row_key::text::jsonb AS key_reparses,
       (SELECT bool_and(e.change -> side -> k = v)
        FROM jsonb_object_keys(e.change) side, jsonb_each(e.change -> side) kv(k, v)
        WHERE jsonb_typeof(e.change -> side) = 'object') AS lookups_find_every_key,
       (SELECT count(*) FROM jsonb_object_keys(coalesce(change -> 'new', change -> 'old'))) AS columns
FROM jsonb_test.entries e ORDER BY n;

-- Keys in jsonb order: shorter first, then bytewise.
SELECT (SELECT array_agg(k) FROM jsonb_object_keys(row_key) k) AS key_order,
       (SELECT array_agg(k) FROM jsonb_object_keys(change) k) AS top_order,
       (SELECT string_agg(k, ' ') FROM jsonb_object_keys(change -> 'new') k) AS column_order
FROM jsonb_test.entries WHERE n = 1;

-- Values past the 32nd key, and of every kind.
SELECT n, change -> 'new' -> 'c70' AS c70, change -> 'new' -> 'é' AS e, change -> 'new' -> 'a b' AS ab,
       change -> 'new' -> 'j' AS j, change -> 'new' -> 'js' AS js, change -> 'new' -> 'f' AS f,
       change -> 'new' -> 'r' AS r, change -> 'new' -> 'n' AS n_, change -> 'new' -> 'b' AS b,
       change -> 'new' -> 'arr' AS arr, change -> 'redacted' AS redacted
FROM jsonb_test.entries WHERE action = 'insert' ORDER BY n;
SELECT jsonb_typeof(change -> 'new' -> 'f') AS float_kind, jsonb_typeof(change -> 'new' -> 'n') AS numeric_kind,
       jsonb_typeof(change -> 'new' -> 'j') AS scalar_jsonb_kind
FROM jsonb_test.entries WHERE n = 2;

-- Nested containers are searchable and containment works on them.
SELECT n, change @> '{"new": {"j": {"z": [{"a": null}]}}}' AS nested_contains,
       change -> 'new' -> 'j' -> 'z' -> 2 ->> 'a' IS NULL AS deep_lookup, change -> 'new' ? 'j' AS has_j
FROM jsonb_test.entries WHERE action = 'update' AND change -> 'new' ? 'j' ORDER BY n;

-- Updates carry only what changed; the wide one has offsets in both images.
SELECT n, (SELECT count(*) FROM jsonb_object_keys(change -> 'old')) AS old_keys,
       change -> 'old' -> 'c1' AS old_c1, change -> 'new' -> 'c1' AS new_c1,
       change -> 'old' -> 'c38' AS old_c38, change -> 'new' -> 'c38' AS new_c38,
       (change -> 'new' ->> 'f')::float8 AS new_f, change -> 'redacted' AS redacted
FROM jsonb_test.entries WHERE action = 'update' ORDER BY n;
SELECT n, row_key, change -> 'old' -> 'k2' AS k2, change -> 'old' -> 'n' AS n_
FROM jsonb_test.entries WHERE action = 'delete';

-- The sealer's digests read the same values: the chain verifies.
SELECT tenancy.audit_seal() >= 0 AS sealed;
SELECT ok, reason FROM tenancy.audit_verify(:'main');
