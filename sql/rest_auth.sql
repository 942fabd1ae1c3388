-- The REST auth routes' SQL (33_api_auth.sql): api_login, api_login_sub_user,
-- switch_account, list_sessions, api_logout. (Named to run after audit.sql, which reads the whole log.)
\set VERBOSITY terse
SET client_min_messages = warning;
SELECT coalesce(tenancy._throttle_rewind('1 day'), 0) >= 0 AS throttle_reset;
CREATE SCHEMA IF NOT EXISTS apitest;
GRANT USAGE ON SCHEMA apitest TO PUBLIC;
-- runs a statement; returns 'ok' or SQLSTATE and message with random ids masked
CREATE OR REPLACE FUNCTION apitest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(regexp_replace(SQLERRM, '(acc|sub|inv|key)_[0-9]+_[0-9a-f]+',
                                                             '\1_X', 'g'), 'session [0-9]+', 'session N');
END $$;
-- the keys of a login answer and the types of their values
CREATE OR REPLACE FUNCTION apitest.shape(j jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(k || ':' || jsonb_typeof(j -> k), ' ' ORDER BY k) FROM jsonb_object_keys(j) k $$;
CREATE OR REPLACE FUNCTION apitest.mailed_password(who text) RETURNS text LANGUAGE sql AS $$
    SELECT substring(body from 'temporary password: (\S+)') FROM tenancy.outbox
    WHERE recipient = who ORDER BY id DESC LIMIT 1 $$;
REVOKE ALL ON FUNCTION apitest.mailed_password(text) FROM PUBLIC;

SELECT tenancy.create_main_account('North Agency', 'north@apa.test', 'north-pass-1') AS north \gset
SELECT tenancy.create_main_account('South Agency', 'south@apa.test', 'south-pass-1') AS south \gset
SELECT tenancy.create_main_account('Stranger', 'stranger@apa.test', 'stranger-pass-1') AS stranger \gset
-- Dana works for both agencies: admin of North, viewer of South
INSERT INTO tenancy.users (email, password_hash) VALUES ('dana@apa.test', tenancy.hash_password('dana-pass-1'));
INSERT INTO tenancy.memberships (account_path, user_id, role)
SELECT a.path, u.id, CASE a.public_id WHEN :'north' THEN 'admin' ELSE 'viewer' END
FROM tenancy.accounts a, tenancy.users u
WHERE a.public_id IN (:'north', :'south') AND u.email = 'dana@apa.test';
SET ROLE tenancy_app;

-- ---- api_login ----
BEGIN;
SELECT tenancy.api_login('dana@apa.test', 'dana-pass-1') AS j \gset
SELECT apitest.shape(:'j') AS shape;
SELECT (:'j'::jsonb ->> 'account') = :'north' AS in_north, tenancy.current_role_name() AS role,
       (:'j'::jsonb ->> 'token') ~ '^tns_[0-9]+_[A-Za-z0-9_-]{43}$' AS token_format,
       (:'j'::jsonb ->> 'expires_at')::timestamptz = (tenancy.whoami() ->> 'expires_at')::timestamptz
           AS expiry_is_the_sessions,
       (:'j'::jsonb ->> 'mfa_required')::boolean AS mfa_required,
       (:'j'::jsonb ->> 'must_change_password')::boolean AS must_change;
SELECT tenancy.create_account(:'north', 'North Client') AS north_client \gset
COMMIT;
SELECT :'j'::jsonb ->> 'token' AS dana_tok \gset
-- into a given account: a membership's or a descendant; not a stranger's
BEGIN;
SELECT tenancy.api_login('dana@apa.test', 'dana-pass-1', :'south') ->> 'account' = :'south' AS in_south,
       tenancy.current_role_name() AS role;
ROLLBACK;
SELECT apitest.try(format('SELECT tenancy.api_login(%L, %L, %L)', 'dana@apa.test', 'dana-pass-1', :'stranger'));

-- refused credentials: NULL whatever the cause, the one warning, no context,
-- and each failure is counted (committed by the caller's transaction)
RESET ROLE;
SELECT count(*) AS dana_failures_before FROM tenancy.login_failures
WHERE key_hash = tenancy.sha256_hex('user:dana@apa.test');
SET ROLE tenancy_app;
SET client_min_messages = notice;
SELECT tenancy.api_login('dana@apa.test', 'wrong-password') IS NULL AS wrong_password;
SELECT tenancy.api_login('nobody@apa.test', 'wrong-password') IS NULL AS unknown_email;
SELECT tenancy.api_login(NULL, NULL) IS NULL AS nulls;
SET client_min_messages = warning;
SELECT tenancy.current_account() IS NULL AS no_context;
RESET ROLE;
SELECT count(*) AS dana_failures_after FROM tenancy.login_failures
WHERE key_hash = tenancy.sha256_hex('user:dana@apa.test');
SELECT count(*) AS unknown_failures FROM tenancy.login_failures
WHERE key_hash = tenancy.sha256_hex('user:nobody@apa.test');
SET ROLE tenancy_app;

-- ---- MFA: a login owes the second factor ----
BEGIN;
SELECT tenancy.login('north@apa.test', 'north-pass-1') IS NOT NULL AS logged_in;
SELECT substring(tenancy.enroll_mfa() from 'secret=([A-Z2-7]+)') AS secret \gset
SELECT array_length(tenancy.confirm_mfa(tenancy.totp(:'secret')), 1) AS recovery_codes;
COMMIT;
BEGIN;
SELECT tenancy.api_login('north@apa.test', 'north-pass-1') AS mj \gset
SELECT (:'mj'::jsonb ->> 'mfa_required')::boolean AS mfa_required, tenancy.current_role_name() AS role,
       (:'mj'::jsonb ->> 'account') = :'north' AS in_north;
COMMIT;
SELECT :'mj'::jsonb ->> 'token' AS mfa_tok \gset
-- an MFA-pending session can neither switch nor list sessions
BEGIN;
SELECT tenancy.authenticate(:'mfa_tok') = :'north' AS pending;
SELECT apitest.try(format('SELECT tenancy.switch_account(%L)', :'north_client'));
SELECT apitest.try('SELECT * FROM tenancy.list_sessions()');
SELECT tenancy.verify_mfa(tenancy.totp(:'secret', now() + interval '30 seconds')) AS verified;
SELECT count(*) = 1 AS lists_after_verify FROM tenancy.list_sessions() WHERE current;
COMMIT;

-- ---- sub-users: the first login owes a password change ----
BEGIN;
SELECT tenancy.authenticate(:'mfa_tok') IS NOT NULL;
SELECT tenancy.create_sub_user('sam@apa.test', 'Sam', 'Poe', 'sam-temp-pass') AS sam \gset
SELECT tenancy.activate_sub_user(:'sam');
COMMIT;
RESET ROLE;
SELECT apitest.mailed_password('sam@apa.test') AS sam_pw \gset
SET ROLE tenancy_app;
SET client_min_messages = notice;
SELECT tenancy.api_login_sub_user('north@apa.test', 'sam@apa.test', 'not-the-password') IS NULL AS wrong_password;
SELECT tenancy.api_login_sub_user('nobody@apa.test', 'sam@apa.test', :'sam_pw') IS NULL AS wrong_main;
SET client_min_messages = warning;
BEGIN;
SELECT tenancy.api_login_sub_user('north@apa.test', 'sam@apa.test', :'sam_pw') AS sj \gset
SELECT apitest.shape(:'sj') AS shape;
SELECT (:'sj'::jsonb ->> 'must_change_password')::boolean AS must_change,
       (:'sj'::jsonb ->> 'mfa_required')::boolean AS mfa_required,
       (:'sj'::jsonb ->> 'account') = :'north' AS in_north, tenancy.current_role_name() AS role;
SELECT apitest.try(format('SELECT tenancy.switch_account(%L)', :'north_client'));
SELECT tenancy.change_password(:'sam_pw', 'sam-own-pass-1');
SELECT tenancy.current_role_name() AS role_after_change;
COMMIT;
SELECT :'sj'::jsonb ->> 'token' AS sam_tok \gset

-- ---- switch_account: a user between two agencies ----
BEGIN;
SELECT tenancy.authenticate(:'dana_tok') = :'north' AS in_north;
SELECT tenancy.switch_account(:'south') AS sw \gset
SELECT apitest.shape(:'sw') AS shape;
SELECT (:'sw'::jsonb ->> 'account') = :'south' AS now_south, tenancy.current_role_name() AS role,
       (:'sw'::jsonb ->> 'token') <> :'dana_tok' AS new_token,
       (tenancy.whoami() -> 'principal' ->> 'session') = split_part(:'sw'::jsonb ->> 'token', '_', 2)
           AS context_on_new_session;
COMMIT;
SELECT :'sw'::jsonb ->> 'token' AS dana_tok2 \gset
-- the old token ended; the new one resumes in South, with the old expiry
SELECT apitest.try(format('SELECT tenancy.authenticate(%L)', :'dana_tok'));
BEGIN;
SELECT tenancy.authenticate(:'dana_tok2') = :'south' AS resumes_in_south, tenancy.current_role_name() AS role;
SELECT count(*) AS south_accounts_visible FROM tenancy.accounts;
RESET ROLE;
SELECT n.expires_at = o.expires_at AS same_expiry, n.mfa_verified, o.revoked_at IS NOT NULL AS old_revoked
FROM tenancy.sessions n, tenancy.sessions o
WHERE n.id = split_part(:'dana_tok2', '_', 2)::bigint AND o.id = split_part(:'dana_tok', '_', 2)::bigint;
SET ROLE tenancy_app;
COMMIT;
-- a descendant of a membership's account, with the role of the membership
BEGIN;
SELECT tenancy.authenticate(:'dana_tok2') IS NOT NULL;
SELECT tenancy.switch_account(:'north_client') ->> 'account' = :'north_client' AS now_client,
       tenancy.current_role_name() AS role;
ROLLBACK;
-- a stranger's account, a missing one: not found, and nothing changes
BEGIN;
SELECT tenancy.authenticate(:'dana_tok2') IS NOT NULL;
SELECT apitest.try(format('SELECT tenancy.switch_account(%L)', :'stranger'));
SELECT apitest.try(format('SELECT tenancy.switch_account(%L)', 'acc_999_nope'));
SELECT apitest.try('SELECT tenancy.switch_account(NULL)');
COMMIT;
SELECT tenancy.authenticate(:'dana_tok2') = :'south' AS still_south;
-- the context.switch entry is in the account switched to
RESET ROLE;
SELECT count(*) AS switch_entries FROM tenancy.audit_log
WHERE action = 'context.switch' AND target = :'south';
SET ROLE tenancy_app;
-- no context: refused
SELECT apitest.try(format('SELECT tenancy.switch_account(%L)', :'south'));

-- a sub-user: within its main account's subtree only
BEGIN;
SELECT tenancy.authenticate(:'sam_tok') = :'north' AS sam_in_north;
SELECT tenancy.switch_account(:'north_client') AS ssw \gset
SELECT (:'ssw'::jsonb ->> 'account') = :'north_client' AS sam_in_client, tenancy.current_role_name() AS role,
       :'ssw'::jsonb ? 'token' AS has_token;
SELECT apitest.try(format('SELECT tenancy.switch_account(%L)', :'south'));
COMMIT;
SELECT apitest.try(format('SELECT tenancy.authenticate(%L)', :'sam_tok'));
SELECT tenancy.authenticate(:'ssw'::jsonb ->> 'token') = :'north_client' AS sam_resumes_in_client;

-- an API key: a descendant for this transaction only, no token
RESET ROLE;
SELECT tenancy.admin_create_api_key(:'north', 'north key', 'admin') AS north_key \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'north_key') = :'north' AS key_in_north;
SELECT tenancy.switch_account(:'north_client') AS ksw \gset
SELECT apitest.shape(:'ksw') AS shape, (:'ksw'::jsonb ->> 'account') = :'north_client' AS key_in_client,
       tenancy.current_account() = :'north_client' AS context_in_client;
SELECT apitest.try(format('SELECT tenancy.switch_account(%L)', :'south'));
SELECT apitest.try('SELECT * FROM tenancy.list_sessions()');
COMMIT;
SELECT tenancy.authenticate(:'north_key') = :'north' AS key_still_in_north;

-- ---- list_sessions: own live sessions only, newest first, in pages ----
BEGIN;
SELECT tenancy.api_login('dana@apa.test', 'dana-pass-1') ->> 'token' AS dana_tok3 \gset
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'dana_tok3') IS NOT NULL;
-- dana: two live sessions (the switched one and this one); the ended one is not listed
SELECT count(*) AS live, count(*) FILTER (WHERE current) AS current,
       bool_and(id <> split_part(:'dana_tok', '_', 2)::bigint) AS ended_not_listed,
       array_agg(account = :'south' ORDER BY id) AS in_south
FROM tenancy.list_sessions();
SELECT (array_agg(id ORDER BY id DESC))[1] = split_part(:'dana_tok3', '_', 2)::bigint AS newest_first
FROM tenancy.list_sessions();
SELECT count(*) AS first_page, bool_and(current) AS is_current FROM tenancy.list_sessions(NULL, 1);
SELECT count(*) AS second_page, bool_or(current) AS has_current
FROM tenancy.list_sessions(split_part(:'dana_tok3', '_', 2)::bigint, 1);
SELECT apitest.try('SELECT * FROM tenancy.list_sessions(NULL, 0)');
-- another principal's session is neither listed nor revocable (not found)
SELECT count(*) AS others_listed FROM tenancy.list_sessions()
WHERE id = split_part(:'mfa_tok', '_', 2)::bigint;
SELECT apitest.try(format('SELECT tenancy.revoke_session(%s)', split_part(:'mfa_tok', '_', 2)));
-- revoking one's own: gone from the list
SELECT tenancy.revoke_session(split_part(:'dana_tok2', '_', 2)::bigint);
SELECT count(*) AS live_after_revoke FROM tenancy.list_sessions();
COMMIT;
SELECT apitest.try(format('SELECT tenancy.authenticate(%L)', :'dana_tok2'));
SELECT apitest.try(format('SELECT tenancy.authenticate(%L)', :'mfa_tok')) AS other_unharmed;
RESET ROLE;

-- ---- api_logout: the token ends, this transaction keeps its context ----
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'dana_tok3') IS NOT NULL;
SELECT tenancy.api_logout();
SELECT tenancy.current_account() IS NOT NULL AS context_kept;
COMMIT;
SELECT apitest.try(format('SELECT tenancy.authenticate(%L)', :'dana_tok3'));
-- a restricted (MFA-pending) session may log out
BEGIN;
SELECT tenancy.api_login('north@apa.test', 'north-pass-1') ->> 'token' AS pending_tok \gset
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'pending_tok') IS NOT NULL;
SELECT tenancy.current_role_name() AS role;
SELECT tenancy.api_logout();
COMMIT;
SELECT apitest.try(format('SELECT tenancy.authenticate(%L)', :'pending_tok'));
-- an API key holds no session; no context at all
BEGIN;
SELECT tenancy.authenticate(:'north_key') IS NOT NULL;
SELECT apitest.try('SELECT tenancy.api_logout()');
COMMIT;
SELECT apitest.try('SELECT tenancy.api_logout()');
RESET ROLE;
