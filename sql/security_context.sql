-- The request context: set only by presenting a credential, bound to its
-- transaction, unforgeable, cleared by reset(), RESET ALL and DISCARD ALL.
\set VERBOSITY terse
-- regress.try(q): runs q and reports 'ok' or its SQLSTATE and message, with the
-- random part of public ids masked so the expected output is stable.
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

SELECT tenancy.create_main_account('Ctx Agency', 'ctx-owner@example.test', 'a long enough password') AS main \gset
SELECT tenancy.create_main_account('Other Agency', 'other-owner@example.test', 'a long enough password') AS other \gset
SELECT tenancy.admin_create_api_key(:'main', 'bootstrap') AS owner_key \gset
SELECT tenancy.admin_create_api_key(:'other', 'bootstrap') AS other_key \gset
BEGIN;
SELECT tenancy.authenticate(:'owner_key') = :'main' AS authenticated_as_main;
SELECT tenancy.create_account(:'main', 'Child') AS child \gset
SELECT tenancy.create_account(:'child', 'Grandchild') AS grandchild \gset
SELECT tenancy.create_account(:'main', 'Sibling') AS sibling \gset
SELECT tenancy.create_api_key(:'child', 'child key', 'admin') AS child_key \gset
SELECT tenancy.create_api_key(:'grandchild', 'grandchild key', 'viewer') AS grandchild_key \gset
SELECT tenancy.create_api_key(:'child', 'soon expired', 'viewer', now() + interval '1 second') AS expiring_key \gset
SELECT tenancy.create_api_key(:'child', 'to revoke', 'viewer') AS revoked_key \gset
COMMIT;

-- Log in as the application role itself (SET ROLE from a superuser session
-- could always be undone).
-- Clients log in as their own roles, members of tenancy_app (pg_regress
-- creates regress_client: REGRESS_OPTS in the Makefile).
SET client_min_messages = warning;  -- the grant may be there already
GRANT tenancy_app TO regress_client;
RESET client_min_messages;
\c - regress_client
\set VERBOSITY terse
SELECT current_user, session_user;

-- Without a context nothing is visible and nothing can be done.
SELECT tenancy.current_account() IS NULL AS no_context, tenancy.whoami() IS NULL AS no_whoami,
       (SELECT count(*) FROM tenancy.accounts) AS accounts_visible;
SELECT regress.try(format('SELECT tenancy.create_account(%L, %L)', :'main', 'x'));

-- A credential sets the context; whoami tells who acts.
BEGIN;
SELECT tenancy.authenticate(:'child_key') = :'child' AS is_child;
SELECT w->>'role' AS role, w->'principal'->>'kind' AS kind, w->>'scope' AS scope,
       w->>'account' = :'child' AS account_ok, (w->>'expires_at')::timestamptz > now() AS expires_later
FROM tenancy.whoami() AS w;
SELECT name FROM tenancy.accounts ORDER BY path;
COMMIT;

-- It ends with the transaction: commit, rollback, or a single statement.
SELECT tenancy.current_account() IS NULL AS cleared_after_commit;
BEGIN;
SELECT tenancy.authenticate(:'child_key') IS NOT NULL AS authenticated;
ROLLBACK;
SELECT tenancy.current_account() IS NULL AS cleared_after_rollback;
SELECT tenancy.authenticate(:'child_key') IS NOT NULL AS single_statement;
SELECT count(*) AS visible_in_next_statement FROM tenancy.accounts;

-- reset() clears it at once.
BEGIN;
SELECT tenancy.authenticate(:'child_key') IS NOT NULL AS authenticated;
SELECT tenancy.reset();
SELECT tenancy.current_account() IS NULL AS cleared_by_reset, count(*) AS visible FROM tenancy.accounts;
COMMIT;

-- Bad credentials: one message, SQLSTATE 28000, whatever is wrong.
SELECT regress.try('SELECT tenancy.authenticate(NULL)');
SELECT regress.try('SELECT tenancy.authenticate('''')');
SELECT regress.try('SELECT tenancy.authenticate(''tnc_1_1_short'')');
SELECT regress.try(format('SELECT tenancy.authenticate(%L)', left(:'child_key', -1) ||
    CASE WHEN right(:'child_key', 1) = 'A' THEN 'B' ELSE 'A' END));
SELECT regress.try(format('SELECT tenancy.authenticate(%L)',
    regexp_replace(:'child_key', '^tnc_[0-9]+_', 'tnc_999999_')));

-- act_as: downward only. Ancestors, siblings, other main accounts and
-- malformed ids all answer "not found".
BEGIN;
SELECT tenancy.authenticate(:'child_key') IS NOT NULL AS authenticated;
SELECT tenancy.act_as(:'grandchild') = :'grandchild' AS acted_down;
SELECT name FROM tenancy.accounts ORDER BY path;
SELECT tenancy.act_as(:'child') = :'child' AS back_home;
SELECT regress.try(format('SELECT tenancy.act_as(%L)', :'main')) AS ancestor;
SELECT regress.try(format('SELECT tenancy.act_as(%L)', :'sibling')) AS sibling;
SELECT regress.try(format('SELECT tenancy.act_as(%L)', :'other')) AS other_main;
SELECT regress.try('SELECT tenancy.act_as(''acc_1; DROP TABLE x'')') AS malformed;
SELECT tenancy.current_account() = :'child' AS still_child;
COMMIT;

-- ---- forging -------------------------------------------------------------
-- A setting a client writes is not a context.
SELECT set_config('tenancy.context', 'forged', false) IS NOT NULL AS set;
SELECT tenancy.current_account() IS NULL AS forged_is_nothing, count(*) AS visible FROM tenancy.accounts;
RESET tenancy.context;
-- Other names in the tenancy. prefix are reserved.
SELECT regress.try('SET tenancy.account = ''acc_1''');
-- A real token, captured, is worthless in a later transaction...
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT current_setting('tenancy.context') AS captured \gset
COMMIT;
BEGIN;
SELECT set_config('tenancy.context', :'captured', true) IS NOT NULL AS replayed;
SELECT tenancy.current_account() IS NULL AS replay_is_nothing, count(*) AS visible FROM tenancy.accounts;
COMMIT;
SET tenancy.context = :'captured';
SELECT count(*) AS visible_after_session_replay FROM tenancy.accounts;
RESET tenancy.context;
-- ...and a token with one byte changed verifies as nothing, even in its own transaction.
BEGIN;
SELECT tenancy.authenticate(:'child_key') IS NOT NULL AS authenticated;
SELECT set_config('tenancy.context',
    overlay(current_setting('tenancy.context') placing
            CASE WHEN substr(current_setting('tenancy.context'), 20, 1) = 'A' THEN 'B' ELSE 'A' END
            from 20 for 1), true) IS NOT NULL AS tampered;
SELECT tenancy.current_account() IS NULL AS tampered_is_nothing, count(*) AS visible FROM tenancy.accounts;
COMMIT;
-- Internal functions, the key table and the secret hashes are out of reach.
SELECT regress.try(format($q$SELECT tenancy._issue_context('transaction', 'api_key', 1, 1, 1, 1,
    %L, '1', 1, '1', 'owner', 'infinity')$q$, :'main')) AS issue_context;
SELECT regress.try('SELECT tenancy._establish(''api_key'', 1, 1, NULL, ''transaction'')') AS establish;
SELECT regress.try('SELECT tenancy._session_record()') AS session_record;
SELECT regress.try('SELECT tenancy._resume_session()') AS resume_session;
SELECT tenancy.current_account() IS NULL AS still_nothing;
SELECT regress.try('SELECT * FROM tenancy.context_keys') AS keys;
SELECT regress.try('SELECT * FROM tenancy.api_key_secrets') AS secrets;
SELECT regress.try('SELECT password_hash FROM tenancy.users') AS password_hashes;
SELECT regress.try('SET ROLE postgres') AS set_role_superuser;
SELECT regress.try('SET ROLE tenancy_owner') AS set_role_owner;
SELECT regress.try('SET ROLE tenancy_admin') AS set_role_admin;
SELECT regress.try('SET SESSION AUTHORIZATION postgres') AS set_session_authorization;
SELECT regress.try('SELECT tenancy.create_main_account(''x'', ''x@example.test'', ''password123'')') AS dba_function;
SELECT regress.try(format('SELECT tenancy.admin_create_api_key(%L, %L)', :'main', 'x')) AS dba_key;
-- search_path tricks: objects a client can create do not shadow what SECURITY
-- DEFINER functions use (pg_temp comes last, public is not on their path).
CREATE FUNCTION pg_temp.current_path() RETURNS tenancy.account_path LANGUAGE sql AS $$ SELECT '1'::tenancy.account_path $$;
CREATE FUNCTION pg_temp.may(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
SET search_path = pg_temp, tenancy, public;
SELECT regress.try(format('SELECT tenancy.create_account(%L, %L)', :'main', 'shadowed')) AS shadowed_create;
RESET search_path;
SELECT regress.try('CREATE FUNCTION public.current_path() RETURNS int LANGUAGE sql AS ''SELECT 1''') AS create_in_public;

-- ---- lifetimes -------------------------------------------------------------
-- Works in a READ ONLY transaction (no bookkeeping write can fail it).
BEGIN READ ONLY;
SELECT tenancy.authenticate(:'child_key') = :'child' AS read_only_ok;
SELECT count(*) AS visible FROM tenancy.accounts;
COMMIT;

-- Session scope lasts across transactions and is re-validated in each.
SELECT tenancy.authenticate(:'child_key', session => true) = :'child' AS session_started;
SELECT tenancy.whoami()->>'scope' AS scope;
SELECT count(*) AS session_tx1 FROM tenancy.accounts;
BEGIN;
SELECT count(*) AS session_tx2 FROM tenancy.accounts;
COMMIT;
-- act_as within a session moves the session.
SELECT tenancy.act_as(:'grandchild') = :'grandchild' AS session_moved;
SELECT name FROM tenancy.accounts ORDER BY path;
SELECT tenancy.act_as(:'child') = :'child' AS session_back;
-- A client cannot revive a session by writing its marker.
SELECT current_setting('tenancy.session') AS marker \gset
RESET ALL;
SELECT count(*) AS after_reset_all FROM tenancy.accounts;
SET tenancy.session = :'marker';
SELECT count(*) AS after_marker_replay FROM tenancy.accounts;
RESET tenancy.session;
SELECT tenancy.authenticate(:'child_key', session => true) = :'child' AS session_again;
DISCARD ALL;
SELECT count(*) AS after_discard_all FROM tenancy.accounts;
SELECT tenancy.authenticate(:'child_key', session => true) = :'child' AS session_again;
SELECT tenancy.reset();
SELECT count(*) AS after_reset FROM tenancy.accounts;

-- Revocation reaches a session at its next transaction. (A transaction-scoped
-- authenticate() overrides the session for its own transaction only.)
SELECT tenancy.authenticate(:'revoked_key', session => true) = :'child' AS session_with_doomed_key;
SELECT count(*) AS before_revoke FROM tenancy.accounts;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') = :'main' AS owner_for_this_transaction;
SELECT tenancy.revoke_api_key(key.public_id) FROM tenancy.api_keys key WHERE key.name = 'to revoke';
COMMIT;
-- The failed refresh is raised by the statement itself (SQLSTATE only: the
-- message names the key).
\set VERBOSITY sqlstate
SELECT count(*) AS after_revoke FROM tenancy.accounts;
\set VERBOSITY terse
SELECT count(*) AS session_gone FROM tenancy.accounts;
SELECT regress.try(format('SELECT tenancy.authenticate(%L)', :'revoked_key')) AS revoked;
-- The secret is checked first: a wrong one says nothing about the key.
SELECT regress.try(format('SELECT tenancy.authenticate(%L)', left(:'revoked_key', -1)
       || CASE WHEN right(:'revoked_key', 1) = 'A' THEN 'B' ELSE 'A' END)) AS revoked_wrong_secret;

-- An expired key stops working.
SELECT pg_sleep(1.2);
SELECT regress.try(format('SELECT tenancy.authenticate(%L)', :'expiring_key')) AS expired;

-- Deactivating an account stops its whole subtree, sessions included, from the
-- next transaction; reactivating restores it. The data is kept.
SELECT tenancy.authenticate(:'grandchild_key', session => true) = :'grandchild' AS grandchild_session;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS owner;
SELECT regress.try(format('SELECT tenancy.deactivate_account(%L)', :'main')) AS deactivate_self;
SELECT tenancy.deactivate_account(:'child');
SELECT name, status FROM tenancy.accounts ORDER BY path;
COMMIT;
\set VERBOSITY sqlstate
SELECT count(*) AS grandchild_session_after FROM tenancy.accounts;
\set VERBOSITY terse
SELECT regress.try(format('SELECT tenancy.authenticate(%L)', :'child_key')) AS child_key;
SELECT regress.try(format('SELECT tenancy.authenticate(%L)', :'grandchild_key')) AS grandchild_key;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS owner;
SELECT regress.try(format('SELECT tenancy.act_as(%L)', :'grandchild')) AS act_in_inactive;
SELECT tenancy.reactivate_account(:'child');
COMMIT;
SELECT tenancy.authenticate(:'grandchild_key') = :'grandchild' AS grandchild_key_works_again;

\c - postgres
-- Every SECURITY DEFINER function pins its search_path.
SELECT p.oid::regprocedure AS unpinned_security_definer
FROM pg_proc p
WHERE p.pronamespace = 'tenancy'::regnamespace AND p.prosecdef
  AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%');
-- Internal functions (a leading underscore) that a client role may execute:
-- exactly these, each on purpose (they read or resume the caller's own
-- context, or verify under its own checks); every other one, the audit
-- sealer's and writer's among them, is revoked from PUBLIC. The voice
-- tables' transcript check and public-id maker (50_voice.sql) run in a
-- writer's own row (a CHECK constraint, a row trigger); the policy helpers
-- of users and api_key_usage (29_security.sql) in a reader's policies.
SELECT p.oid::regprocedure::text AS client_executable_internal
FROM pg_proc p
WHERE p.pronamespace = 'tenancy'::regnamespace AND p.proname LIKE '\_%'
  AND (has_function_privilege('tenancy_app', p.oid, 'execute') OR has_function_privilege('public', p.oid, 'execute'))
ORDER BY 1;
