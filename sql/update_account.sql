-- Accounts for the API (runs after audit.sql, whose expected ids assume it is
-- first to create accounts): get_account() and update_account() (merge patches of
-- branding and settings, validation, permissions, audit), and no direct UPDATE.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS aatest;
RESET client_min_messages;
GRANT USAGE ON SCHEMA aatest TO PUBLIC;
CREATE OR REPLACE FUNCTION aatest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || regexp_replace(SQLERRM, 'acc_[0-9]+_[0-9a-f]{12}', 'acc_*', 'g');
END $$;
-- The stored columns of an account, read as the DBA (to check nothing changed).
CREATE OR REPLACE FUNCTION aatest.row_of(acc text) RETURNS text LANGUAGE sql SECURITY DEFINER AS $$
    SELECT format('%s | %s | %s', name, branding, settings) FROM tenancy.accounts WHERE public_id = acc $$;
GRANT EXECUTE ON FUNCTION aatest.row_of(text) TO PUBLIC;
-- update_account's answer without its varying values (ids, times).
CREATE OR REPLACE FUNCTION aatest.shown(j jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT j - 'id' - 'created_at' - 'updated_at'
           || jsonb_build_object('parent', CASE WHEN j ->> 'parent' IS NULL THEN NULL ELSE 'acc_*' END) $$;

SELECT tenancy.create_main_account('Reseller', 'owner@aa.test', 'owner-password-1') AS r \gset
SELECT tenancy.create_main_account('Other Co', 'other@aa.test', 'other-password-1') AS other \gset
SELECT tenancy.admin_create_api_key(:'r', 'owner') AS r_key \gset
SELECT tenancy.admin_create_api_key(:'r', 'admin', 'admin') AS r_admin \gset
SELECT tenancy.admin_create_api_key(:'r', 'viewer', 'viewer') AS r_viewer \gset
BEGIN;
SELECT tenancy.authenticate(:'r_key') = :'r' AS owner_in;
SELECT tenancy.create_account(:'r', 'Customer A') AS a \gset
SELECT tenancy.create_account(:'a', 'Customer A1') AS a1 \gset
SELECT tenancy.create_account(:'r', 'Customer B') AS b \gset
COMMIT;
SELECT tenancy.admin_create_api_key(:'a', 'a owner') AS a_key \gset

SET client_min_messages = warning;
GRANT tenancy_app TO regress_client;
RESET client_min_messages;
\c - regress_client
\set VERBOSITY terse

-- ---- no direct UPDATE of tenancy.accounts, whatever the role ----
BEGIN;
SELECT tenancy.authenticate(:'r_key') = :'r' AS owner_in;
SELECT aatest.try('UPDATE tenancy.accounts SET name = ''x''') AS update_name;
SELECT aatest.try('UPDATE tenancy.accounts SET settings = ''{"a": 1}''') AS update_settings;
SELECT aatest.try('UPDATE tenancy.accounts SET branding = ''{"name": 1}''') AS update_branding;
COMMIT;

-- ---- get_account ----
SELECT aatest.try(format('SELECT tenancy.get_account(%L)', :'a')) AS no_context;
BEGIN;
SELECT tenancy.authenticate(:'r_key') = :'r' AS owner_in;
SELECT aatest.shown(tenancy.get_account(:'r')) AS main_account;
SELECT aatest.shown(tenancy.get_account(:'a1')) AS grandchild;
SELECT (tenancy.get_account(:'a1') ->> 'parent') = :'a' AS parent_is_a,
       (tenancy.get_account(:'a1') ->> 'id') = :'a1' AS id_is_a1,
       (tenancy.get_account(:'a1') ->> 'created_at')::timestamptz <= now() AS created_at;
-- another tenant's account, a missing one and a malformed one: the same "not found"
SELECT aatest.try(format('SELECT tenancy.get_account(%L)', :'other')) AS other_tenant;
SELECT aatest.try('SELECT tenancy.get_account(''acc_1_000000000000'')') AS missing;
SELECT aatest.try('SELECT tenancy.get_account(''nonsense'')') AS malformed;
COMMIT;
BEGIN;
-- acting in A: A's parent is not shown, the sibling B and the parent are "not found"
SELECT tenancy.authenticate(:'a_key') = :'a' AS a_in;
SELECT aatest.shown(tenancy.get_account(:'a')) AS own_account;
SELECT aatest.try(format('SELECT tenancy.get_account(%L)', :'b')) AS sibling;
SELECT aatest.try(format('SELECT tenancy.get_account(%L)', :'r')) AS parent;
COMMIT;
BEGIN;
-- a change earlier in the same statement is seen (the gateway's one-statement routes)
SELECT tenancy.authenticate(:'r_key') = :'r' AS owner_in;
SELECT tenancy.get_account(d.acc) ->> 'status' AS after_deactivate
FROM (SELECT tenancy.deactivate_account(:'a1'), :'a1' AS acc OFFSET 0) d;
ROLLBACK;

-- ---- update_account: name, and merge patches of branding and settings ----
BEGIN;
SELECT tenancy.authenticate(:'r_key') = :'r' AS owner_in;
SELECT aatest.shown(tenancy.update_account(:'a', name => '  Customer A, Inc.  ')) AS renamed;
SELECT aatest.shown(tenancy.update_account(:'a', branding => '{"name": "A Voice", "logo_url": "https://cdn.example.test/a.png", "colours": {"primary": "#112233", "text": "#fff"}}')) AS branded;
-- a merge: colours.accent added, logo_url removed, the rest kept
SELECT tenancy.update_account(:'a', branding => '{"logo_url": null, "colours": {"accent": "#ABCDEF"}}') -> 'branding' AS merged;
SELECT tenancy.update_account(:'a', settings => '{"voice": {"speed": 1.1, "lang": "en"}, "tags": ["x", "y"]}') -> 'settings' AS settings;
SELECT tenancy.update_account(:'a', settings => '{"voice": {"lang": null, "pitch": 2}, "tags": ["z"]}') -> 'settings' AS settings_merged;
-- nothing given: nothing changes, the account is answered
SELECT aatest.shown(tenancy.update_account(:'a')) AS unchanged;
-- a JSON null removes every override (stored as NULL: inherited again)
SELECT tenancy.update_account(:'a', settings => 'null') -> 'settings' AS settings_cleared;
SELECT aatest.row_of(:'a') AS stored;
-- removing the last key leaves no override either
SELECT tenancy.update_account(:'a1', settings => '{"k": 1}') -> 'settings' AS a1_set;
SELECT tenancy.update_account(:'a1', settings => '{"k": null}') -> 'settings' AS a1_emptied;
SELECT aatest.row_of(:'a1') AS a1_stored;
COMMIT;

-- the audit log recorded the changes, old and new, of the changed columns only
\c - postgres
\set VERBOSITY terse
SELECT actor_kind, action, target,
       (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(change -> 'new') k) AS changed,
       (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(change -> 'old') k) AS old_has
FROM tenancy.audit_log
WHERE target = 'tenancy.accounts' AND action = 'update'
  AND account_path::text = (SELECT path::text FROM tenancy.accounts WHERE public_id = :'a')
ORDER BY id;
SELECT change -> 'old' -> 'branding' AS old_branding, change -> 'new' -> 'branding' AS new_branding
FROM tenancy.audit_log
WHERE target = 'tenancy.accounts' AND action = 'update' AND change -> 'new' ? 'branding'
  AND account_path::text = (SELECT path::text FROM tenancy.accounts WHERE public_id = :'a')
ORDER BY id;
\c - regress_client
\set VERBOSITY terse

-- ---- bad input: a clear error, and the row as it was ----
BEGIN;
SELECT tenancy.authenticate(:'r_key') = :'r' AS owner_in;
SELECT aatest.row_of(:'a') AS before;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L)', :'a', '')) AS empty_name;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L)', :'a', '   ')) AS blank_name;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L)', :'a', repeat('n', 201))) AS long_name;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L)', :'a', E'two\nlines')) AS control_name;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a', '[1]')) AS branding_array;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a', '"blue"')) AS branding_string;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a', '{"font": "Comic"}')) AS branding_unknown_key;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a', '{"name": 7}')) AS branding_name_type;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a', '{"name": ""}')) AS branding_name_empty;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a', '{"logo_url": "javascript:alert(1)"}')) AS logo_script;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a', '{"logo_url": "https://x.test/a b.png"}')) AS logo_space;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a',
    jsonb_build_object('logo_url', 'https://x.test/' || repeat('a', 2040)))) AS logo_long;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a', '{"colours": "red"}')) AS colours_string;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a', '{"colours": {"primary": "red"}}')) AS colour_name;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a', '{"colours": {"glow": "#fff"}}')) AS colour_unknown;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, branding => %L)', :'a',
    jsonb_build_object('name', 'x', 'colours', jsonb_build_object('primary', '#fff'), 'pad', repeat('p', 5000)))) AS branding_huge;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, settings => %L)', :'a', '[]')) AS settings_array;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, settings => %L)', :'a',
    jsonb_build_object('blob', repeat('s', 17000)))) AS settings_huge;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, settings => %L)', :'a',
    repeat('{"a":', 40) || '1' || repeat('}', 40))) AS settings_deep;
-- two patches of 10 kB each: each fits, their merge does not
SELECT tenancy.update_account(:'a', settings => jsonb_build_object('one', repeat('1', 10000))) IS NOT NULL AS first_half;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, settings => %L)', :'a',
    jsonb_build_object('two', repeat('2', 10000)))) AS merged_too_big;
SELECT tenancy.update_account(:'a', settings => '{"one": null}') -> 'settings' AS removed_again;
-- one bad field fails the whole call: the good name is not applied either
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L, branding => %L)', :'a', 'Good name', '{"font": 1}')) AS half_bad;
SELECT aatest.row_of(:'a') AS after;
COMMIT;

-- ---- who may: owners and admins in their subtree ----
BEGIN;
SELECT tenancy.authenticate(:'r_admin') = :'r' AS admin_in;
SELECT tenancy.update_account(:'b', name => 'Customer B (admin)') ->> 'name' AS admin_renames;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'r_viewer') = :'r' AS viewer_in;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L)', :'b', 'by viewer')) AS viewer;
SELECT aatest.shown(tenancy.get_account(:'b')) AS viewer_reads;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'a_key') = :'a' AS a_in;
SELECT tenancy.update_account(:'a1', name => 'A1 by A') ->> 'name' AS own_subtree;
SELECT tenancy.update_account(:'a', settings => '{"own": true}') -> 'settings' AS own_account;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L)', :'b', 'sibling')) AS sibling;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L)', :'r', 'parent')) AS parent;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L)', :'other', 'other')) AS other_tenant;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L)', 'acc_1_000000000000', 'x')) AS missing;
COMMIT;
SELECT aatest.try(format('SELECT tenancy.update_account(%L, name => %L)', :'a', 'no context')) AS no_context;

\c - postgres
SELECT name FROM tenancy.accounts WHERE public_id IN (:'r', :'b', :'other') ORDER BY name;
