-- Users: login, session tokens, authenticate, act_as, sessions, logout, throttling.
\set VERBOSITY terse
SET client_min_messages = warning;
-- Forget login failures an earlier run left in shared memory (see identity_throttle).
SELECT coalesce(tenancy._throttle_rewind('1 day'), 0) >= 0 AS throttle_reset;
CREATE SCHEMA IF NOT EXISTS idtest;
GRANT USAGE ON SCHEMA idtest TO PUBLIC;
-- runs a statement; returns 'ok' or SQLSTATE and message with random ids masked
CREATE OR REPLACE FUNCTION idtest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(regexp_replace(SQLERRM, '(acc|sub|inv|key)_[0-9]+_[0-9a-f]+',
                                                             '\1_X', 'g'), 'session [0-9]+', 'session N');
END $$;
SELECT tenancy.create_main_account('Acme', 'owner@idu.test', 'owner-pass-1') AS acme \gset
SELECT tenancy.create_main_account('Beta', 'boss@idu.test', 'boss-pass-1') AS beta \gset
SELECT tenancy.create_main_account('Gamma', 'gamma@idu.test', 'gamma-pass-1') AS gamma \gset
-- the Acme owner is also a viewer of Beta (created later than the Acme membership)
INSERT INTO tenancy.memberships (account_path, user_id, role)
SELECT a.path, u.id, 'viewer' FROM tenancy.accounts a, tenancy.users u
WHERE a.public_id = :'beta' AND u.email = 'owner@idu.test';
SET ROLE tenancy_app;

-- login: token format, context in the first membership's account
BEGIN;
SELECT tenancy.login('owner@idu.test', 'owner-pass-1') AS tok \gset
SELECT :'tok' ~ '^tns_[0-9]+_[A-Za-z0-9_-]{43}$' AS token_format;
SELECT tenancy.current_account() = :'acme' AS in_acme, tenancy.current_role_name() AS role,
       tenancy.whoami() -> 'principal' ->> 'kind' AS kind;
SELECT w -> 'principal' ->> 'kind' AS kind, w ->> 'role' AS role, w ->> 'scope' AS scope,
       w -> 'principal' -> 'session' IS NOT NULL AS has_session,
       (w ->> 'expires_at')::timestamptz BETWEEN now() + interval '11 hours' AND now() + interval '12 hours'
           AS expires_in_12h
FROM tenancy.whoami() w;
SELECT tenancy.create_account(:'acme', 'Acme Sub') AS acme_sub \gset
COMMIT;
-- the context ended with the transaction
SELECT tenancy.current_account() IS NULL AS no_context;

-- the session token authenticates later transactions, in the login account
BEGIN;
SELECT tenancy.authenticate(:'tok') = :'acme' AS authenticated;
SELECT count(*) AS accounts_visible FROM tenancy.accounts;
-- act_as: a descendant, another account of theirs (with that role), not a stranger's
SELECT tenancy.act_as(:'acme_sub') = :'acme_sub' AS sub_ok, tenancy.current_role_name();
SELECT tenancy.act_as(:'beta') = :'beta' AS beta_ok, tenancy.current_role_name();
SELECT count(*) AS beta_accounts FROM tenancy.accounts;
SELECT idtest.try(format('SELECT tenancy.act_as(%L)', :'gamma'));
-- as a viewer of Beta the user cannot create accounts there
SELECT tenancy.create_account(:'beta', 'nope');
ROLLBACK;

-- login into a given account: must be a membership's account or a descendant
BEGIN;
SELECT tenancy.login('owner@idu.test', 'owner-pass-1', :'beta') IS NOT NULL AS beta_login,
       tenancy.current_account() = :'beta' AS in_beta, tenancy.current_role_name();
ROLLBACK;
BEGIN;
SELECT tenancy.login('owner@idu.test', 'owner-pass-1', :'acme_sub') IS NOT NULL AS sub_login,
       tenancy.current_account() = :'acme_sub' AS in_sub, tenancy.current_role_name();
ROLLBACK;
SELECT idtest.try(format('SELECT tenancy.login(%L, %L, %L)', 'owner@idu.test', 'owner-pass-1', :'gamma'));

-- wrong password / unknown email: NULL, the same warning, no context
SET client_min_messages = notice;
SELECT tenancy.login('owner@idu.test', 'wrong-password') IS NULL AS wrong_password;
SELECT tenancy.login('nobody@idu.test', 'wrong-password') IS NULL AS unknown_email;
SET client_min_messages = warning;
SELECT tenancy.current_account() IS NULL AS no_context;

-- sessions: each principal sees only its own; the hash is not readable
BEGIN;
SELECT tenancy.authenticate(:'tok') IS NOT NULL;
SELECT count(*) >= 1 AS own_sessions,
       bool_and(principal_kind = 'user') AS all_user FROM tenancy.sessions;
SAVEPOINT s;
SELECT secret_hash FROM tenancy.sessions;
ROLLBACK TO s;
COMMIT;
BEGIN;
SELECT tenancy.login('boss@idu.test', 'boss-pass-1') AS boss_tok \gset
SELECT count(*) AS boss_sessions FROM tenancy.sessions;
COMMIT;

-- logout revokes the current session: the token stops working
BEGIN;
SELECT tenancy.authenticate(:'tok') IS NOT NULL;
SELECT tenancy.logout();
SELECT tenancy.current_account() IS NULL AS context_cleared;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'tok');
ROLLBACK;
-- revoke_session: another of one's own sessions
BEGIN;
SELECT tenancy.login('owner@idu.test', 'owner-pass-1') AS tok2 \gset
COMMIT;
BEGIN;
SELECT tenancy.login('owner@idu.test', 'owner-pass-1') AS tok3 \gset
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'tok3') IS NOT NULL;
-- not someone else's, nor one that does not exist
SELECT idtest.try(format('SELECT tenancy.revoke_session(%s)', split_part(:'boss_tok', '_', 2)));
SELECT idtest.try('SELECT tenancy.revoke_session(999999999)');
ROLLBACK;
BEGIN;
SELECT tenancy.authenticate(:'tok3') IS NOT NULL AS tok3_live;
SELECT tenancy.revoke_session(split_part(:'tok2', '_', 2)::bigint);
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'tok2');
ROLLBACK;
-- a forged or malformed token
BEGIN;
SELECT tenancy.authenticate(format('tns_%s_%s', split_part(:'tok3', '_', 2), repeat('A', 43)));
ROLLBACK;
BEGIN;
SELECT tenancy.authenticate('tns_1_short');
ROLLBACK;

-- expired sessions are refused
RESET ROLE;
UPDATE tenancy.sessions SET expires_at = now() - interval '1 second'
WHERE id = split_part(:'tok3', '_', 2)::bigint;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'tok3');
ROLLBACK;

-- session scope: revalidated at every transaction; act_as to another main account sticks
BEGIN;
SELECT tenancy.login('owner@idu.test', 'owner-pass-1') AS tok4 \gset
COMMIT;
SELECT tenancy.authenticate(:'tok4', session => true) = :'acme' AS session_auth;
SELECT tenancy.act_as(:'beta') = :'beta' AS switched;
SELECT tenancy.current_account() = :'beta' AS still_beta, tenancy.current_role_name();
SELECT tenancy.reset();

-- inactive accounts: login into the only inactive ones fails
BEGIN;
SELECT tenancy.login('gamma@idu.test', 'gamma-pass-1') IS NOT NULL;
COMMIT;
RESET ROLE;
UPDATE tenancy.accounts SET status = 'inactive' WHERE public_id = :'gamma';
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('gamma@idu.test', 'gamma-pass-1');
ROLLBACK;
-- a user with an active and an inactive account lands in the active one
RESET ROLE;
UPDATE tenancy.accounts SET status = 'inactive' WHERE public_id = :'acme';
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('owner@idu.test', 'owner-pass-1') IS NOT NULL,
       tenancy.current_account() = :'beta' AS landed_in_beta;
ROLLBACK;
SELECT idtest.try(format('SELECT tenancy.login(%L, %L, %L)', 'owner@idu.test', 'owner-pass-1', :'acme_sub'));
RESET ROLE;
UPDATE tenancy.accounts SET status = 'active' WHERE public_id = :'acme';
SET ROLE tenancy_app;

-- change_password: wrong old password refused; the new one works, the old does not
BEGIN;
SELECT tenancy.login('boss@idu.test', 'boss-pass-1') IS NOT NULL;
SELECT tenancy.change_password('not-it', 'boss-pass-2');
ROLLBACK;
BEGIN;
SELECT tenancy.login('boss@idu.test', 'boss-pass-1') IS NOT NULL;
SELECT tenancy.change_password('boss-pass-1', 'short');
ROLLBACK;
BEGIN;
SELECT tenancy.login('boss@idu.test', 'boss-pass-1') IS NOT NULL;
SELECT tenancy.change_password('boss-pass-1', 'boss-pass-2');
COMMIT;
SELECT tenancy.login('boss@idu.test', 'boss-pass-1') IS NULL AS old_refused;
BEGIN;
SELECT tenancy.login('boss@idu.test', 'boss-pass-2') IS NOT NULL AS new_accepted;
ROLLBACK;

-- a user who must change their password gets a context that can only do that
RESET ROLE;
UPDATE tenancy.users SET must_change_password = true WHERE email = 'boss@idu.test';
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('boss@idu.test', 'boss-pass-2') IS NOT NULL;
SELECT tenancy.current_role_name(), count(*) AS accounts_visible FROM tenancy.accounts;
SAVEPOINT s;
SELECT tenancy.create_account(:'beta', 'x');
ROLLBACK TO s;
SAVEPOINT s;
SELECT tenancy.act_as(:'beta');
ROLLBACK TO s;
SELECT tenancy.change_password('boss-pass-2', 'boss-pass-3');
SELECT tenancy.current_role_name(), count(*) AS accounts_visible FROM tenancy.accounts;
COMMIT;

-- throttling: 5 failures in 15 minutes lock the email, even with the right
-- password; unknown emails answer the same
SELECT count(*) FILTER (WHERE tenancy.login('boss@idu.test', 'bad-' || g) IS NULL) AS failures
FROM generate_series(1, 5) g;
SELECT tenancy.login('boss@idu.test', 'boss-pass-3') IS NULL AS locked_out;
SELECT count(*) FILTER (WHERE tenancy.login('ghost@idu.test', 'bad-' || g) IS NULL) AS ghost_failures
FROM generate_series(1, 6) g;
-- the count survives although each failed call's transaction committed only the failure
RESET ROLE;
SELECT count(*) AS recorded FROM tenancy.login_failures
WHERE key_hash = tenancy.sha256_hex('user:boss@idu.test');
-- no email in clear, nor readable by the app
SELECT count(*) AS clear_emails FROM tenancy.login_failures WHERE key_hash LIKE '%@%';
SET ROLE tenancy_app;
SELECT * FROM tenancy.login_failures;
-- the cooling period ends
RESET ROLE;
UPDATE tenancy.login_failures SET failed_at = failed_at - interval '16 minutes';
-- and in the shared-memory counter (a rollback does not undo it; see identity_throttle)
SELECT coalesce(tenancy._throttle_rewind('16 minutes'), 0) >= 0 AS shared_counter_rewound;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('boss@idu.test', 'boss-pass-3') IS NOT NULL AS after_cooling;
COMMIT;
RESET ROLE;
SELECT count(*) AS cleared_on_success FROM tenancy.login_failures
WHERE key_hash = tenancy.sha256_hex('user:boss@idu.test');
-- passwords are argon2id
SELECT bool_and(password_hash LIKE '$argon2id$%') AS argon2id FROM tenancy.users WHERE email LIKE '%@idu.test';
