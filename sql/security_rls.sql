-- Row-level security: parents see their whole subtree; children never see a
-- parent or a sibling; another main account sees nothing. Every tenancy table
-- and a protected application table, for SELECT, INSERT, UPDATE and DELETE.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS regress;
RESET client_min_messages;
GRANT USAGE ON SCHEMA regress TO PUBLIC;
CREATE OR REPLACE FUNCTION regress.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || regexp_replace(regexp_replace(SQLERRM,
        'acc_[0-9]+_[0-9a-f]{12}', 'acc_*', 'g'), 'key_[0-9]+_[0-9]+', 'key_*', 'g');
END $$;

-- The tree:  Main ─┬─ Child ── Grandchild
--                  └─ Sibling          Other (another main account)
SELECT tenancy.create_main_account('Main', 'rls-main@example.test', 'a long enough password') AS m \gset
SELECT tenancy.create_main_account('Other', 'rls-other@example.test', 'a long enough password') AS o \gset
SELECT tenancy.admin_create_api_key(:'m', 'main owner') AS m_key \gset
SELECT tenancy.admin_create_api_key(:'o', 'other owner') AS o_key \gset
BEGIN;
SELECT tenancy.authenticate(:'m_key') IS NOT NULL AS ok;
SELECT tenancy.create_account(:'m', 'Child') AS c \gset
SELECT tenancy.create_account(:'c', 'Grandchild') AS g \gset
SELECT tenancy.create_account(:'m', 'Sibling') AS s \gset
SELECT tenancy.create_api_key(:'c', 'child owner', 'owner') AS c_key \gset
SELECT tenancy.create_api_key(:'g', 'grandchild owner', 'owner') AS g_key \gset
SELECT tenancy.create_api_key(:'s', 'sibling owner', 'owner') AS s_key \gset
SELECT tenancy.create_api_key(:'c', 'child viewer', 'viewer') AS cv_key \gset
COMMIT;

-- An application table put under tenancy.
CREATE TABLE regress.notes (id serial PRIMARY KEY, body text NOT NULL);
SELECT tenancy.protect('regress.notes', 'agents');
\d regress.notes

-- Actors, each with the account it acts in.
CREATE TABLE regress.actors (actor text PRIMARY KEY, key text NOT NULL);
INSERT INTO regress.actors VALUES
    ('main', :'m_key'), ('child', :'c_key'), ('grandchild', :'g_key'), ('sibling', :'s_key'),
    ('other', :'o_key'), ('child viewer', :'cv_key');
GRANT SELECT ON regress.actors TO tenancy_app;

-- Clients log in as their own roles, members of tenancy_app (pg_regress
-- creates regress_client: REGRESS_OPTS in the Makefile).
SET client_min_messages = warning;  -- the grant may be there already
GRANT tenancy_app TO regress_client;
RESET client_min_messages;
\c - regress_client
\set VERBOSITY terse
-- Each actor writes one note in its own account (the column defaults to it).
CREATE FUNCTION pg_temp.as_actor(who text, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tenancy.authenticate((SELECT key FROM regress.actors WHERE actor = who));
    BEGIN
        EXECUTE q;
        GET DIAGNOSTICS n = ROW_COUNT;
        PERFORM tenancy.reset();
        RETURN n || ' rows';
    EXCEPTION WHEN OTHERS THEN
        PERFORM tenancy.reset();
        RETURN SQLSTATE || ' ' || SQLERRM;
    END;
END $$;
SELECT actor, pg_temp.as_actor(actor, format('INSERT INTO regress.notes (body) VALUES (%L)', 'note of ' || actor))
FROM regress.actors ORDER BY actor;

-- What each actor sees.
CREATE FUNCTION pg_temp.view_as(who text) RETURNS TABLE (
    accounts text, notes text, memberships bigint, api_keys bigint, users bigint, plans_readable boolean)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tenancy.authenticate((SELECT key FROM regress.actors WHERE actor = who));
    RETURN QUERY SELECT
        (SELECT string_agg(name, ', ' ORDER BY path) FROM tenancy.accounts),
        (SELECT string_agg(body, ', ' ORDER BY body) FROM regress.notes),
        (SELECT count(*) FROM tenancy.memberships),
        (SELECT count(*) FROM tenancy.api_keys),
        (SELECT count(*) FROM tenancy.users),
        (SELECT count(*) > 0 FROM tenancy.plans);
    PERFORM tenancy.reset();
END $$;
\x on
SELECT actor, v.* FROM regress.actors, pg_temp.view_as(actor) AS v ORDER BY actor;
\x off

-- UPDATE and DELETE reach only the actor's subtree (and need write permission).
SELECT actor, pg_temp.as_actor(actor, 'UPDATE regress.notes SET body = body || ''!''') AS update_all
FROM regress.actors ORDER BY actor;
SELECT actor, pg_temp.as_actor(actor, 'SELECT tenancy.update_account(public_id, name => name || ''*'') FROM tenancy.accounts') AS rename_all
FROM regress.actors ORDER BY actor;
SELECT actor, pg_temp.as_actor(actor, 'DELETE FROM regress.notes WHERE body LIKE ''note of main%''') AS delete_main_note
FROM regress.actors ORDER BY actor;

-- INSERT into an account outside the subtree, or moving a row out of it, is refused.
SELECT pg_temp.as_actor('child', format(
    'INSERT INTO regress.notes (body, account_path) SELECT %L, path FROM tenancy.accounts LIMIT 0', 'x')) AS insert_nothing;
SELECT pg_temp.as_actor('child', format(
    'INSERT INTO regress.notes (body, account_path) VALUES (%L, tenancy.parent(tenancy.current_path()))',
    'into parent')) AS insert_into_parent;
SELECT pg_temp.as_actor('grandchild', format(
    'UPDATE regress.notes SET account_path = tenancy.parent(account_path)')) AS move_row_up;
SELECT pg_temp.as_actor('child', format(
    'UPDATE regress.notes SET account_path = tenancy.current_path() OPERATOR(tenancy.||) 999999::bigint')) AS move_row_to_unknown;
-- A viewer reads but may not write.
SELECT pg_temp.as_actor('child viewer', 'INSERT INTO regress.notes (body) VALUES (''by viewer'')') AS viewer_insert;
-- Tenancy tables are written only through the API.
SELECT pg_temp.as_actor('main', 'INSERT INTO tenancy.accounts (path, public_id, name, plan) VALUES (''999'', ''x'', ''x'', ''standard'')') AS insert_account;
SELECT pg_temp.as_actor('main', 'DELETE FROM tenancy.accounts') AS delete_accounts;
SELECT pg_temp.as_actor('main', 'UPDATE tenancy.accounts SET status = ''inactive''') AS update_status;
SELECT pg_temp.as_actor('main', 'DELETE FROM tenancy.api_keys') AS delete_keys;
SELECT pg_temp.as_actor('main', 'UPDATE tenancy.memberships SET role = ''owner''') AS update_memberships;
SELECT pg_temp.as_actor('main', 'INSERT INTO tenancy.users (email) VALUES (''x@example.test'')') AS insert_user;
-- Every write on every core tenancy table, as the main account's owner.
SELECT t AS tenancy_table,
       pg_temp.as_actor('main', format('INSERT INTO tenancy.%I DEFAULT VALUES', t)) AS insert_row,
       pg_temp.as_actor('main', format('UPDATE tenancy.%I SET %I = %I', t, col, col)) AS update_rows,
       pg_temp.as_actor('main', format('DELETE FROM tenancy.%I', t)) AS delete_rows
FROM unnest(ARRAY['accounts', 'account_forwarding', 'api_keys', 'api_key_secrets', 'api_key_usage',
                  'context_keys', 'memberships', 'plans', 'protected_tables', 'roles',
                  'role_permissions', 'users']) AS t,
     LATERAL (SELECT attname AS col FROM pg_attribute
              WHERE attrelid = ('tenancy.' || t)::regclass AND attnum = 1) AS first_column
ORDER BY t;
-- API functions answer "not found" outside the subtree.
SELECT regexp_replace(pg_temp.as_actor('child', format('SELECT tenancy.create_account(%L, %L)', :'s', 'x')),
                      'acc_[0-9]+_[0-9a-f]{12}', 'acc_*') AS create_under_sibling;
SELECT regexp_replace(pg_temp.as_actor('child', format('SELECT tenancy.create_api_key(%L, %L, %L)', :'m', 'x', 'owner')),
                      'acc_[0-9]+_[0-9a-f]{12}', 'acc_*') AS key_for_parent;
SELECT regexp_replace(pg_temp.as_actor('sibling', format('SELECT tenancy.deactivate_account(%L)', :'g')),
                      'acc_[0-9]+_[0-9a-f]{12}', 'acc_*') AS deactivate_cousin;
SELECT regexp_replace(pg_temp.as_actor('child viewer', format('SELECT tenancy.create_account(%L, %L)', :'c', 'x')),
                      'acc_[0-9]+_[0-9a-f]{12}', 'acc_*') AS viewer_creates;
SELECT regexp_replace(pg_temp.as_actor('other', format('SELECT tenancy.revoke_api_key(%L)',
    (SELECT 'key_' || split_part(:'m_key', '_', 2) || '_' || split_part(:'m_key', '_', 3)))),
    'key_[0-9]+_[0-9]+', 'key_*') AS revoke_foreign_key;

-- Policies let the planner use the account_path index: `<@` against the
-- context becomes a btree range, evaluated once per scan.
\c - postgres
INSERT INTO regress.notes (body, account_path)
SELECT 'bulk ' || i, a.path FROM generate_series(1, 2000) i, tenancy.accounts a
WHERE a.main_id = (SELECT main_id FROM tenancy.accounts WHERE public_id = :'m');
-- VACUUM sets the visibility map, so the plan does not depend on autovacuum.
VACUUM ANALYZE regress.notes;
\c - regress_client
BEGIN;
SELECT tenancy.authenticate(:'g_key') IS NOT NULL AS ok;
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM regress.notes;
SELECT count(*) AS grandchild_notes FROM regress.notes;
COMMIT;
