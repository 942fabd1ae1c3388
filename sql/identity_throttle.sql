-- Login throttling that a rollback cannot undo: the shared-memory counter
-- (extension/src/throttle.cpp) next to the table counter. Logins, sub-user
-- logins, second factors and change_password.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS idtest;
GRANT USAGE ON SCHEMA idtest TO PUBLIC;
CREATE OR REPLACE FUNCTION idtest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(regexp_replace(SQLERRM, '(acc|sub|inv|key)_[0-9]+_[0-9a-f]+',
                                                             '\1_X', 'g'), 'session [0-9]+', 'session N');
END $$;
CREATE OR REPLACE FUNCTION idtest.mailed_password(who text) RETURNS text LANGUAGE sql AS $$
    SELECT substring(body from 'temporary password: (\S+)') FROM tenancy.outbox
    WHERE recipient = who ORDER BY id DESC LIMIT 1 $$;
REVOKE ALL ON FUNCTION idtest.mailed_password(text) FROM PUBLIC;
-- Waits (at most 30 s, polling) until the login audit writer has handled
-- every queued failed login (extension/src/login_queue.cpp).
CREATE OR REPLACE FUNCTION idtest.queue_drained() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 300 LOOP
        IF tenancy._login_queue_length() = 0 THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END $$;

-- The shared table is there (tests/postgresql.conf preloads tenancy); a day of
-- rewind clears what an earlier run on this server left.
SELECT tenancy._throttle_available() AS shared_counter, tenancy._throttle_rewind('1 day') >= 0 AS cleared;
-- Internal: not for clients.
SET ROLE tenancy_app;
SELECT idtest.try('SELECT tenancy._throttle_attempt(''user:x@y'')');
SELECT idtest.try('SELECT tenancy._throttle_success(''user:x@y'')');
SELECT idtest.try('SELECT tenancy._throttle_rewind(''1 day'')');
RESET ROLE;
SELECT idtest.try('SELECT tenancy._throttle_rewind(''-1 day'')');

SELECT tenancy.create_main_account('Throttle', 'owner@thr.test', 'owner-pass-1') AS main \gset
SET ROLE tenancy_app;

-- ---- user login --------------------------------------------------------------
-- Five wrong passwords in a transaction that then rolls back.
BEGIN;
SELECT count(*) FILTER (WHERE tenancy.login('owner@thr.test', 'bad-' || g) IS NULL) AS failures
FROM generate_series(1, 5) g;
ROLLBACK;
-- Neither counter went with the rollback: the shared one counted each attempt
-- as it started, and the login audit writer wrote the table rows and the
-- login.failure entries again (marked rolled_back) once the transaction had
-- rolled back.
RESET ROLE;
SELECT idtest.queue_drained() AS drained;
SELECT count(*) AS table_failures FROM tenancy.login_failures
WHERE key_hash = tenancy.sha256_hex('user:owner@thr.test');
SELECT tenancy._throttle_count('user:owner@thr.test') AS shared_failures;
SELECT count(*) AS audited, count(*) FILTER (WHERE change->>'rolled_back' = 'true') AS rolled_back,
       min(change->>'reason') AS reason, max((change->>'recent_failures')::int) AS max_recent,
       bool_and(change ? 'attempted_at') AS attempt_time_kept, min(actor_kind) AS actor
FROM tenancy.audit_log WHERE action = 'login.failure' AND target = 'owner@thr.test';
SET ROLE tenancy_app;
-- The right password is refused, with the usual answer.
SET client_min_messages = notice;
SELECT tenancy.login('owner@thr.test', 'owner-pass-1') IS NULL AS throttled;
SET client_min_messages = warning;
SELECT tenancy.login('OWNER@Thr.Test', 'owner-pass-1') IS NULL AS throttled_any_case;
SELECT tenancy.current_account() IS NULL AS no_context;
-- An unknown email behaves the same.
BEGIN;
SELECT count(*) FILTER (WHERE tenancy.login('ghost@thr.test', 'bad-' || g) IS NULL) AS ghost_failures
FROM generate_series(1, 5) g;
ROLLBACK;
SET client_min_messages = notice;
SELECT tenancy.login('ghost@thr.test', 'bad-6') IS NULL AS ghost_throttled;
SET client_min_messages = warning;
-- An attempt whose statement fails afterwards counts as well.
SELECT idtest.try('SELECT 1 / coalesce(length(tenancy.login(''err@thr.test'', ''bad-' || g || ''')), 0)')
FROM generate_series(1, 5) g;
RESET ROLE;
SELECT tenancy._throttle_count('user:err@thr.test') AS failures_despite_errors;
-- (each rolled back with its savepoint: audited in the installation's chain)
SELECT idtest.queue_drained() AS drained;
SELECT count(*) AS err_audited FROM tenancy.audit_log
WHERE action = 'login.failure' AND target = 'err@thr.test' AND main_id = 0 AND change->>'rolled_back' = 'true';
SET ROLE tenancy_app;
-- The cooling period ends (15 minutes; the rewind ages the table rows too).
RESET ROLE;
SELECT tenancy._throttle_rewind('10 minutes') > 0 AS rewound;
SET ROLE tenancy_app;
SELECT tenancy.login('owner@thr.test', 'owner-pass-1') IS NULL AS still_throttled_after_10_minutes;
RESET ROLE;
SELECT tenancy._throttle_rewind('6 minutes') > 0 AS rewound;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('owner@thr.test', 'owner-pass-1') IS NOT NULL AS after_cooling;
COMMIT;
-- A success forgets the failures: 4 + success + 4 never reaches 5.
BEGIN;
SELECT count(*) FILTER (WHERE tenancy.login('owner@thr.test', 'bad-' || g) IS NULL) AS failures
FROM generate_series(1, 4) g;
ROLLBACK;
BEGIN;
SELECT tenancy.login('owner@thr.test', 'owner-pass-1') IS NOT NULL AS fifth_attempt_right;
COMMIT;
BEGIN;
SELECT count(*) FILTER (WHERE tenancy.login('owner@thr.test', 'bad-' || g) IS NULL) AS failures
FROM generate_series(1, 4) g;
ROLLBACK;
BEGIN;
SELECT tenancy.login('owner@thr.test', 'owner-pass-1') IS NOT NULL AS not_throttled;
COMMIT;
-- Committed failures are still counted in the table too (survives a restart).
SELECT count(*) FILTER (WHERE tenancy.login('owner@thr.test', 'bad-' || g) IS NULL) AS failures
FROM generate_series(1, 5) g;
RESET ROLE;
SELECT count(*) AS table_failures FROM tenancy.login_failures
WHERE key_hash = tenancy.sha256_hex('user:owner@thr.test');
-- (a restart empties shared memory: the table alone still refuses)
SELECT tenancy._throttle_rewind_shared('1 day') > 0 AS shared_forgotten;
SET ROLE tenancy_app;
SELECT tenancy.login('owner@thr.test', 'owner-pass-1') IS NULL AS table_still_throttles;
RESET ROLE;
UPDATE tenancy.login_failures SET failed_at = failed_at - interval '16 minutes';

-- ---- sub-user login -------------------------------------------------------------
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('owner@thr.test', 'owner-pass-1') IS NOT NULL AS owner_login;
SELECT tenancy.create_sub_user('sam@thr.test', 'Sam', 'Poe', 'sam-temp-1') AS sam \gset
SELECT tenancy.create_sub_user('tia@thr.test', 'Tia', 'Poe', 'tia-temp-1') AS tia \gset
SELECT tenancy.activate_sub_user(:'sam'), tenancy.activate_sub_user(:'tia');
COMMIT;
RESET ROLE;
SELECT idtest.mailed_password('sam@thr.test') AS sam_pw, idtest.mailed_password('tia@thr.test') AS tia_pw \gset
SET ROLE tenancy_app;
BEGIN;
SELECT count(*) FILTER (WHERE tenancy.login_sub_user('owner@thr.test', 'sam@thr.test', 'bad-' || g) IS NULL)
    AS failures FROM generate_series(1, 5) g;
ROLLBACK;
SELECT tenancy.login_sub_user('owner@thr.test', 'sam@thr.test', :'sam_pw') IS NULL AS sub_user_throttled;
-- per sub-user: another sub-user of the same main account is not affected
BEGIN;
SELECT tenancy.login_sub_user('owner@thr.test', 'tia@thr.test', :'tia_pw') IS NOT NULL AS other_sub_user_ok;
ROLLBACK;
-- a wrong main account email is throttled the same way
BEGIN;
SELECT count(*) FILTER (WHERE tenancy.login_sub_user('nobody@thr.test', 'sam@thr.test', 'bad-' || g) IS NULL)
    AS failures FROM generate_series(1, 5) g;
ROLLBACK;
RESET ROLE;
SELECT tenancy._throttle_check('sub:nobody@thr.test:sam@thr.test') AS unknown_main_throttled;
-- The key is the sub-user targeted, not the owner email typed: a second owner
-- of the same main account buys no further guesses (3 + 2 reach 5).
SELECT idtest.queue_drained() AS drained;
SELECT tenancy._throttle_rewind('1 day') > 0 AS cleared;
INSERT INTO tenancy.users (email, name, password_hash) VALUES ('own2@thr.test', 'Own', tenancy.hash_password('own2-pass-1'));
INSERT INTO tenancy.memberships (account_path, user_id, role)
SELECT a.path, u.id, 'owner' FROM tenancy.accounts a, tenancy.users u
WHERE a.public_id = :'main' AND u.email = 'own2@thr.test';
SET ROLE tenancy_app;
BEGIN;
SELECT count(*) FILTER (WHERE tenancy.login_sub_user('owner@thr.test', 'sam@thr.test', 'bad-' || g) IS NULL)
    AS failures FROM generate_series(1, 3) g;
SELECT count(*) FILTER (WHERE tenancy.login_sub_user('OWN2@thr.test', 'sam@thr.test', 'bad-' || g) IS NULL)
    AS failures FROM generate_series(1, 2) g;
ROLLBACK;
SELECT tenancy.login_sub_user('own2@thr.test', 'sam@thr.test', :'sam_pw') IS NULL AS throttled_via_owner_2;
SELECT tenancy.login_sub_user('owner@thr.test', 'sam@thr.test', :'sam_pw') IS NULL AS throttled_via_owner_1;
BEGIN;
SELECT tenancy.login_sub_user('own2@thr.test', 'tia@thr.test', :'tia_pw') IS NOT NULL AS sibling_ok_via_owner_2;
ROLLBACK;
RESET ROLE;
-- the rolled-back sub-user failures are audited in the main account
SELECT idtest.queue_drained() AS drained;
SELECT count(*) AS sam_rolled_back_audited FROM tenancy.audit_log l JOIN tenancy.accounts a ON a.main_id = l.main_id AND a.id = l.main_id
WHERE a.public_id = :'main' AND l.action = 'login.failure' AND l.target = 'sam@thr.test'
  AND l.change->>'rolled_back' = 'true' AND l.change->>'login' = 'sub_user';

-- ---- change_password -----------------------------------------------------------
RESET ROLE;
SELECT tenancy._throttle_rewind('1 day') > 0 AS cleared;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('owner@thr.test', 'owner-pass-1') AS tok \gset
COMMIT;
-- Each wrong current password raises (and rolls back) ...
BEGIN;
SELECT tenancy.authenticate(:'tok') IS NOT NULL AS authenticated;
SELECT idtest.try(format('SELECT tenancy.change_password(%L, %L)', 'wrong-' || g, 'owner-pass-2'))
FROM generate_series(1, 5) g;
ROLLBACK;
-- ... yet counts (in both counters: the table rows come back through the
-- queue): the right one is refused now, with the same message.
BEGIN;
SELECT tenancy.authenticate(:'tok') IS NOT NULL AS authenticated;
SELECT idtest.try(format('SELECT tenancy.change_password(%L, %L)', 'owner-pass-1', 'owner-pass-2'));
ROLLBACK;
RESET ROLE;
SELECT idtest.queue_drained() AS drained;
SELECT count(*) AS password_table_failures FROM tenancy.login_failures f, tenancy.users u
WHERE u.email = 'owner@thr.test' AND f.key_hash = tenancy.sha256_hex('password:user:' || u.id);
SELECT tenancy._throttle_rewind('16 minutes') > 0 AS rewound;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'tok') IS NOT NULL AS authenticated;
SELECT idtest.try(format('SELECT tenancy.change_password(%L, %L)', 'owner-pass-1', 'owner-pass-2'));
COMMIT;
-- a sub-user's guesses too (its own key)
BEGIN;
SELECT tenancy.login_sub_user('owner@thr.test', 'tia@thr.test', :'tia_pw') AS tia_tok \gset
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'tia_tok') IS NOT NULL AS authenticated;
SELECT count(*) FILTER (WHERE r LIKE '28P01:%') AS refused
FROM (SELECT idtest.try(format('SELECT tenancy.change_password(%L, %L)', 'wrong-' || g, 'tia-own-pass-1')) AS r
      FROM generate_series(1, 5) g) x;
ROLLBACK;
BEGIN;
SELECT tenancy.authenticate(:'tia_tok') IS NOT NULL AS authenticated;
SELECT idtest.try(format('SELECT tenancy.change_password(%L, %L)', :'tia_pw', 'tia-own-pass-1'));
ROLLBACK;

-- ---- second factor ---------------------------------------------------------------
RESET ROLE;
INSERT INTO tenancy.users (email, name, password_hash) VALUES ('max@thr.test', 'Max', tenancy.hash_password('max-pass-1'));
INSERT INTO tenancy.memberships (account_path, user_id, role)
SELECT a.path, u.id, 'admin' FROM tenancy.accounts a, tenancy.users u
WHERE a.public_id = :'main' AND u.email = 'max@thr.test';
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('max@thr.test', 'max-pass-1') IS NOT NULL AS max_login;
SELECT substring(tenancy.enroll_mfa() from 'secret=([A-Z2-7]+)') AS secret \gset
SELECT array_length(tenancy.confirm_mfa(tenancy.totp(:'secret')), 1) AS recovery_codes;
COMMIT;
BEGIN;
SELECT tenancy.login('max@thr.test', 'max-pass-1') AS mfa_tok \gset
COMMIT;
-- Five wrong codes, rolled back (the session's own count goes with them) ...
BEGIN;
SELECT tenancy.authenticate(:'mfa_tok') IS NOT NULL AS authenticated;
SELECT count(*) FILTER (WHERE NOT tenancy.verify_mfa('00000' || g)) AS wrong_codes FROM generate_series(1, 5) g;
ROLLBACK;
RESET ROLE;
UPDATE tenancy.users SET mfa_last_step = NULL WHERE email = 'max@thr.test';
SET ROLE tenancy_app;
-- ... and the right code is refused for the cooling period.
BEGIN;
SELECT tenancy.authenticate(:'mfa_tok') IS NOT NULL AS authenticated;
SELECT tenancy.verify_mfa(tenancy.totp(:'secret')) AS right_code_while_throttled, tenancy.current_role_name();
COMMIT;
RESET ROLE;
SELECT idtest.queue_drained() AS drained;
SELECT tenancy._throttle_rewind('16 minutes') > 0 AS rewound;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'mfa_tok') IS NOT NULL AS authenticated;
SELECT tenancy.verify_mfa(tenancy.totp(:'secret')) AS right_code_after_cooling, tenancy.current_role_name();
COMMIT;
RESET ROLE;

-- ---- a full shared table -------------------------------------------------------
-- A locked name (five failures, rolled back) is never evicted, however many
-- other names fail afterwards (20,000, and more than tenancy.login_throttle_entries): the
-- table refuses the names it has no room for (fail closed) instead.
SET ROLE tenancy_app;
BEGIN;
SELECT count(*) FILTER (WHERE tenancy.login('victim@thr.test', 'bad-' || g) IS NULL) AS failures
FROM generate_series(1, 5) g;
ROLLBACK;
RESET ROLE;
SELECT count(*) FILTER (WHERE NOT tenancy._throttle_attempt('user:junk-' || g || '@thr.test')) > 0 AS junk_refused
FROM generate_series(1, greatest(20000, coalesce(nullif(current_setting('tenancy.login_throttle_entries', true), '')::int, 0) + 1000)) g;
SELECT tenancy._throttle_check('user:victim@thr.test') AS victim_still_locked;
SELECT tenancy._throttle_attempt('user:newcomer@thr.test') AS newcomer_admitted_while_full;
-- Once the windows have passed (rewound here), the table makes room again.
SELECT tenancy._throttle_rewind('1 day') > 0 AS rewound;
SELECT tenancy._throttle_attempt('user:newcomer@thr.test') AS newcomer_admitted_after;
SELECT tenancy._throttle_check('user:victim@thr.test') AS victim_locked_after;
SELECT tenancy._throttle_success('user:newcomer@thr.test');
SELECT idtest.queue_drained() AS drained;
