-- Identity events in the audit log: logins (users, sub-users) that succeed or
-- fail, second factors, context switches and API-key use. Who reads them, and
-- that no password, code or token is ever recorded.
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
-- The identity events after entry `after` (ids grow within this backend), as
-- the DBA sees them, with ids replaced by names. Entries the login audit
-- writer wrote for rolled-back attempts (another backend: other ids) are
-- counted on their own.
CREATE OR REPLACE FUNCTION idtest.events(after bigint)
    RETURNS TABLE (chain text, account text, actor text, credential boolean, action text, target text,
                   detail text)
    LANGUAGE sql AS $$
    SELECT CASE WHEN l.main_id = 0 THEN 'installation'
                ELSE (SELECT a.name FROM tenancy.accounts a WHERE a.main_id = l.main_id AND a.id = l.main_id) END,
           coalesce((SELECT a.name FROM tenancy.accounts a WHERE a.path OPERATOR(tenancy.=) l.account_path), '-'),
           l.actor_kind || coalesce(':' || coalesce(
               (SELECT u.email FROM tenancy.users u WHERE l.actor_kind = 'user' AND u.id::text = l.actor_id),
               (SELECT s.email FROM tenancy.sub_users s
                WHERE l.actor_kind = 'sub_user' AND s.main_id = l.main_id AND s.public_id = l.actor_id),
               (SELECT k.name FROM tenancy.api_keys k
                WHERE l.actor_kind = 'api_key' AND k.main_id = l.main_id AND k.public_id = l.actor_id),
               l.actor_id), ''),
           l.credential_id IS NOT NULL, l.action,
           regexp_replace(l.target, '(acc|key|sub|inv)_[0-9]+_[0-9a-f]+', '\1_X', 'g'),
           regexp_replace(l.change::text, '(acc|key|sub|inv)_[0-9]+_[0-9a-f]+', '\1_X', 'g')
    FROM tenancy.audit_log l
    WHERE l.id > after AND NOT coalesce(l.change ? 'rolled_back', false)
      AND l.action IN ('login.success', 'login.failure', 'mfa.success', 'mfa.failure', 'mfa.enroll',
                       'password.change', 'context.switch', 'api_key.use')
    ORDER BY l.id $$;
REVOKE ALL ON FUNCTION idtest.events(bigint) FROM PUBLIC;
CREATE OR REPLACE FUNCTION idtest.mark() RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(max(id), 0) FROM tenancy.audit_log WHERE NOT coalesce(change ? 'rolled_back', false) $$;
REVOKE ALL ON FUNCTION idtest.mark() FROM PUBLIC;
SELECT tenancy._throttle_rewind('1 day') >= 0 AS throttle_cleared;

SELECT tenancy.create_main_account('Evt Alpha', 'alpha@evt.test', 'alpha-pass-1') AS alpha \gset
SELECT tenancy.create_main_account('Evt Beta', 'beta@evt.test', 'beta-pass-1') AS beta \gset
SELECT a.main_id AS alpha_main FROM tenancy.accounts a WHERE a.public_id = :'alpha' \gset
SELECT a.main_id AS beta_main FROM tenancy.accounts a WHERE a.public_id = :'beta' \gset
-- The Alpha owner is also a viewer of Beta; Mo is an admin of Alpha (MFA later).
INSERT INTO tenancy.memberships (account_path, user_id, role)
SELECT a.path, u.id, 'viewer' FROM tenancy.accounts a, tenancy.users u
WHERE a.public_id = :'beta' AND u.email = 'alpha@evt.test';
INSERT INTO tenancy.users (email, name, password_hash) VALUES ('mo@evt.test', 'Mo', tenancy.hash_password('mo-pass-1'));
INSERT INTO tenancy.memberships (account_path, user_id, role)
SELECT a.path, u.id, 'admin' FROM tenancy.accounts a, tenancy.users u
WHERE a.public_id = :'alpha' AND u.email = 'mo@evt.test';
SELECT tenancy.admin_create_api_key(:'alpha', 'alpha key') AS alpha_key \gset

-- ---- user logins ------------------------------------------------------------------
SET ROLE tenancy_app;
RESET ROLE;
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('alpha@evt.test', 'alpha-pass-1') AS alpha_tok \gset
SELECT tenancy.create_account(:'alpha', 'Evt Alpha Sub') AS alpha_sub \gset
COMMIT;
-- A wrong password returns NULL and commits its entries: one in every main
-- account the user belongs to (Alpha, and Beta where the user is a viewer).
BEGIN;
SELECT tenancy.login('Alpha@evt.test', 'bad-password-1') IS NULL AS failed;
COMMIT;
-- An unknown email: the installation's chain. A password typed into the email
-- field is not recorded.
SELECT tenancy.login('ghost@evt.test', 'bad-password-2') IS NULL AS failed;
SELECT tenancy.login('Secret-Typed-In-Email-1', 'bad-password-3') IS NULL AS failed;
RESET ROLE;
SELECT * FROM idtest.events(:m::bigint);
-- The success names the session (credential) it opened.
SELECT l.credential_id = split_part(:'alpha_tok', '_', 2)::bigint AS credential_is_session
FROM tenancy.audit_log l WHERE l.id > :m AND l.action = 'login.success';

-- Throttled attempts are recorded too. Attempts in a rolled-back transaction
-- lose neither their count nor their entries: the login audit writer writes
-- these again (rolled_back, with the attempt's time) once the transaction has
-- rolled back (waited for here).
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
BEGIN;
SELECT count(*) FILTER (WHERE tenancy.login('mo@evt.test', 'bad-' || g) IS NULL) AS failures
FROM generate_series(1, 5) g;
ROLLBACK;
RESET ROLE;
DO $$ BEGIN
    FOR i IN 1 .. 300 LOOP
        EXIT WHEN tenancy._login_queue_length() = 0;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SET ROLE tenancy_app;
SELECT tenancy.login('mo@evt.test', 'mo-pass-1') IS NULL AS throttled;
SELECT tenancy.login('nobody@evt.test', 'bad-password-4') IS NULL AS failed;
RESET ROLE;
SELECT * FROM idtest.events(:m::bigint);
SELECT count(*) AS rolled_back_entries, min(change->>'reason') AS reason, bool_and(change ? 'attempted_at') AS timed
FROM tenancy.audit_log WHERE target = 'mo@evt.test' AND action = 'login.failure' AND change->>'rolled_back' = 'true';
SELECT tenancy._throttle_rewind('1 day') > 0 AS throttle_cleared;

-- Accepting an invitation opens a session: a login too.
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'alpha_tok') IS NOT NULL AS authenticated;
SELECT tenancy.invite(:'alpha_sub', 'ivy@evt.test', 'member') IS NOT NULL AS invited;
COMMIT;
RESET ROLE;
SELECT substring(body from '(tni_\S+)') AS ivy_inv FROM tenancy.outbox WHERE recipient = 'ivy@evt.test' \gset
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.accept_invitation(:'ivy_inv', 'Ivy', 'ivy-pass-1') IS NOT NULL AS accepted;
COMMIT;
RESET ROLE;
SELECT * FROM idtest.events(:m::bigint);

-- ---- sub-user logins ------------------------------------------------------------
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'alpha_tok') IS NOT NULL AS authenticated;
SELECT tenancy.create_sub_user('sue@evt.test', 'Sue', 'Kay', 'sue-temp-1') AS sue \gset
SELECT tenancy.activate_sub_user(:'sue');
COMMIT;
RESET ROLE;
SELECT idtest.mailed_password('sue@evt.test') AS sue_pw \gset
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
SELECT tenancy.login_sub_user('alpha@evt.test', 'sue@evt.test', :'sue_pw') AS sue_tok \gset
SELECT tenancy.login_sub_user('alpha@evt.test', 'sue@evt.test', 'bad-password-5') IS NULL AS bad_password;
SELECT tenancy.login_sub_user('alpha@evt.test', 'zed@evt.test', 'bad-password-6') IS NULL AS unknown_sub_user;
SELECT tenancy.login_sub_user('nobody@evt.test', 'sue@evt.test', 'bad-password-7') IS NULL AS unknown_main;
RESET ROLE;
SELECT * FROM idtest.events(:m::bigint);

-- ---- second factor -----------------------------------------------------------------
-- Turning MFA on is an event in the session's account.
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('mo@evt.test', 'mo-pass-1') IS NOT NULL AS mo_login;
SELECT substring(tenancy.enroll_mfa() from 'secret=([A-Z2-7]+)') AS secret \gset
SELECT array_length(tenancy.confirm_mfa(tenancy.totp(:'secret')), 1) AS recovery_codes;
COMMIT;
RESET ROLE;
SELECT * FROM idtest.events(:m::bigint);
UPDATE tenancy.users SET mfa_last_step = NULL WHERE email = 'mo@evt.test';
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('mo@evt.test', 'mo-pass-1') AS mo_tok \gset
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'mo_tok') IS NOT NULL AS authenticated;
SELECT tenancy.verify_mfa('000000') AS wrong_code;
SELECT tenancy.verify_mfa(tenancy.totp(:'secret')) AS right_code;
COMMIT;
RESET ROLE;
SELECT * FROM idtest.events(:m::bigint);

-- A user's password change is an event too (a user row belongs to no
-- account); the passwords are nowhere in it.
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('ivy@evt.test', 'ivy-pass-1') IS NOT NULL AS ivy_login;
SELECT tenancy.change_password('ivy-pass-1', 'ivy-pass-2');
COMMIT;
RESET ROLE;
SELECT * FROM idtest.events(:m::bigint);

-- ---- context switches ----------------------------------------------------------------
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'alpha_tok') IS NOT NULL AS authenticated;
SELECT tenancy.act_as(:'alpha_sub') = :'alpha_sub' AS in_sub;
SELECT tenancy.act_as(:'beta') = :'beta' AS in_beta;
COMMIT;
-- a refused switch records nothing (the error rolls back)
BEGIN;
SELECT tenancy.authenticate(:'alpha_key') IS NOT NULL AS authenticated;
SELECT idtest.try(format('SELECT tenancy.act_as(%L)', :'beta'));
SELECT tenancy.act_as(:'alpha_sub') = :'alpha_sub' AS key_in_sub;
COMMIT;
-- a read-only transaction cannot write the entry: the switch is not recorded
BEGIN READ ONLY;
SELECT tenancy.authenticate(:'alpha_tok') IS NOT NULL AS authenticated;
SELECT tenancy.act_as(:'alpha_sub') = :'alpha_sub' AS in_sub_read_only;
COMMIT;
RESET ROLE;
SELECT * FROM idtest.events(:m::bigint);

-- ---- API-key use: at most one entry a minute per key -------------------------------------
UPDATE tenancy.api_key_usage SET last_used_at = NULL;
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'alpha_key') IS NOT NULL AS authenticated;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'alpha_key') IS NOT NULL AS authenticated_again;
COMMIT;
RESET ROLE;
SELECT * FROM idtest.events(:m::bigint);
UPDATE tenancy.api_key_usage SET last_used_at = now() - interval '2 minutes';
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
-- not in a read-only transaction (like the last-used time itself) ...
BEGIN READ ONLY;
SELECT tenancy.authenticate(:'alpha_key') IS NOT NULL AS authenticated_read_only;
COMMIT;
-- ... and again a minute later
BEGIN;
SELECT tenancy.authenticate(:'alpha_key') IS NOT NULL AS authenticated_later;
COMMIT;
RESET ROLE;
SELECT * FROM idtest.events(:m::bigint);

-- ---- never a secret ----------------------------------------------------------------------
SELECT count(*) AS entries_with_secrets FROM tenancy.audit_log l
WHERE l.action IN ('login.success', 'login.failure', 'mfa.success', 'mfa.failure', 'mfa.enroll', 'password.change',
                   'context.switch', 'api_key.use')
  -- (public ids of accounts and keys left out: a 6-digit code could occur in their hex)
  AND regexp_replace(coalesce(l.target, '') || coalesce(l.change::text, '') || coalesce(l.actor_id, ''),
                     '(acc|key|sub|inv)_[0-9]+_[0-9a-f]+', '', 'g')
      ~* ('(alpha-pass|bad-password|bad-[0-9]|mo-pass|ivy-pass|Secret-Typed|sue-temp|tns_|tnc_|tni_|000000|'
          || :'sue_pw' || '|' || tenancy.totp(:'secret') || '|' || :'secret' || ')');

-- ---- who reads them ------------------------------------------------------------------------
SET ROLE tenancy_app;
-- no context: nothing
SELECT count(*) AS without_context FROM tenancy.audit_log;
-- the Alpha owner: Alpha's identity events, none of Beta's, none of the installation's
BEGIN;
SELECT tenancy.authenticate(:'alpha_tok') IS NOT NULL AS authenticated;
SELECT count(*) FILTER (WHERE main_id = :alpha_main AND action LIKE 'login.%') > 0 AS reads_alpha_logins,
       count(*) FILTER (WHERE action = 'login.failure' AND target = 'sue@evt.test') AS sub_user_failures,
       count(*) FILTER (WHERE action LIKE 'mfa.%') AS mfa_events,
       count(*) FILTER (WHERE main_id <> :alpha_main) AS other_chains
FROM tenancy.audit_log;
COMMIT;
-- the Beta owner: Beta's entry of its viewer's failed login, nothing of Alpha's
BEGIN;
SELECT tenancy.login('beta@evt.test', 'beta-pass-1') IS NOT NULL AS beta_login;
SELECT action, target, change ->> 'reason' AS reason FROM tenancy.audit_log
WHERE action = 'login.failure' ORDER BY id;
SELECT count(*) FILTER (WHERE main_id <> :beta_main) AS other_chains FROM tenancy.audit_log;
COMMIT;
-- a sub-user cannot read the log at all
BEGIN;
SELECT tenancy.authenticate(:'sue_tok') IS NOT NULL AS authenticated;
SELECT count(*) AS sub_user_reads FROM tenancy.audit_log;
COMMIT;
RESET ROLE;
-- the DBA reads the installation's chain: the failures that named no account
SELECT actor_kind, action, target, change ->> 'reason' AS reason, account_path IS NULL AS no_account
FROM tenancy.audit_log WHERE main_id = 0 AND target LIKE '%evt.test' ORDER BY id;

-- ---- provisioning: sub-users and invitations are row changes on the log -------------------
-- Created, activated, edited, password changed by the sub-user, deactivated,
-- deleted; an invitation sent and accepted. A login's bookkeeping (last
-- login time) is not an entry; hashes are only named under "redacted".
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'alpha_tok') IS NOT NULL AS authenticated;
SELECT tenancy.create_sub_user('pat@evt.test', 'Pat', 'Lee', 'pat-temp-1') AS pat \gset
SELECT tenancy.activate_sub_user(:'pat');
SELECT tenancy.update_sub_user(:'pat', name => 'Patricia', visible => false);
SELECT tenancy.invite(:'alpha', 'quinn@evt.test', 'viewer') IS NOT NULL AS invited;
COMMIT;
RESET ROLE;
SELECT idtest.mailed_password('pat@evt.test') AS pat_pw \gset
SELECT substring(body from '(tni_\S+)') AS quinn_inv FROM tenancy.outbox WHERE recipient = 'quinn@evt.test' \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login_sub_user('alpha@evt.test', 'pat@evt.test', :'pat_pw') IS NOT NULL AS pat_login;
SELECT tenancy.change_password(:'pat_pw', 'pat-own-pass-1');
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'alpha_tok') IS NOT NULL AS authenticated;
SELECT tenancy.deactivate_sub_user(:'pat');
SELECT tenancy.delete_sub_user(:'pat');
COMMIT;
RESET ROLE;
-- Accepting happens before any credential: as the application's own login
-- role (not the DBA), its changes are the anonymous caller's.
SET SESSION AUTHORIZATION tenancy_app;
BEGIN;
SELECT tenancy.accept_invitation(:'quinn_inv', 'Quinn', 'quinn-pass-1') IS NOT NULL AS accepted;
COMMIT;
RESET SESSION AUTHORIZATION;
SELECT l.action, l.target, l.actor_kind || CASE WHEN l.actor_kind IN ('dba', 'anonymous') THEN ':' || l.actor_id ELSE '' END AS actor,
       (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(coalesce(l.change -> 'new', l.change -> 'old')) k) AS columns,
       l.change -> 'redacted' AS redacted
FROM tenancy.audit_log l
WHERE l.id > :m AND l.target IN ('tenancy.sub_users', 'tenancy.invitations', 'tenancy.memberships') ORDER BY l.id;
SELECT count(*) AS provisioning_entries_with_secrets FROM tenancy.audit_log l
WHERE l.id > :m AND coalesce(l.change::text, '') || coalesce(l.row_key::text, '')
      ~ ('pat-temp-1|pat-own-pass|quinn-pass|tni_|argon2|' || :'pat_pw');
-- The Alpha owner reads them; a sub-user does not.
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'alpha_tok') IS NOT NULL AS authenticated;
SELECT count(*) FILTER (WHERE target = 'tenancy.sub_users') AS sub_user_changes,
       count(*) FILTER (WHERE target = 'tenancy.invitations') AS invitation_changes
FROM tenancy.audit_log WHERE id > :m;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'sue_tok') IS NOT NULL AS authenticated;
SELECT count(*) AS sub_user_reads FROM tenancy.audit_log WHERE id > :m;
COMMIT;
RESET ROLE;

-- ---- one principal id everywhere ---------------------------------------------------------
-- The log names each actor as whoami() (the gateway's /v1/me) does, so that
-- the gateway's ?actor=<that id> finds the principal's entries: an API key
-- key_<main>_<key>, a sub-user sub_<main>_<sub-user>, a user its numeric id.
UPDATE tenancy.api_key_usage SET last_used_at = NULL;
SELECT idtest.mark() AS m \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'alpha_key') IS NOT NULL AS authenticated;
SELECT tenancy.whoami() -> 'principal' ->> 'id' AS key_who \gset
SELECT tenancy.act_as(:'alpha_sub') = :'alpha_sub' AS key_in_sub;
COMMIT;
BEGIN;
SELECT tenancy.login_sub_user('alpha@evt.test', 'sue@evt.test', :'sue_pw') IS NOT NULL AS sue_login;
SELECT tenancy.whoami() -> 'principal' ->> 'id' AS sue_who \gset
COMMIT;
BEGIN;
SELECT tenancy.login('alpha@evt.test', 'alpha-pass-1') IS NOT NULL AS alpha_login;
SELECT tenancy.whoami() -> 'principal' ->> 'id' AS alpha_who \gset
SELECT tenancy.act_as(:'alpha_sub') = :'alpha_sub' AS user_in_sub;
COMMIT;
RESET ROLE;
SELECT w.kind, regexp_replace(w.who, '[0-9]+', 'N', 'g') AS whoami_id,
       (SELECT string_agg(DISTINCT l.action, ', ') FROM tenancy.audit_log l
        WHERE l.id > :m AND l.actor_kind = w.kind AND l.actor_id = w.who) AS entries_found_by_that_id
FROM (VALUES ('api_key', :'key_who'), ('sub_user', :'sue_who'), ('user', :'alpha_who')) w(kind, who);
