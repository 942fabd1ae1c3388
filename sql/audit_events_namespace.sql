-- audit_event(): a client records only app.* events, with a role that may
-- write the account's settings, and a detail of at most 8 kB; every other
-- action name (api.request, login.*, insert/update/delete, ...) is the
-- system's: the gateway's login role (a member of tenancy_gateway) and
-- superusers. A refusal writes nothing.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS evns;
GRANT USAGE ON SCHEMA evns TO PUBLIC;
-- SQLSTATE and message of a statement, or 'ok' and its result.
CREATE FUNCTION evns.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    EXECUTE q INTO r;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- A 1 MB detail that compresses well, stored (toasted) in a table.
CREATE TABLE evns.big (d jsonb);
INSERT INTO evns.big SELECT jsonb_build_object('pad', repeat('x', 1000000));
GRANT SELECT ON evns.big TO PUBLIC;
SELECT pg_column_size(d) < 100000 AS stored_compressed, tenancy._audit_detail_size(d) > 1000000 AS measured_whole
FROM evns.big;

SELECT tenancy.create_main_account('Ns Main', 'owner@ns.test', 'pw-ns-1') AS main \gset
SELECT a.main_id AS main_id FROM tenancy.accounts a WHERE a.public_id = :'main' \gset
SELECT tenancy.admin_create_api_key(:'main', 'owner key', 'owner') AS owner_key,
       tenancy.admin_create_api_key(:'main', 'admin key', 'admin') AS admin_key,
       tenancy.admin_create_api_key(:'main', 'member key', 'member') AS member_key,
       tenancy.admin_create_api_key(:'main', 'viewer key', 'viewer') AS viewer_key,
       tenancy.admin_create_api_key(:'main', 'sub-user key', 'sub_user') AS sub_user_key \gset
-- A real sub-user session too.
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT tenancy.create_sub_user('sam@ns.test', 'Sam', 'Ray', 'sam-temp-1') AS sam \gset
SELECT tenancy.activate_sub_user(:'sam');
COMMIT;
SELECT substring(body from 'temporary password: (\S+)') AS sam_pw FROM tenancy.outbox
WHERE recipient = 'sam@ns.test' ORDER BY id DESC LIMIT 1 \gset
BEGIN;
SELECT tenancy.login_sub_user('owner@ns.test', 'sam@ns.test', :'sam_pw') IS NOT NULL AS sam_login;
SELECT tenancy.change_password(:'sam_pw', 'sam-own-pass-1');
COMMIT;

-- A client's login role and the gateway's (tenancy.create_client).
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_ns_client') THEN
        PERFORM tenancy.create_client('regress_ns_client');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_ns_gateway') THEN
        PERFORM tenancy.create_client('regress_ns_gateway', NULL, gateway => true);
    END IF;
END $$;
SELECT name, gateway FROM tenancy.clients WHERE name LIKE 'regress_ns_%' ORDER BY name;
SELECT max(id) AS last_before FROM tenancy.audit_log \gset

-- ---- a client -------------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_ns_client;
SELECT session_user, pg_has_role('tenancy_gateway', 'MEMBER') AS gateway_member;
-- System names are refused, whatever the role.
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT a AS action, evns.try(format('SELECT tenancy.audit_event(%L, %L, %L)', a, 'tenancy.accounts', '{"forged": true}')) AS owner_writes
FROM unnest(ARRAY['delete', 'insert', 'login.success', 'login.failure', 'api.request', 'audit.purge',
                  'context.switch', 'App.x', 'apps.x']) a;
-- The app namespace: the owner and an admin may ...
SELECT tenancy.audit_event('app.checkout', 'cart 7', '{"items": 3}') > 0 AS owner_app_event;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'admin_key') IS NOT NULL AS authenticated;
SELECT tenancy.audit_event('app.export.done', 'report 9') > 0 AS admin_app_event;
COMMIT;
-- ... a member, a viewer, a sub_user-role key and a sub-user may not.
SELECT k AS key_role, evns.try(format(
    'SELECT tenancy.authenticate(%L) IS NOT NULL AND tenancy.audit_event(%L, %L) > 0', key, 'app.note', 'x')) AS app_event
FROM (VALUES ('member', :'member_key'), ('viewer', :'viewer_key'), ('sub_user', :'sub_user_key')) v(k, key);
SELECT evns.try(format(
    'SELECT tenancy.login_sub_user(%L, %L, %L) IS NOT NULL AND tenancy.audit_event(%L, %L) > 0',
    'owner@ns.test', 'sam@ns.test', 'sam-own-pass-1', 'app.note', 'x')) AS sub_user_session_app_event;
-- Sizes: detail at most 8 kB of jsonb (also a toasted one, measured whole),
-- target at most 1000 bytes; a name after "app.".
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT evns.try(format('SELECT tenancy.audit_event(%L, %L, jsonb_build_object(%L, repeat(%L, 8000)))',
                       'app.big', 'x', 'pad', 'x')) AS detail_8000_chars,
       evns.try(format('SELECT tenancy.audit_event(%L, %L, jsonb_build_object(%L, repeat(%L, 9000)))',
                       'app.big', 'x', 'pad', 'x')) AS detail_9000_chars,
       evns.try(format('SELECT tenancy.audit_event(%L, %L, (SELECT d FROM evns.big))', 'app.big', 'x')) AS detail_1mb_toasted,
       evns.try(format('SELECT tenancy.audit_event(%L, repeat(%L, 1001))', 'app.big', 'x')) AS target_1001_bytes,
       evns.try(format('SELECT tenancy.audit_event(%L, %L)', 'app.', 'x')) AS no_name;
COMMIT;
RESET SESSION AUTHORIZATION;

-- ---- the gateway -------------------------------------------------------------------------
-- It logs in as its own role and does SET LOCAL ROLE tenancy_app: session_user
-- is what counts. It records every request, a viewer's too, and system names.
SET SESSION AUTHORIZATION regress_ns_gateway;
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT session_user, current_user;
SELECT tenancy.authenticate(:'viewer_key') IS NOT NULL AS authenticated;
SELECT tenancy.audit_event('api.request', 'GET /v1/agents',
    jsonb_build_object('method', 'GET', 'status', 200, 'pad', repeat('x', 9000))) > 0 AS viewer_request_recorded;
-- ... but app.* still needs the permission, and its detail cap is 64 kB.
SELECT evns.try(format('SELECT tenancy.audit_event(%L, %L)', 'app.note', 'x')) AS viewer_app_event,
       evns.try(format('SELECT tenancy.audit_event(%L, %L, jsonb_build_object(%L, repeat(%L, 70000)))',
                       'api.request', 'x', 'pad', 'x')) AS detail_70000_chars;
COMMIT;
RESET SESSION AUTHORIZATION;

-- ---- what was written ----------------------------------------------------------------------
-- Exactly the accepted events; nothing of a refused call.
SELECT action, target, actor_kind,
       CASE WHEN tenancy._audit_detail_size(change) > 8192 THEN 'over 8 kB' ELSE coalesce(change ->> 'items', '-') END AS detail
FROM tenancy.audit_log WHERE main_id = :main_id AND id > :last_before
  AND action NOT IN ('insert', 'update', 'delete', 'login.success', 'api_key.use')
ORDER BY id;
SELECT count(*) AS refused_but_written FROM tenancy.audit_log
WHERE main_id = :main_id AND id > :last_before
  AND (change ? 'forged' OR action = 'app.note' OR target = 'GET /' OR length(target) > 1000
       OR tenancy._audit_detail_size(change) > CASE WHEN action LIKE 'app.%' THEN 8192 ELSE 65536 END);
-- No context: refused as before.
SET SESSION AUTHORIZATION regress_ns_gateway;
SELECT evns.try(format('SELECT tenancy.audit_event(%L, %L)', 'api.request', 'GET /')) AS without_context;
RESET SESSION AUTHORIZATION;
DROP SCHEMA evns CASCADE;
