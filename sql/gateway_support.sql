-- The gateway's support functions (32_gateway_support.sql): Idempotency-Key
-- storage (idempotency_begin/finish, sealed answers, 24 h, scopes), the
-- batched record of GETs (record_api_reads) and the list-cursor key. All are
-- for the gateway's login role only (a member of tenancy_gateway).
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS gws;
GRANT USAGE ON SCHEMA gws TO PUBLIC;
-- SQLSTATE and message of a statement, or 'ok: ' and its (first) result.
CREATE FUNCTION gws.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    EXECUTE q INTO r;
    RETURN 'ok: ' || coalesce(r, '<null>');
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
GRANT EXECUTE ON FUNCTION gws.try(text) TO PUBLIC;

SELECT tenancy.create_main_account('Gw Main', 'owner@gws.test', 'pw-gws-1') AS main \gset
SELECT a.main_id AS main_id FROM tenancy.accounts a WHERE a.public_id = :'main' \gset
SELECT tenancy.create_main_account('Gw Other', 'owner@gws-other.test', 'pw-gws-2') AS other \gset
SELECT tenancy.admin_create_api_key(:'main', 'gw key', 'owner') AS key_a,
       tenancy.admin_create_api_key(:'main', 'gw key 2', 'viewer') AS key_b,
       tenancy.admin_create_api_key(:'other', 'other key', 'owner') AS key_o \gset
SELECT split_part(:'key_a', '_', 3) AS key_a_id, split_part(:'key_b', '_', 3) AS key_b_id \gset
BEGIN;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT tenancy.create_account(:'main', 'Gw Child') AS child \gset
COMMIT;
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_gws_client') THEN
        PERFORM tenancy.create_client('regress_gws_client');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_gws_gateway') THEN
        PERFORM tenancy.create_client('regress_gws_gateway', NULL, gateway => true);
    END IF;
END $$;
-- The request hashes the gateway would send (SHA-256 of its canonical request).
SELECT tenancy.sha256('POST /v1/accounts body 1') AS h1, tenancy.sha256('POST /v1/accounts body 2') AS h2 \gset

-- ==== Idempotency-Key ======================================================================
SET SESSION AUTHORIZATION regress_gws_gateway;
SELECT session_user, pg_has_role('tenancy_gateway', 'MEMBER') AS gateway_member;
-- First request with key k1: no stored answer (proceed), then the effect and
-- the answer (with a secret in it) in the same transaction.
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT count(*) AS stored_answers FROM tenancy.idempotency_begin('k1', :'h1');
SELECT tenancy.idempotency_finish('k1', :'h1', 201, '{"key": "tnc_the_secret_in_the_answer"}');
COMMIT;
-- The same key and request again: the first answer, nothing run.
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT * FROM tenancy.idempotency_begin('k1', :'h1');
COMMIT;
-- The same key with another request: 22T01 (the gateway's 422
-- idempotency_key_reused).
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT gws.try(format('SELECT tenancy.idempotency_begin(%L, %L)', 'k1', :'h2')) AS other_body;
ROLLBACK;
-- Another principal (key B of the same account) with the same key: its own
-- scope, so nothing stored, and the request proceeds.
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'key_b') IS NOT NULL AS authenticated;
SELECT count(*) AS stored_answers_for_b FROM tenancy.idempotency_begin('k1', :'h1');
SELECT tenancy.idempotency_finish('k1', :'h1', 201, '{"key": "b"}');
COMMIT;
-- A response NULL (no body, 204) and a request without context (login).
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT count(*) AS stored_answers FROM tenancy.idempotency_begin('login-1', :'h1');
SELECT tenancy.login('owner@gws.test', 'pw-gws-1') IS NOT NULL AS logged_in;
-- (the login established a context: finish still finds the anonymous placeholder)
SELECT tenancy.idempotency_finish('login-1', :'h1', 204, NULL);
COMMIT;
SELECT tenancy.reset();
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT * FROM tenancy.idempotency_begin('login-1', :'h1');
COMMIT;
-- A request that fails rolls its placeholder back: a retry runs again.
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT count(*) AS stored_answers FROM tenancy.idempotency_begin('k-failed', :'h1');
ROLLBACK;
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT count(*) AS stored_answers_on_retry FROM tenancy.idempotency_begin('k-failed', :'h1');
-- begin twice in one transaction: 55000.
SELECT gws.try(format('SELECT tenancy.idempotency_begin(%L, %L)', 'k-failed', :'h1')) AS begin_twice;
SELECT tenancy.idempotency_finish('k-failed', :'h1', 200, '{}');
COMMIT;
-- A placeholder cannot be committed unfinished (deferred check, 55000).
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT count(*) AS stored_answers FROM tenancy.idempotency_begin('k-unfinished', :'h1');
COMMIT;
-- Finish without begin, or with another hash: 55000. Bad arguments: 22023.
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT gws.try(format('SELECT tenancy.idempotency_finish(%L, %L, 200, %L)', 'k-none', :'h1', '{}')) AS finish_without_begin;
SELECT c AS bad_argument, gws.try(q) AS result FROM (VALUES
    ('empty key', format('SELECT tenancy.idempotency_begin(%L, %L)', '', :'h1')),
    ('null key', format('SELECT tenancy.idempotency_begin(NULL, %L)', :'h1')),
    ('256-character key', format('SELECT tenancy.idempotency_begin(%L, %L)', repeat('k', 256), :'h1')),
    ('tab in key', format('SELECT tenancy.idempotency_begin(%L, %L)', E'a\tb', :'h1')),
    ('non-ASCII key', format('SELECT tenancy.idempotency_begin(%L, %L)', 'clé', :'h1')),
    ('short hash', format('SELECT tenancy.idempotency_begin(%L, %L)', 'k2', '\x0102')),
    ('null hash', format('SELECT tenancy.idempotency_begin(%L, NULL)', 'k2')),
    ('status 99', format('SELECT tenancy.idempotency_finish(%L, %L, 99, NULL)', 'k2', :'h1')),
    ('status 600', format('SELECT tenancy.idempotency_finish(%L, %L, 600, NULL)', 'k2', :'h1'))) v(c, q);
-- 255 printable characters, spaces included, are a key.
SELECT count(*) AS stored_answers FROM tenancy.idempotency_begin(repeat('~ !', 85), :'h1');
ROLLBACK;
RESET SESSION AUTHORIZATION;

-- What is stored: the key's hash, never the key; the answer sealed (no trace
-- of the secret; it opens with the server's key and the client's key only);
-- one row per scope.
SELECT CASE scope WHEN 'api_key:key_' || :main_id || '_' || :key_a_id THEN 'key A'
                  WHEN 'api_key:key_' || :main_id || '_' || :key_b_id THEN 'key B' ELSE scope END AS scope,
       count(*) AS keys
FROM tenancy.idempotency_keys GROUP BY 1 ORDER BY 1;
SELECT CASE scope WHEN 'api_key:key_' || :main_id || '_' || :key_a_id THEN 'key A' ELSE 'key B' END AS scope,
       status, position(convert_to('tnc_the_secret', 'UTF8') IN response) AS secret_at,
       position(convert_to('k1', 'UTF8') IN response) AS key_at,
       tenancy._secretbox_open(tenancy._idempotency_box_key(scope, 'k1'), response) AS opened,
       length(response) - octet_length(tenancy._secretbox_open(tenancy._idempotency_box_key(scope, 'k1'), response))
           AS sealing_overhead
FROM tenancy.idempotency_keys WHERE key_hash = tenancy.sha256('k1') ORDER BY 1;
SELECT count(*) AS rows_naming_a_key FROM tenancy.idempotency_keys
WHERE position(convert_to('k1', 'UTF8') IN key_hash) > 0 OR position(convert_to('login-1', 'UTF8') IN key_hash) > 0;
-- An answer opens only under its own scope and key: B's row with A's
-- ciphertext does not open (XX001), and nothing is returned.
UPDATE tenancy.idempotency_keys b SET response = a.response
FROM tenancy.idempotency_keys a
WHERE a.scope = 'api_key:key_' || :main_id || '_' || :key_a_id AND b.scope = 'api_key:key_' || :main_id || '_' || :key_b_id
  AND a.key_hash = b.key_hash;
SET SESSION AUTHORIZATION regress_gws_gateway;
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'key_b') IS NOT NULL AS authenticated;
SELECT gws.try(format('SELECT status FROM tenancy.idempotency_begin(%L, %L)', 'k1', :'h1')) AS moved_ciphertext;
ROLLBACK;
RESET SESSION AUTHORIZATION;

-- 24 hours: an expired row is replaced (the same key now serves another
-- request), and purge_identity() removes expired rows.
UPDATE tenancy.idempotency_keys SET created_at = now() - interval '25 hours'
WHERE scope = 'api_key:key_' || :main_id || '_' || :key_a_id AND key_hash = tenancy.sha256('k1');
UPDATE tenancy.idempotency_keys SET created_at = now() - interval '23 hours'
WHERE scope = 'api_key:key_' || :main_id || '_' || :key_a_id AND key_hash = tenancy.sha256('k-failed');
SET SESSION AUTHORIZATION regress_gws_gateway;
BEGIN;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT count(*) AS stored_answers_after_24h FROM tenancy.idempotency_begin('k1', :'h2');
SELECT tenancy.idempotency_finish('k1', :'h2', 200, 'second');
SELECT * FROM tenancy.idempotency_begin('k-failed', :'h1');  -- 23 hours: still there
COMMIT;
RESET SESSION AUTHORIZATION;
UPDATE tenancy.idempotency_keys SET created_at = now() - interval '25 hours'
WHERE scope = 'anonymous' AND key_hash = tenancy.sha256('login-1');
SELECT count(*) AS rows_before_purge FROM tenancy.idempotency_keys;
SELECT tenancy.purge_identity() >= 1 AS purged;
SELECT count(*) AS rows_after_purge, count(*) FILTER (WHERE scope = 'anonymous') AS anonymous_rows
FROM tenancy.idempotency_keys;

-- ==== the list-cursor key ==================================================================
SET SESSION AUTHORIZATION regress_gws_gateway;
SELECT length(tenancy.gateway_cursor_key()) AS key_bytes,
       tenancy.gateway_cursor_key() = tenancy.gateway_cursor_key() AS stable;
SELECT tenancy.gateway_cursor_key() AS cursor_key \gset
RESET SESSION AUTHORIZATION;
-- Derived, not the context key itself, and not another purpose's key.
SELECT :'cursor_key'::bytea <> c.secret AS not_the_context_key,
       :'cursor_key'::bytea <> tenancy._derived_key('tenancy idempotency v1') AS not_the_idempotency_key,
       :'cursor_key'::bytea = tenancy._hmac_sha256(c.secret, 'tenancy derived key|tenancy gateway cursor v1') AS derived
FROM tenancy.context_keys c WHERE c.id = 1;

-- ==== GETs recorded in batches =============================================================
-- Three reads: key A in the main account, key A acting in the child, a user
-- session (whoami() of each, as the gateway read it in the GET's transaction).
BEGIN;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT tenancy.whoami() -> 'principal' AS principal_a \gset
ROLLBACK;
SELECT tenancy.login('owner@gws.test', 'pw-gws-1') AS owner_session \gset
BEGIN;
SELECT tenancy.authenticate(:'owner_session') IS NOT NULL AS authenticated;
SELECT tenancy.whoami() -> 'principal' AS principal_u, tenancy.whoami() -> 'principal' ->> 'id' AS user_id,
       tenancy.whoami() -> 'principal' ->> 'session' AS session_id \gset
ROLLBACK;
SELECT tenancy.reset();
SELECT :'principal_a'::jsonb - 'id' AS principal_a, :'principal_u'::jsonb - 'id' - 'session' AS principal_u;
SELECT jsonb_build_array(
    jsonb_build_object('at', '2026-01-02T03:04:05.678Z', 'account', :'main', 'principal', :'principal_a'::jsonb,
                       'credential_id', :key_a_id::bigint, 'route', 'GET /v1/accounts/{id}', 'method', 'GET',
                       'status', 200, 'request_id', 'req-1'),
    jsonb_build_object('at', '2026-01-02T03:04:06+01:00', 'account', :'child', 'principal', :'principal_a'::jsonb,
                       'route', 'GET /v1/accounts', 'method', 'GET', 'status', 404, 'request_id', 'req-2'),
    jsonb_build_object('at', '2026-01-02 03:04:07Z', 'account', :'main', 'principal', :'principal_u'::jsonb,
                       'route', 'GET /v1/me', 'method', 'GET', 'status', 200, 'request_id', 'req-3'))
    AS batch \gset
UPDATE tenancy.api_key_usage SET last_used_at = NULL WHERE main_id = :main_id AND key_id = :key_a_id;
SELECT max(id) AS last_before FROM tenancy.audit_log \gset

-- A plain client may not record (42501), nor may anyone without tenancy_app.
SET SESSION AUTHORIZATION regress_gws_client;
SELECT gws.try(format('SELECT tenancy.record_api_reads(%L)', :'batch')) AS client_records;
SELECT gws.try('SELECT tenancy.gateway_cursor_key()') AS client_cursor_key;
SELECT gws.try(format('SELECT tenancy.idempotency_begin(%L, %L)', 'k1', :'h1')) AS client_begin;
SELECT gws.try(format('SELECT tenancy.idempotency_finish(%L, %L, 200, NULL)', 'k1', :'h1')) AS client_finish;
SELECT gws.try('SELECT tenancy.purge_idempotency()') AS client_purge;
SELECT gws.try('SELECT count(*) FROM tenancy.idempotency_keys') AS client_reads_keys;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_client;
SELECT gws.try(format('SELECT tenancy.record_api_reads(%L)', :'batch')) AS outsider_records;
SELECT gws.try('SELECT tenancy.gateway_cursor_key()') AS outsider_cursor_key;
RESET SESSION AUTHORIZATION;

-- The gateway (its writer thread: its own transaction, no context).
SET SESSION AUTHORIZATION regress_gws_gateway;
SET ROLE tenancy_app;
SELECT tenancy.record_api_reads(:'batch') AS written;
-- Malformed records: 22023 naming the (0-based) index; nothing written.
SELECT c AS malformed, gws.try(format('SELECT tenancy.record_api_reads(%L)', b)) AS result FROM (VALUES
    ('not an array', '{}'::jsonb),
    ('not an object', jsonb_build_array(:'batch'::jsonb -> 0, 5)),
    ('no at', jsonb_build_array(:'batch'::jsonb -> 0, (:'batch'::jsonb -> 0) - 'at')),
    ('at without zone', jsonb_build_array(jsonb_set(:'batch'::jsonb -> 0, '{at}', '"2026-01-02T03:04:05"'))),
    ('month 13', jsonb_build_array(jsonb_set(:'batch'::jsonb -> 0, '{at}', '"2026-13-02T03:04:05Z"'))),
    ('account a number', jsonb_build_array(jsonb_set(:'batch'::jsonb -> 0, '{account}', '7'))),
    ('unknown principal kind', jsonb_build_array(jsonb_set(:'batch'::jsonb -> 0, '{principal,kind}', '"dba"'))),
    ('api key id of a user', jsonb_build_array(jsonb_set(:'batch'::jsonb -> 0, '{principal,id}', '"5"'))),
    ('credential of another key', jsonb_build_array(jsonb_set(:'batch'::jsonb -> 0, '{credential_id}', '999'))),
    ('credential a string', jsonb_build_array(jsonb_set(:'batch'::jsonb -> 0, '{credential_id}', '"1"'))),
    ('POST', jsonb_build_array(:'batch'::jsonb -> 0, :'batch'::jsonb -> 1, jsonb_set(:'batch'::jsonb -> 2, '{method}', '"POST"'))),
    ('status a string', jsonb_build_array(jsonb_set(:'batch'::jsonb -> 0, '{status}', '"200"'))),
    ('status 600', jsonb_build_array(jsonb_set(:'batch'::jsonb -> 0, '{status}', '600'))),
    ('route too long', jsonb_build_array(jsonb_set(:'batch'::jsonb -> 0, '{route}', to_jsonb(repeat('r', 1001))))),
    ('no request id', jsonb_build_array((:'batch'::jsonb -> 0) - 'request_id'))) v(c, b);
-- A record whose account is gone (or never was) is skipped, the rest written.
SELECT tenancy.record_api_reads(jsonb_build_array(
    jsonb_set(:'batch'::jsonb -> 0, '{account}', '"acc_999999_0123456789ab"'),
    jsonb_set(:'batch'::jsonb -> 0, '{request_id}', '"req-4"'))) AS written_of_two;
SELECT tenancy.record_api_reads('[]') AS written_of_none;
RESET ROLE;
RESET SESSION AUTHORIZATION;

SELECT l.main_id = :main_id AS in_main, a.name AS account, l.action,
       l.target, l.actor_kind,
       CASE l.actor_kind WHEN 'api_key' THEN l.actor_id = 'key_' || :main_id || '_' || :key_a_id
                         ELSE l.actor_id = :'user_id' END AS actor_as_whoami,
       CASE l.actor_kind WHEN 'api_key' THEN l.credential_id = :key_a_id::bigint
                         ELSE l.credential_id = :session_id::bigint END AS credential,
       l.change
FROM tenancy.audit_log l JOIN tenancy.accounts a ON a.path OPERATOR(tenancy.=) l.account_path
WHERE l.id > :last_before AND l.action = 'api.request' ORDER BY l.id;
-- Key A's use is recorded (a GET could not), once.
SELECT last_used_at IS NOT NULL AS key_a_used FROM tenancy.api_key_usage WHERE main_id = :main_id AND key_id = :key_a_id;
SELECT count(*) AS api_key_use_events FROM tenancy.audit_log
WHERE id > :last_before AND action = 'api_key.use' AND actor_id = 'key_' || :main_id || '_' || :key_a_id;
-- The owner reads them in the main account's log; the chain still verifies.
SELECT tenancy.audit_seal() IS NOT NULL AS sealed;  -- (the background sealer may have been first)
SELECT ok, reason FROM tenancy.audit_verify() WHERE main_id = :main_id;
BEGIN;
SELECT tenancy.authenticate(:'key_a') IS NOT NULL AS authenticated;
SELECT count(*) AS owner_sees FROM tenancy.audit_trail WHERE action = 'api.request' AND change ->> 'request_id' LIKE 'req-%';
SELECT ok, reason FROM tenancy.audit_verify();
ROLLBACK;

-- Every function here is SECURITY DEFINER with a pinned search_path, EXECUTE
-- revoked from PUBLIC.
SELECT p.oid::regprocedure AS function, p.prosecdef AS definer,
       p.proconfig @> ARRAY['search_path=pg_catalog, tenancy, pg_temp'] AS pinned,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,
       has_function_privilege('tenancy_app', p.oid, 'EXECUTE') AS app_execute
FROM pg_proc p
WHERE p.oid IN ('tenancy.idempotency_begin(text, bytea)'::regprocedure,
                'tenancy.idempotency_finish(text, bytea, integer, text)'::regprocedure,
                'tenancy.record_api_reads(jsonb)'::regprocedure, 'tenancy.gateway_cursor_key()'::regprocedure,
                'tenancy.purge_idempotency()'::regprocedure)
ORDER BY p.proname;
DROP SCHEMA gws CASCADE;
