-- Invitations and MFA.
\set VERBOSITY terse
SET client_min_messages = warning;
-- Forget login failures an earlier run left in shared memory (see identity_throttle).
SELECT coalesce(tenancy._throttle_rewind('1 day'), 0) >= 0 AS throttle_reset;
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
CREATE OR REPLACE FUNCTION idtest.mailed_token(who text) RETURNS text LANGUAGE sql AS $$
    SELECT substring(body from '(tni_\S+)') FROM tenancy.outbox
    WHERE recipient = who ORDER BY id DESC LIMIT 1 $$;
REVOKE ALL ON FUNCTION idtest.mailed_token(text) FROM PUBLIC;

SELECT tenancy.create_main_account('Inv', 'owner@idi.test', 'owner-pass-1') AS inv \gset
SELECT tenancy.create_main_account('Else', 'else@idi.test', 'else-pass-1') AS other \gset
SET ROLE tenancy_app;

-- ---- invitations ----
BEGIN;
SELECT tenancy.login('owner@idi.test', 'owner-pass-1') IS NOT NULL;
SELECT tenancy.invite(:'inv', 'adam@idi.test', 'admin') ~ '^inv_[0-9]+_[0-9]+$' AS invited;
SELECT email, role, accepted_at FROM tenancy.invitations;
SELECT idtest.try(format('SELECT tenancy.invite(%L, ''x@idi.test'', ''sub_user'')', :'inv'));
SELECT idtest.try(format('SELECT tenancy.invite(%L, ''x@idi.test'', ''emperor'')', :'inv'));
SELECT idtest.try(format('SELECT tenancy.invite(%L, ''x@idi.test'', ''viewer'')', :'other'));
COMMIT;
RESET ROLE;
SELECT subject, body ~ 'tni_[0-9]+_[0-9]+_[A-Za-z0-9_-]{43}' AS has_token FROM tenancy.outbox
WHERE recipient = 'adam@idi.test';
SELECT idtest.mailed_token('adam@idi.test') AS adam_tok \gset
SELECT token_hash <> convert_to(:'adam_tok', 'UTF8') AS stored_hashed FROM tenancy.invitations
WHERE email = 'adam@idi.test';
SET ROLE tenancy_app;
-- a new user needs a password; accepting returns a session in the account
SELECT idtest.try(format('SELECT tenancy.accept_invitation(%L)', :'adam_tok'));
BEGIN;
SELECT tenancy.accept_invitation(:'adam_tok', 'Adam', 'adam-pass-1') ~ '^tns_' AS session_token;
SELECT tenancy.current_account() = :'inv' AS in_inv, tenancy.current_role_name();
COMMIT;
-- single use
SELECT idtest.try(format('SELECT tenancy.accept_invitation(%L, NULL, %L)', :'adam_tok', 'adam-pass-1'));
-- a forged token
SELECT idtest.try(format('SELECT tenancy.accept_invitation(%L, NULL, %L)',
                         left(:'adam_tok', -3) || 'AAA', 'adam-pass-1'));
SELECT idtest.try('SELECT tenancy.accept_invitation(''garbage'')');
-- the new admin can log in, invite, but not invite an owner
BEGIN;
SELECT tenancy.login('adam@idi.test', 'adam-pass-1') IS NOT NULL, tenancy.current_role_name();
SELECT idtest.try(format('SELECT tenancy.invite(%L, ''olga@idi.test'', ''owner'')', :'inv'));
SELECT tenancy.invite(:'inv', 'mia@idi.test', 'member') IS NOT NULL AS admin_invites_member;
-- nor demote an owner by re-inviting them
SELECT idtest.try(format('SELECT tenancy.invite(%L, ''owner@idi.test'', ''viewer'')', :'inv'));
COMMIT;
-- re-inviting replaces the old token
RESET ROLE;
SELECT idtest.mailed_token('mia@idi.test') AS mia_tok1 \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('owner@idi.test', 'owner-pass-1') IS NOT NULL;
SELECT tenancy.invite(:'inv', 'MIA@idi.test', 'viewer') IS NOT NULL AS reinvited;
SELECT email, role FROM tenancy.invitations WHERE lower(email) = 'mia@idi.test';
COMMIT;
RESET ROLE;
SELECT idtest.mailed_token('MIA@idi.test') AS mia_tok2 \gset
SET ROLE tenancy_app;
SELECT idtest.try(format('SELECT tenancy.accept_invitation(%L, NULL, %L)', :'mia_tok1', 'mia-pass-11'));
-- expired
RESET ROLE;
UPDATE tenancy.invitations SET expires_at = now() - interval '1 second' WHERE lower(email) = 'mia@idi.test';
SET ROLE tenancy_app;
SELECT idtest.try(format('SELECT tenancy.accept_invitation(%L, NULL, %L)', :'mia_tok2', 'mia-pass-11'));
-- an existing user accepts with their own password
BEGIN;
SELECT tenancy.login('else@idi.test', 'else-pass-1') IS NOT NULL;
SELECT tenancy.invite(:'other', 'owner@idi.test', 'support_agent') IS NOT NULL;
COMMIT;
RESET ROLE;
SELECT idtest.mailed_token('owner@idi.test') AS own_tok \gset
SET ROLE tenancy_app;
SELECT idtest.try(format('SELECT tenancy.accept_invitation(%L, NULL, %L)', :'own_tok', 'wrong-pass'));
BEGIN;
SELECT tenancy.accept_invitation(:'own_tok', NULL, 'owner-pass-1') IS NOT NULL,
       tenancy.current_account() = :'other' AS in_other, tenancy.current_role_name();
COMMIT;

-- ---- MFA ----
BEGIN;
SELECT tenancy.login('adam@idi.test', 'adam-pass-1') IS NOT NULL;
SELECT tenancy.enroll_mfa() AS uri \gset
SELECT :'uri' ~ '^otpauth://totp/' AS uri_ok;
SELECT idtest.try('SELECT tenancy.confirm_mfa(''000000x'')');
SELECT substring(:'uri' from 'secret=([A-Z2-7]+)') AS secret \gset
SELECT array_length(tenancy.confirm_mfa(tenancy.totp(:'secret')), 1) AS recovery_codes;
SELECT idtest.try('SELECT tenancy.enroll_mfa()');
COMMIT;
RESET ROLE;
SELECT mfa_enabled, mfa_secret IS NOT NULL AS has_secret FROM tenancy.users WHERE email = 'adam@idi.test';
SELECT count(*) AS stored_codes FROM tenancy.mfa_recovery_codes r JOIN tenancy.users u ON u.id = r.user_id
WHERE u.email = 'adam@idi.test';
SET ROLE tenancy_app;
-- recovery codes are not readable
SELECT idtest.try('SELECT * FROM tenancy.mfa_recovery_codes');

-- login with MFA: the session can act only after verify_mfa
BEGIN;
SELECT tenancy.login('adam@idi.test', 'adam-pass-1') AS mfa_tok \gset
SELECT tenancy.current_role_name(), count(*) AS accounts_visible FROM tenancy.accounts;
SELECT idtest.try(format('SELECT tenancy.act_as(%L)', :'inv'));
SELECT idtest.try(format('SELECT tenancy.invite(%L, ''q@idi.test'', ''viewer'')', :'inv'));
SELECT idtest.try('SELECT tenancy.enroll_mfa()');
SELECT idtest.try('SELECT tenancy.change_password(''adam-pass-1'', ''hijacked-pass-1'')');
COMMIT;
-- the token alone still yields the restricted context
BEGIN;
SELECT tenancy.authenticate(:'mfa_tok') IS NOT NULL, tenancy.current_role_name();
-- a wrong code
SET LOCAL client_min_messages = error;
SELECT tenancy.verify_mfa('123') AS wrong;
-- the code of the next step (within the window, never used)
SELECT tenancy.totp(:'secret', now() + interval '30 seconds') AS next_code \gset
SELECT tenancy.verify_mfa(:'next_code') AS verified;
SELECT tenancy.current_role_name(), count(*) AS accounts_visible FROM tenancy.accounts;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'mfa_tok') IS NOT NULL, tenancy.current_role_name() AS role_after_verify;
COMMIT;
-- the same code again, in another session: refused (used once)
BEGIN;
SELECT tenancy.login('adam@idi.test', 'adam-pass-1') AS mfa_tok2 \gset
SET LOCAL client_min_messages = error;
SELECT tenancy.verify_mfa(:'next_code') AS reused;
SELECT tenancy.current_role_name();
COMMIT;
-- a recovery code works once
RESET ROLE;
-- (the DBA cannot read the codes either: only hashes are stored; make one known for the test)
UPDATE tenancy.mfa_recovery_codes r SET code_hash = tenancy._secret_hash('known-recovery-code')
FROM tenancy.users u WHERE u.id = r.user_id AND u.email = 'adam@idi.test'
  AND r.code_hash = (SELECT x.code_hash FROM tenancy.mfa_recovery_codes x WHERE x.user_id = u.id
                     ORDER BY x.code_hash LIMIT 1);
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'mfa_tok2') IS NOT NULL;
SELECT tenancy.verify_mfa('known-recovery-code') AS recovered, tenancy.current_role_name();
COMMIT;
BEGIN;
SELECT tenancy.login('adam@idi.test', 'adam-pass-1') IS NOT NULL;
SET LOCAL client_min_messages = error;
SELECT tenancy.verify_mfa('known-recovery-code') AS recovery_reused;
COMMIT;
-- five wrong codes end the session
BEGIN;
SELECT tenancy.login('adam@idi.test', 'adam-pass-1') AS mfa_tok3 \gset
COMMIT;
SET client_min_messages = error;
SELECT count(*) FILTER (WHERE NOT ok) AS failures FROM (
    SELECT (SELECT tenancy.authenticate(:'mfa_tok3') IS NOT NULL AND tenancy.verify_mfa('bad-code-' || g)) AS ok
    FROM generate_series(1, 4) g) t;
SET client_min_messages = warning;
BEGIN;
SELECT tenancy.authenticate(:'mfa_tok3') IS NOT NULL;
SET LOCAL client_min_messages = error;
SELECT tenancy.verify_mfa('bad-code-9') AS fifth;
COMMIT;
SELECT idtest.try(format('SELECT tenancy.authenticate(%L)', :'mfa_tok3'));
-- 5 wrong codes within 15 minutes lock the user's second factor, whatever the
-- session: even a right code is refused until the cooling period ends
RESET ROLE;
UPDATE tenancy.users SET mfa_last_step = NULL WHERE email = 'adam@idi.test';
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('adam@idi.test', 'adam-pass-1') AS mfa_tok4 \gset
SET LOCAL client_min_messages = error;
SELECT tenancy.verify_mfa(tenancy.totp(:'secret')) AS right_code_while_locked, tenancy.current_role_name();
COMMIT;
RESET ROLE;
UPDATE tenancy.login_failures SET failed_at = failed_at - interval '16 minutes';
-- and in the shared-memory counter (a rollback does not undo it; see identity_throttle)
SELECT coalesce(tenancy._throttle_rewind('16 minutes'), 0) >= 0 AS shared_counter_rewound;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'mfa_tok4') IS NOT NULL;
SELECT tenancy.verify_mfa(tenancy.totp(:'secret')) AS right_code_after_cooling, tenancy.current_role_name();
COMMIT;
-- sub-users and API keys have no MFA calls
RESET ROLE;
SELECT tenancy.admin_create_api_key(:'inv', 'k') AS key \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'key') IS NOT NULL;
SELECT idtest.try('SELECT tenancy.enroll_mfa()');
SELECT idtest.try('SELECT tenancy.change_password(''a'', ''bbbbbbbbbb'')');
SELECT idtest.try('SELECT tenancy.logout()');
ROLLBACK;
RESET ROLE;
-- housekeeping: ended sessions and spent invitations go, live sessions stay
SELECT count(*) AS live_before FROM tenancy.sessions WHERE revoked_at IS NULL AND expires_at > now() \gset
SELECT tenancy.purge_identity('0 seconds') > 0 AS purged;
SELECT count(*) = :live_before AS live_kept, count(*) FILTER (WHERE revoked_at IS NOT NULL) AS ended_left
FROM tenancy.sessions;
SET ROLE tenancy_app;
SELECT idtest.try('SELECT tenancy.purge_identity()');
RESET ROLE;
