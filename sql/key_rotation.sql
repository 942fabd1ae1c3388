-- Key rotation (41_key_rotation.sql): the context-signing key (DBA only), API
-- keys with a grace period, and an account's maximum key lifetime.
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
-- The signing key of the current context, relative to the key before this test.
CREATE FUNCTION regress.ctx_key() RETURNS integer LANGUAGE sql AS
    $$ SELECT tenancy._context_field('key_id')::integer $$;
SET client_min_messages = warning;
GRANT tenancy_app TO regress_client;
RESET client_min_messages;

SELECT tenancy.create_main_account('Rotation Co', 'rot-owner@example.test', 'a long enough password') AS main \gset
SELECT tenancy.create_main_account('Rival Rot', 'rot-rival@example.test', 'a long enough password') AS rival \gset
SELECT tenancy.admin_create_api_key(:'main', 'bootstrap') AS owner_key \gset
SELECT tenancy.admin_create_api_key(:'rival', 'bootstrap') AS rival_key \gset
SELECT max(id) AS k0 FROM tenancy.context_keys WHERE retire_at IS NULL \gset

-- ==== the context-signing key =====================================================

-- Clients may not rotate it, nor poke the reload.
\c - regress_client
\set VERBOSITY terse
SELECT regress.try('SELECT tenancy.rotate_context_key()');
SELECT regress.try('SELECT tenancy._context_keys_changed()');
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS as_owner_key,
       regress.try('SELECT tenancy.rotate_context_key()') AS in_context;
\c - postgres
\set VERBOSITY terse

-- Bad grace: refused, nothing changes.
SELECT regress.try('SELECT tenancy.rotate_context_key(NULL)');
SELECT regress.try('SELECT tenancy.rotate_context_key(interval ''-1 second'')');
SELECT regress.try('SELECT tenancy.rotate_context_key(interval ''8 days'')');
SELECT count(*) = 1 AS still_one_live_key FROM tenancy.context_keys WHERE retire_at IS NULL;

-- A session-scoped context spanning a rotation keeps working: each transaction
-- gets a token from the newest key. A transaction under way keeps its token.
SELECT tenancy.authenticate(:'owner_key', session => true) = :'main' AS session_context;
SELECT regress.ctx_key() - :k0 AS signed_by, tenancy.current_account() = :'main' AS account_ok;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS tx_context;
SELECT current_setting('tenancy.context') AS old_token \gset
SELECT tenancy.rotate_context_key() - :k0 AS new_key;
SELECT regress.ctx_key() - :k0 AS still_signed_by, tenancy.current_account() = :'main' AS still_in_context;
COMMIT;
SELECT regress.ctx_key() - :k0 AS session_now_signed_by, tenancy.current_account() = :'main' AS account_ok;
SELECT tenancy.reset();
-- The old key is retiring, not retired; the new one has no end.
SELECT id - :k0 AS key, retire_at IS NOT NULL AS retiring, retire_at > now() + interval '11 hours' AS in_grace
FROM tenancy.context_keys WHERE id >= :k0 ORDER BY id;

-- New contexts are signed with the new key; one signed with the old key still
-- verifies during the grace (in the transaction it belongs to).
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated, regress.ctx_key() - :k0 AS signed_by;
SELECT current_setting('tenancy.context') AS new_token \gset
SELECT set_config('tenancy.context', :'old_token', true) IS NOT NULL AS old_token_set;
-- (bound to the transaction it was issued in: here it is no context)
SELECT tenancy.current_account() IS NULL AS other_transactions_token_is_nothing;
COMMIT;

-- In one transaction: a token of the retiring key verifies until the key's
-- retire_at has passed, then is no context (and never again).
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT current_setting('tenancy.context') AS k1_token \gset
SELECT tenancy.rotate_context_key(interval '1 second') - :k0 AS newer_key;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS reauthenticated, regress.ctx_key() - :k0 AS signed_by;
SELECT set_config('tenancy.context', :'k1_token', true) IS NOT NULL AS k1_token_set;
SELECT regress.ctx_key() - :k0 AS signed_by, tenancy.current_account() = :'main' AS valid_in_grace;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS reauthenticated;
SELECT regress.ctx_key() - :k0 AS signed_by;
SELECT pg_sleep(1.2);
SELECT set_config('tenancy.context', :'k1_token', true) IS NOT NULL AS k1_token_set;
SELECT tenancy.current_account() IS NULL AS retired_key_is_no_context,
       tenancy.whoami() IS NULL AS no_whoami;
COMMIT;

-- Retiring at once (a key that may have leaked): in the rotating backend a
-- context it signed is gone from the next statement on (other backends drop
-- it from their next transaction: tests/isolation/specs/key_rotation.spec);
-- a fresh authenticate() works with the new key.
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated, regress.ctx_key() - :k0 AS signed_by;
SELECT tenancy.rotate_context_key(interval '0') - :k0 AS newest_key;
SELECT tenancy.current_account() IS NULL AS gone_at_once;
SELECT tenancy.authenticate(:'owner_key') = :'main' AS authenticated_again, regress.ctx_key() - :k0 AS signed_by;
COMMIT;

-- Retired keys verify nothing; the next rotation deletes them, except key 1
-- (the root of the derived keys), whose row stays, marked.
SELECT id - :k0 AS key, retire_at <= now() AS retired FROM tenancy.context_keys WHERE id >= :k0 ORDER BY id;
SELECT tenancy.rotate_context_key() - :k0 AS rotated_again;
SELECT id - :k0 AS key, retire_at IS NULL AS signing, retire_at <= now() AS retired
FROM tenancy.context_keys WHERE id >= :k0 ORDER BY id;
SELECT retire_at IS NOT NULL AS key_1_marked FROM tenancy.context_keys WHERE id = 1;

-- The audit log records each rotation in the installation's chain, without
-- key material.
SELECT action, actor_kind, target ~ '^context_key:[0-9]+$' AS target_ok,
       change ?& ARRAY['key_id', 'retiring', 'retire_at', 'grace'] AS detail_ok,
       change::text !~ '\\x|secret' AS no_material
FROM tenancy.audit_log WHERE action = 'context_key.rotate' ORDER BY id;
SELECT count(*) AS entries_with_a_secret FROM tenancy.audit_log a, tenancy.context_keys c
WHERE a.change::text LIKE '%' || encode(c.secret, 'hex') || '%'
   OR a.change::text LIKE '%' || encode(c.secret, 'base64') || '%';

-- Too many keys in their grace period: refused, nothing changes.
SELECT count(*) AS live_before FROM tenancy.context_keys WHERE retire_at IS NULL OR retire_at > now() \gset
SELECT regress.try('SELECT tenancy.rotate_context_key() FROM generate_series(1, 10)');
SELECT count(*) = :live_before AS unchanged FROM tenancy.context_keys WHERE retire_at IS NULL OR retire_at > now();

-- ==== API keys ======================================================================

BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT tenancy.create_account(:'main', 'Child') AS child \gset
SELECT tenancy.create_api_key(:'child', 'ci deploy', 'admin') AS ci_key \gset
SELECT tenancy.create_api_key(:'child', 'ninety days', 'viewer', now() + interval '90 days') AS dated_key \gset
SELECT tenancy.create_api_key(:'child', 'to revoke', 'viewer') AS revoked_key \gset
COMMIT;
SELECT format('key_%s_%s', split_part(:'ci_key', '_', 2), split_part(:'ci_key', '_', 3)) AS ci_id,
       format('key_%s_%s', split_part(:'dated_key', '_', 2), split_part(:'dated_key', '_', 3)) AS dated_id,
       format('key_%s_%s', split_part(:'revoked_key', '_', 2), split_part(:'revoked_key', '_', 3)) AS revoked_id,
       format('key_%s_%s', split_part(:'rival_key', '_', 2), split_part(:'rival_key', '_', 3)) AS rival_id \gset

\c - regress_client
\set VERBOSITY terse
-- Rotation: a new key (same account, name and role); the old one keeps
-- working until the grace ends. Both are in the key list.
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated,
       tenancy.rotate_api_key(:'ci_id', interval '1 hour') AS ci_key_2 \gset
SELECT tenancy.authenticate(:'ci_key_2') = :'child' AS new_key_works,
       tenancy.whoami()->>'role' AS role;
SELECT tenancy.authenticate(:'ci_key') = :'child' AS old_key_works_in_grace;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT k.name, k.role, k.account_id = (SELECT id FROM tenancy.accounts WHERE public_id = :'child') AS same_account,
       k.public_id = :'ci_id' AS is_old, k.rotated_at IS NOT NULL AS rotated,
       k.expires_at BETWEEN now() + interval '59 minutes' AND now() + interval '1 hour' AS grace_ends,
       k.replaced_by IS NOT NULL AS has_successor, k.expires_at IS NULL AS no_expiry
FROM tenancy.api_keys k WHERE k.name = 'ci deploy' ORDER BY k.id;
SELECT format('key_%s_%s', o.main_id, o.replaced_by) = n.public_id AS replaced_by_new,
       :'ci_key_2' LIKE n.prefix || '%' AS prefix_matches
FROM tenancy.api_keys o JOIN tenancy.api_keys n ON n.main_id = o.main_id AND n.id = o.replaced_by
WHERE o.public_id = :'ci_id';
COMMIT;

-- Rotating it again is refused (rotate its replacement); so is a revoked key,
-- a missing one, another tenant's, a bad grace. Nothing changes.
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated, tenancy.revoke_api_key(:'revoked_id');
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT count(*) AS keys_before FROM tenancy.api_keys \gset
COMMIT;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated,
       regress.try(format('SELECT tenancy.rotate_api_key(%L)', :'ci_id')) AS again,
       regress.try(format('SELECT tenancy.rotate_api_key(%L)', :'revoked_id')) AS revoked,
       regress.try('SELECT tenancy.rotate_api_key(''key_999999_999999'')') AS missing,
       regress.try('SELECT tenancy.rotate_api_key(''nonsense'')') AS malformed;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated,
       regress.try(format('SELECT tenancy.rotate_api_key(%L)', :'rival_id')) AS rival,
       regress.try(format('SELECT tenancy.rotate_api_key(%L, NULL)', :'dated_id')) AS null_grace,
       regress.try(format('SELECT tenancy.rotate_api_key(%L, interval ''-1 second'')', :'dated_id')) AS negative,
       regress.try(format('SELECT tenancy.rotate_api_key(%L, interval ''31 days'')', :'dated_id')) AS too_long;
SELECT regress.try(format('SELECT tenancy.rotate_api_key(%L)', :'dated_id')) AS without_context;
-- Who may: whoever may manage keys (owner); an admin or viewer may not.
SELECT tenancy.authenticate(:'ci_key_2') IS NOT NULL AS as_admin,
       regress.try(format('SELECT tenancy.rotate_api_key(%L)', :'dated_id')) AS admin_rotates;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT count(*) = :keys_before AS nothing_changed,
       (SELECT rotated_at IS NULL AND replaced_by IS NULL FROM tenancy.api_keys WHERE public_id = :'dated_id')
           AS dated_untouched
FROM tenancy.api_keys;
COMMIT;

-- A key with an expiry: the new one gets the same lifetime, from now.
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated,
       tenancy.rotate_api_key(:'dated_id', interval '0') AS dated_key_2 \gset
-- grace 0: the old key is refused at once.
SELECT regress.try(format('SELECT tenancy.authenticate(%L)', :'dated_key')) AS old_refused;
SELECT tenancy.authenticate(:'dated_key_2') IS NOT NULL AS new_works;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT expires_at BETWEEN now() + interval '89 days 23 hours' AND now() + interval '90 days' AS same_lifetime
FROM tenancy.api_keys WHERE replaced_by IS NULL AND name = 'ninety days';
COMMIT;

-- The JSON form the gateway answers with (rotating the replacement).
SELECT format('key_%s_%s', split_part(:'ci_key_2', '_', 2), split_part(:'ci_key_2', '_', 3)) AS ci2_id \gset
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated,
       tenancy.rotate_api_key_json(:'ci2_id') AS j \gset
SELECT :'j'::jsonb ?& ARRAY['id', 'key', 'prefix', 'name', 'role', 'expires_at', 'created_at', 'replaces'] AS shape,
       :'j'::jsonb -> 'replaces' ->> 'id' = :'ci2_id' AS replaces_old,
       (:'j'::jsonb -> 'replaces' ->> 'expires_at')::timestamptz > now() + interval '23 hours' AS default_grace_a_day,
       :'j'::jsonb ->> 'key' LIKE (:'j'::jsonb ->> 'prefix') || '%' AS key_has_prefix;
SELECT :'j'::jsonb ->> 'key' AS ci_key_3, :'j'::jsonb ->> 'id' AS ci3_id \gset

-- A full account (the free plan allows 2 active keys) can still rotate: a
-- key in its grace period no longer counts.
\c - postgres
\set VERBOSITY terse
SELECT tenancy.create_main_account('Small Rot', 'rot-small@example.test', 'a long enough password', 'free') AS small \gset
SELECT tenancy.admin_create_api_key(:'small', 'one') AS small_1 \gset
SELECT tenancy.admin_create_api_key(:'small', 'two') AS small_2 \gset
\c - regress_client
\set VERBOSITY terse
SELECT tenancy.authenticate(:'small_1') IS NOT NULL AS authenticated,
       regress.try(format('SELECT tenancy.create_api_key(%L, ''three'', ''viewer'')', :'small')) AS at_limit;
SELECT tenancy.authenticate(:'small_1') IS NOT NULL AS authenticated,
       tenancy.rotate_api_key(format('key_%s_%s', split_part(:'small_2', '_', 2), split_part(:'small_2', '_', 3)))
           LIKE 'tnc_%' AS rotated_at_limit;
SELECT tenancy.authenticate(:'small_2') IS NOT NULL AS old_still_works;

-- ==== maximum key lifetime ===========================================================

-- Set by an owner through update_account; checked; tighten-only down the tree.
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated,
       regress.try(format('SELECT tenancy.update_account(%L, settings => %L)', :'main', s)) AS result, s
FROM unnest(ARRAY['{"api_keys": {"max_lifetime_days": 0}}', '{"api_keys": {"max_lifetime_days": 1.5}}',
                  '{"api_keys": {"max_lifetime_days": "30"}}', '{"api_keys": {"max_lifetime_days": 3651}}',
                  '{"api_keys": {"lifetime": 30}}', '{"api_keys": 30}']) AS s;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated,
       tenancy.update_account(:'main', settings => '{"api_keys": {"max_lifetime_days": 30}}') -> 'settings' AS settings;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated,
       regress.try(format('SELECT tenancy.update_account(%L, settings => %L)', :'child',
                          '{"api_keys": {"max_lifetime_days": 60}}')) AS longer_below,
       regress.try(format('SELECT tenancy.update_account(%L, settings => %L)', :'child',
                          '{"api_keys": {"max_lifetime_days": 10}}')) AS shorter_below;
-- An admin may change settings, but not this one.
SELECT tenancy.authenticate(:'ci_key_2') IS NOT NULL AS as_admin,
       regress.try(format('SELECT tenancy.update_account(%L, settings => %L)', :'child',
                          '{"api_keys": {"max_lifetime_days": 5}}')) AS admin_sets;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated,
       tenancy.effective_settings(:'child') -> 'api_keys' AS effective_at_child;

-- Keys older than that are refused at authentication, with a clear error;
-- the limit of the key's own account line applies (the child's 10 days).
\c - postgres
\set VERBOSITY terse
SELECT tenancy.admin_create_api_key(:'main', 'old main key') AS old_main_key \gset
UPDATE tenancy.api_keys SET created_at = now() - interval '31 days' WHERE name = 'old main key';
UPDATE tenancy.api_keys SET created_at = now() - interval '11 days' WHERE public_id = :'ci3_id';
\c - regress_client
\set VERBOSITY terse
SELECT regress.try(format('SELECT tenancy.authenticate(%L)', :'old_main_key')) AS older_than_30_days;
SELECT regress.try(format('SELECT tenancy.authenticate(%L)', :'ci_key_3')) AS older_than_10_days;
SELECT tenancy.authenticate(:'owner_key') = :'main' AS young_key_works;
-- Rotating it is the way out: the new key is young.
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated,
       tenancy.rotate_api_key(:'ci3_id', interval '0') AS ci_key_4 \gset
SELECT tenancy.authenticate(:'ci_key_4') = :'child' AS fresh_key_works,
       (tenancy.whoami()->>'expires_at')::timestamptz <= now() + interval '12 hours' AS context_expiry_capped;
-- The context of a key ends with its lifetime.
\c - postgres
\set VERBOSITY terse
UPDATE tenancy.api_keys SET created_at = now() - interval '10 days' + interval '1 hour'
WHERE replaced_by IS NULL AND name = 'ci deploy';
\c - regress_client
\set VERBOSITY terse
SELECT tenancy.authenticate(:'ci_key_4') = :'child' AS works_for_an_hour,
       (tenancy.whoami()->>'expires_at')::timestamptz <= now() + interval '1 hour' AS context_ends_with_lifetime;
\c - postgres
