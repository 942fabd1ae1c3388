-- Usage records and reports: recording (roles, kinds, bounds, refs), the
-- roll-up per account and per subtree, totals that match the raw records
-- over any range, isolation, append-only records, moves.
\set VERBOSITY terse
SET client_min_messages = warning;
SET TimeZone = 'UTC';
CREATE SCHEMA IF NOT EXISTS utest;
GRANT USAGE ON SCHEMA utest TO PUBLIC;
CREATE OR REPLACE FUNCTION utest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '(acc|usg)_[0-9]+_[0-9a-f]+', '\1_X', 'g');
END $$;
GRANT EXECUTE ON FUNCTION utest.try(text) TO PUBLIC;

SELECT tenancy.create_main_account('Usage Co', 'o@usage.test', 'o-password') AS co \gset
SELECT tenancy.create_main_account('Other Co', 'x@usage.test', 'x-password') AS other \gset
SELECT tenancy.admin_create_api_key(:'co', 'platform') AS co_key \gset
SELECT tenancy.admin_create_api_key(:'other', 'platform') AS other_key \gset
BEGIN;
SELECT tenancy.authenticate(:'co_key') IS NOT NULL AS in_co;
SELECT tenancy.create_account(:'co', 'Region') AS region \gset
SELECT tenancy.create_account(:'region', 'Clinic') AS clinic \gset
SELECT tenancy.create_account(:'co', 'Bravo') AS bravo \gset
COMMIT;
SELECT tenancy.admin_create_api_key(:'co', 'admin', 'admin') AS admin_key \gset
SELECT tenancy.admin_create_api_key(:'co', 'viewer', 'viewer') AS viewer_key \gset
SELECT tenancy.admin_create_api_key(:'co', 'support', 'support_agent') AS support_key \gset
SELECT tenancy.admin_create_api_key(:'co', 'sub', 'sub_user') AS sub_key \gset
SELECT tenancy.admin_create_api_key(:'clinic', 'clinic owner') AS clinic_key \gset

SELECT kind, unit FROM tenancy.usage_kinds ORDER BY kind;
SELECT role, action FROM tenancy.role_permissions WHERE resource = 'usage' ORDER BY role, action;

SET ROLE tenancy_app;
-- ---- recording, as the platform's owner key ----
BEGIN;
SELECT tenancy.authenticate(:'co_key') IS NOT NULL AS platform_in;
SELECT tenancy.record_usage(:'co', 'call_minutes', 10, '2026-10-03 09:00Z') ~ '^usg_[0-9]+_[0-9]+$' AS main_rec;
SELECT tenancy.record_usage(:'region', 'call_minutes', 2.5, '2026-10-03 09:15Z', 'call-r1') AS r1 \gset
SELECT tenancy.record_usage(:'clinic', 'call_minutes', 4.25, '2026-10-31 23:59:59.999Z') IS NOT NULL AS clinic_rec;
SELECT tenancy.record_usage(:'clinic', 'llm_tokens', 1200, '2026-11-01 00:00Z') IS NOT NULL AS clinic_nov;
SELECT tenancy.record_usage(:'bravo', 'llm_tokens', 800, '2026-10-15 12:30Z') IS NOT NULL AS bravo_rec;
SELECT tenancy.record_usage(:'bravo', 'sms_messages', 3, '2026-09-30 23:00Z') IS NOT NULL AS bravo_sep;
-- a retried ref: the same record, nothing new
SELECT tenancy.record_usage(:'region', 'call_minutes', 2.5, '2026-10-03 09:15Z', 'call-r1') = :'r1' AS retry_same_id;
SELECT tenancy.record_usage(:'region', 'call_minutes', 2.5, now(), 'call-r1') = :'r1' AS retry_other_time_same_id;
SELECT utest.try(format('SELECT tenancy.record_usage(%L, ''call_minutes'', 3, ''2026-10-03 09:15Z'', ''call-r1'')', :'region')) AS ref_other_quantity;
-- the same ref under another kind or account is another record
SELECT tenancy.record_usage(:'region', 'llm_tokens', 50, '2026-10-03 09:15Z', 'call-r1') <> :'r1' AS ref_other_kind;
SELECT count(*) AS region_records FROM tenancy.usage_records u
WHERE u.account_path OPERATOR(tenancy.=) (SELECT path FROM tenancy.accounts WHERE public_id = :'region');
COMMIT;

-- ---- hostile inputs: refused, nothing recorded ----
BEGIN;
SELECT tenancy.authenticate(:'co_key') IS NOT NULL AS platform_in;
SELECT count(*) AS before FROM tenancy.usage_records \gset
SELECT utest.try(format('SELECT tenancy.record_usage(%L, %L, 1)', :'co', k)) AS bad_kind
FROM unnest(ARRAY['call_seconds', 'CALL_MINUTES', '', 'llm_tokens; drop table x']) AS k;
SELECT utest.try(format('SELECT tenancy.record_usage(%L, NULL, 1)', :'co')) AS null_kind;
SELECT utest.try(format('SELECT tenancy.record_usage(%L, ''llm_tokens'', %s)', :'co', q)) AS bad_quantity
FROM unnest(ARRAY['-1', '''NaN''', '1e13', '0.0000001', 'NULL', '''Infinity''']) AS q;
SELECT utest.try(format('SELECT tenancy.record_usage(%L, ''llm_tokens'', 1, %s)', :'co', t)) AS bad_time
FROM unnest(ARRAY['now() + interval ''1 hour''', '''1999-12-31Z''', '''infinity''']) AS t;
SELECT utest.try(format('SELECT tenancy.record_usage(%L, ''llm_tokens'', 1, now(), %L)', :'co', r)) AS bad_ref
FROM unnest(ARRAY['', repeat('r', 201)]) AS r;
SELECT utest.try(format('SELECT tenancy.record_usage(%L, ''llm_tokens'', 1)', a)) AS bad_account
FROM unnest(ARRAY[:'other', 'acc_999999_000000000000', 'nonsense', NULL]) AS a;
SELECT count(*) - :before AS recorded_by_hostile FROM tenancy.usage_records;
-- clients write only through record_usage
SELECT utest.try(format('INSERT INTO tenancy.usage_records (account_path, kind, quantity) '
                        'SELECT path, ''llm_tokens'', 1 FROM tenancy.accounts WHERE public_id = %L', :'co')) AS direct_insert;
SELECT utest.try('UPDATE tenancy.usage_records SET quantity = 0') AS direct_update;
SELECT utest.try('DELETE FROM tenancy.usage_records') AS direct_delete;
SELECT utest.try('INSERT INTO tenancy.usage_totals VALUES (''month'', now(), ''1'', ''llm_tokens'', 1, 1)') AS direct_totals;
COMMIT;

-- ---- reports ----
BEGIN;
SELECT tenancy.authenticate(:'co_key') IS NOT NULL AS platform_in;
SELECT 'main subtree Oct' AS report, * FROM tenancy.usage_report(:'co', '2026-10-01Z', '2026-11-01Z');
SELECT 'main alone Oct' AS report, * FROM tenancy.usage_report(:'co', '2026-10-01Z', '2026-11-01Z', false);
SELECT 'region subtree Oct' AS report, * FROM tenancy.usage_report(:'region', '2026-10-01Z', '2026-11-01Z');
SELECT 'region alone Oct' AS report, * FROM tenancy.usage_report(:'region', '2026-10-01Z', '2026-11-01Z', false);
SELECT 'clinic Oct' AS report, * FROM tenancy.usage_report(:'clinic', '2026-10-01Z', '2026-11-01Z');
SELECT 'main Sep-Nov' AS report, * FROM tenancy.usage_report(:'co', '2026-09-01Z', '2026-12-01Z');
-- ragged ends: to the millisecond
SELECT 'clinic last ms of Oct' AS report, * FROM tenancy.usage_report(:'clinic', '2026-10-31 23:59:59.999Z', '2026-11-01Z');
SELECT 'main 09:00-09:15' AS report, * FROM tenancy.usage_report(:'co', '2026-10-03 09:00Z', '2026-10-03 09:15Z');
SELECT 'empty range' AS report, * FROM tenancy.usage_report(:'co', '2020-01-01Z', '2020-02-01Z');
SELECT utest.try(format('SELECT tenancy.usage_report(%L, %s, %s)', :'co', f, t)) AS bad_range
FROM (VALUES ('''2026-11-01Z''', '''2026-10-01Z'''), ('''2026-10-01Z''', '''2026-10-01Z'''),
             ('NULL', '''2026-10-01Z'''), ('''-infinity''', 'now()'),
             ('''1900-01-01Z''', '''2100-01-01Z''')) AS r(f, t);
SELECT utest.try(format('SELECT tenancy.usage_report(%L, ''2026-10-01Z'', ''2026-11-01Z'')', a)) AS report_elsewhere
FROM unnest(ARRAY[:'other', 'acc_999999_000000000000']) AS a;
COMMIT;
RESET ROLE;

-- How a range splits: whole UTC months, then days, then the raw ends.
SELECT * FROM tenancy._usage_cover('2026-10-01Z', '2026-11-01Z');
SELECT * FROM tenancy._usage_cover('2026-09-29 22:30Z', '2026-11-02 01:45Z');
SELECT * FROM tenancy._usage_cover('2026-10-03 09:10Z', '2026-10-03 09:20Z');

-- ---- the roll-up equals a plain GROUP BY over the raw rows, for any range ----
-- A wide level under Bravo (110 accounts, by the DBA) so that reports of the
-- main account and of Bravo read their ragged ends from the main account's
-- time slice, and those of Region and Clinic through their own paths.
INSERT INTO tenancy.accounts (path, public_id, name, plan)
SELECT b.path OPERATOR(tenancy.||) x.id, format('acc_%s_%s', b.main_id, lpad(to_hex(x.id), 12, '0')),
       'wide ' || x.g, 'standard'
FROM tenancy.accounts b,
     LATERAL (SELECT nextval('tenancy.account_id_seq') AS id, g FROM generate_series(1, 110) AS g) x
WHERE b.public_id = :'bravo';
-- A batch of records in one statement (the fold trigger sums it per bucket).
SELECT setseed(0.19);
INSERT INTO tenancy.usage_records (account_path, kind, quantity, at)
SELECT a.path, (ARRAY['call_minutes', 'llm_tokens', 'stt_minutes'])[1 + (i % 3)],
       round((random() * 100)::numeric, 3),
       '2026-09-01Z'::timestamptz + random() * interval '91 days'
FROM generate_series(1, 3000) AS i
JOIN LATERAL (SELECT path FROM tenancy.accounts
              WHERE main_id = tenancy.root_id((SELECT path FROM tenancy.accounts WHERE public_id = :'co'))
              ORDER BY path OFFSET i % 24 LIMIT 1) a ON true;
CREATE TEMP TABLE totals_by_trigger AS SELECT * FROM tenancy.usage_totals;
SELECT tenancy.usage_rebuild() > 0 AS rebuilt;
SELECT count(*) AS fold_differs_from_rebuild FROM (
    (SELECT * FROM totals_by_trigger EXCEPT SELECT * FROM tenancy.usage_totals)
    UNION ALL (SELECT * FROM tenancy.usage_totals EXCEPT SELECT * FROM totals_by_trigger)) d;

BEGIN;
SELECT tenancy.authenticate(:'co_key') IS NOT NULL AS platform_in;
CREATE TEMP TABLE ranges AS
SELECT r.n, a.public_id AS account, a.path, r.f, r.f + r.len AS t, (r.n % 5 <> 0) AS subtree
FROM (SELECT n, '2026-08-25Z'::timestamptz + random() * interval '100 days' AS f,
             CASE n % 4 WHEN 0 THEN random() * interval '3 hours'
                        WHEN 1 THEN random() * interval '5 days'
                        WHEN 2 THEN interval '1 month'
                        ELSE random() * interval '80 days' END + interval '1 second' AS len
      FROM generate_series(1, 200) AS n) r
JOIN LATERAL (SELECT public_id, path FROM tenancy.accounts
              WHERE main_id = tenancy.root_id((SELECT path FROM tenancy.accounts WHERE public_id = :'co'))
              ORDER BY path OFFSET r.n % 6 LIMIT 1) a ON true;
-- aligned ranges too: whole months and days
INSERT INTO ranges SELECT 1000 + n, :'co', (SELECT path FROM tenancy.accounts WHERE public_id = :'co'),
    '2026-09-01Z'::timestamptz + (n || ' days')::interval, '2026-10-01Z'::timestamptz + (n || ' days')::interval, true
FROM generate_series(0, 40) AS n;
SELECT count(*) AS ranges, count(*) FILTER (WHERE EXISTS (
    (SELECT * FROM tenancy.usage_report(r.account, r.f, r.t, r.subtree)
     EXCEPT
     SELECT u.kind, sum(u.quantity) FROM tenancy.usage_records u
     WHERE (u.account_path OPERATOR(tenancy.<@) r.path AND r.subtree OR u.account_path OPERATOR(tenancy.=) r.path)
       AND u.at >= r.f AND u.at < r.t GROUP BY u.kind)
    UNION ALL
    (SELECT u.kind, sum(u.quantity) FROM tenancy.usage_records u
     WHERE (u.account_path OPERATOR(tenancy.<@) r.path AND r.subtree OR u.account_path OPERATOR(tenancy.=) r.path)
       AND u.at >= r.f AND u.at < r.t GROUP BY u.kind
     EXCEPT
     SELECT * FROM tenancy.usage_report(r.account, r.f, r.t, r.subtree)))) AS mismatches
FROM ranges r;
COMMIT;

-- ---- who reads: roles, subtree, isolation ----
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'viewer_key') IS NOT NULL AS viewer_in;
SELECT count(*) > 0 AS viewer_reads_report FROM tenancy.usage_report(:'co', '2026-09-01Z', '2026-12-01Z');
SELECT utest.try(format('SELECT tenancy.record_usage(%L, ''llm_tokens'', 1)', :'co')) AS viewer_records;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'sub_key') IS NOT NULL AS sub_user_in;
SELECT count(*) > 0 AS sub_user_reads_report FROM tenancy.usage_report(:'co', '2026-09-01Z', '2026-12-01Z');
SELECT utest.try(format('SELECT tenancy.record_usage(%L, ''llm_tokens'', 1)', :'co')) AS sub_user_records;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'support_key') IS NOT NULL AS support_in;
SELECT utest.try(format('SELECT tenancy.usage_report(%L, ''2026-09-01Z'', ''2026-12-01Z'')', :'co')) AS support_reads_report;
SELECT count(*) AS support_sees_records FROM tenancy.usage_records;
SELECT count(*) AS support_sees_totals FROM tenancy.usage_totals;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'admin_key') IS NOT NULL AS admin_in;
SELECT tenancy.record_usage(:'bravo', 'tts_characters', 5000, '2026-10-20Z') IS NOT NULL AS admin_records;
COMMIT;
-- the clinic's own key: its subtree only; a parent is "not found" like a missing account
BEGIN;
SELECT tenancy.authenticate(:'clinic_key') IS NOT NULL AS clinic_in;
SELECT 'clinic by its key' AS report, * FROM tenancy.usage_report(:'clinic', '2026-10-01Z', '2026-11-01Z');
SELECT utest.try(format('SELECT tenancy.usage_report(%L, ''2026-10-01Z'', ''2026-11-01Z'')', a)) AS clinic_reads_up
FROM unnest(ARRAY[:'region', :'co', :'bravo', 'acc_999999_000000000000']) AS a;
SELECT utest.try(format('SELECT tenancy.record_usage(%L, ''llm_tokens'', 1)', :'region')) AS clinic_records_up;
SELECT count(*) = count(*) FILTER (WHERE u.account_path OPERATOR(tenancy.=) (SELECT path FROM tenancy.accounts WHERE public_id = :'clinic'))
       AS clinic_rows_only, count(*) > 0 AS some
FROM tenancy.usage_records u;
SELECT count(*) = count(*) FILTER (WHERE t.account_path OPERATOR(tenancy.=) (SELECT path FROM tenancy.accounts WHERE public_id = :'clinic'))
       AS clinic_totals_only
FROM tenancy.usage_totals t;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'other_key') IS NOT NULL AS other_in;
SELECT count(*) AS other_sees_records FROM tenancy.usage_records;
SELECT count(*) AS other_sees_totals FROM tenancy.usage_totals;
COMMIT;
-- usage_record(id), the gateway's answer to POST /v1/usage: the record as
-- stored, only where usage_records' policies would show it (NULL otherwise,
-- alike for a hidden, a missing and a malformed id)
BEGIN;
SELECT tenancy.authenticate(:'admin_key') IS NOT NULL AS admin_in;
SELECT tenancy.usage_record(:'r1') - 'id' - 'account' AS r1_as_stored,
       tenancy.usage_record(:'r1')->>'id' = :'r1' AS r1_id,
       tenancy.usage_record(:'r1')->>'account' = :'region' AS r1_account;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'clinic_key') IS NOT NULL AS clinic_in;
SELECT tenancy.usage_record(:'r1') IS NULL AS clinic_cannot_read_up;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'support_key') IS NOT NULL AS support_in;
SELECT tenancy.usage_record(:'r1') IS NULL AS support_cannot_read_usage;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'other_key') IS NOT NULL AS other_in;
SELECT tenancy.usage_record(:'r1') IS NULL AS other_tenant_cannot;
SELECT tenancy.usage_record(x) IS NULL AS malformed, count(*)
FROM unnest(ARRAY['', 'usg_1', 'usg_1_2_3', 'usg_1_9999999999999999999', 'nonsense', NULL]) AS x GROUP BY 1;
COMMIT;
SELECT tenancy.usage_record(:'r1') IS NULL AS no_context_no_record;
RESET ROLE;

-- ---- a move carries records and totals; the bill follows the tree ----
BEGIN;
SELECT tenancy.authenticate(:'co_key') IS NOT NULL AS platform_in;
SELECT 'bravo before' AS report, * FROM tenancy.usage_report(:'bravo', '2026-10-01Z', '2026-11-01Z');
SELECT tenancy.move_account(:'clinic', :'bravo');
SELECT 'bravo after' AS report, * FROM tenancy.usage_report(:'bravo', '2026-10-01Z', '2026-11-01Z');
SELECT 'region after' AS report, * FROM tenancy.usage_report(:'region', '2026-10-01Z', '2026-11-01Z');
COMMIT;

-- ---- the DBA: values never change; a deletion updates the totals ----
SELECT utest.try('UPDATE tenancy.usage_records SET quantity = quantity + 1') AS dba_update;
WITH d AS (DELETE FROM tenancy.usage_records WHERE ref = 'call-r1' AND kind = 'call_minutes' RETURNING 1)
SELECT count(*) AS deleted FROM d;
CREATE TEMP TABLE totals_after_delete AS SELECT * FROM tenancy.usage_totals;
SELECT tenancy.usage_rebuild() > 0 AS rebuilt;
SELECT count(*) AS fold_differs_after_delete FROM (
    (SELECT * FROM totals_after_delete EXCEPT SELECT * FROM tenancy.usage_totals)
    UNION ALL (SELECT * FROM tenancy.usage_totals EXCEPT SELECT * FROM totals_after_delete)) d;
